"""A griffe extension that reads kexue's docstrings the way Sphinx's napoleon does, for the API reference site.

kexue's docstrings are Google style with habits that napoleon accepts and griffe's Google parser does not:

* an ``Example:`` section (singular), which griffe would render as an admonition of Markdown text, so ``>>>``
  lines became block quotes; it is read as an ``Examples:`` section (doctest code blocks);
* Sphinx roles such as ``:func:`soft_topk``` and ``:class:`Claim```, which are shown as inline code;
* one ``Args`` entry for several parameters that share a description (``query, key: as :func:`info_nce`.``),
  which is expanded to one entry per parameter;
* an entry whose description starts with a comparison (``temperature: > 0.``), which Markdown would render as a
  block quote; the ``>`` is escaped.

The docstrings in ``src/`` are not changed; only what the site renders is. Used from ``mkdocs.yml``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$")
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`[~.]?([^`]+)`")
_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Params|Keyword Args|Other Parameters):\s*$")
_GROUPED = re.compile(r"^(\s+)(\w+(?:\s*,\s*\w+)+)\s*:\s(.*)$")
_QUOTE = re.compile(r"^(\s+\w+:\s+)>(?!>>)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def rewrite(text: str) -> str:
    """Return ``text`` with the napoleon habits above turned into what griffe's Google parser reads."""
    lines = [_QUOTE.sub(r"\1\\>", _EXAMPLE.sub(r"\1Examples:", line)) for line in _ROLE.sub(r"`\1`", text).split("\n")]
    out: list[str] = []
    section_indent: int | None = None  # indent of the current Args-like header, None outside one
    i = 0
    while i < len(lines):
        line = lines[i]
        header = _SECTION.match(line)
        if header:
            section_indent = len(header.group(1))
        elif line.strip() and section_indent is not None and _indent(line) <= section_indent:
            section_indent = None
        grouped = _GROUPED.match(line) if section_indent is not None else None
        if grouped is None or len(grouped.group(1)) != section_indent + 4:
            out.append(line)
            i += 1
            continue
        pad, names, first = grouped.groups()
        j = i + 1  # continuation lines of this entry: blank or indented deeper than the entry
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > len(pad)):
            j += 1
        while j > i + 1 and not lines[j - 1].strip():  # trailing blank lines stay after the last copy
            j -= 1
        for name in (n.strip() for n in names.split(",")):
            out.append(f"{pad}{name}: {first}")
            out.extend(lines[i + 1 : j])
        i = j
    return "\n".join(out)


class NapoleonCompat(griffe.Extension):
    """Rewrite every docstring with :func:`rewrite` once the object tree is built, before it is parsed."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
