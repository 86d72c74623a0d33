"""Generated sections of Markdown files: the marker comments, the rewrite, and the ``--check`` command line.

Shared by :mod:`kexue.report.docs_tables` (claims tables from committed run folders) and
:mod:`kexue.report.perf_tables` (performance tables from committed benchmark results). A section is the text
between ``<!-- BEGIN GENERATED <tag> -->`` and ``<!-- END GENERATED <tag> -->``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["replace_section", "run_cli", "write_sections"]


def replace_section(text: str, tag: str, body: str, path: Path) -> str:
    """``text`` with the body of its ``tag`` section replaced by ``body``.

    Raises:
        ValueError: ``text`` (the contents of ``path``) has no such section.
    """
    begin, end = f"<!-- BEGIN GENERATED {tag} -->", f"<!-- END GENERATED {tag} -->"
    i = text.find(begin)
    j = text.find(end, i + len(begin)) if i >= 0 else -1
    if i < 0 or j < 0:
        raise ValueError(f"{path}: no '{begin}' ... '{end}' section")
    return text[: i + len(begin)] + "\n" + body + text[j:]


def write_sections(targets: Mapping[Path, Sequence[tuple[str, str]]], *, check: bool) -> list[Path]:
    """Rewrite every ``(tag, body)`` section of every file (or only compare, with ``check=True``).

    Returns:
        The files whose sections were stale (rewritten unless ``check``).
    """
    stale: list[Path] = []
    for path, sections in targets.items():
        old = path.read_text(encoding="utf-8")
        new = old
        for tag, body in sections:
            new = replace_section(new, tag, body, path)
        if new != old:
            stale.append(path)
            if not check:
                path.write_text(new, encoding="utf-8")
    return stale


def run_cli(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    default_results: str,
    update: Callable[..., list[Path]],
) -> int:
    """The command line of a table generator: ``[--results DIR] [--repo DIR] [--check]``; 1 when stale in check
    mode, 2 on missing results or markers."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--results", default=default_results, help=f"results folder (default {default_results})")
    parser.add_argument("--repo", default=".", help="repository root (default: the current folder)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a section is stale")
    args = parser.parse_args(argv)
    try:
        stale = update(args.repo, args.results, check=args.check)
    except (FileNotFoundError, ValueError) as e:
        print(f"kexue: error: {e}", file=sys.stderr)
        return 2
    for p in stale:
        print(f"{'stale' if args.check else 'updated'}: {p}")
    return 1 if (args.check and stale) else 0
