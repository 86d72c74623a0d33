"""MkDocs hooks: links from the docs pages to files of the repository outside ``docs/``.

The pages are read in two places: in the repository, where ``../results/quick/topk/topk_summary.png`` is a file next
to the docs, and on the site, which holds only ``docs/``. So that both work:

* a link or image to a repository *file* (a plot of a committed run, a script) is copied into the site under
  ``repository/`` and the link points at the copy;
* a link to a repository *folder* or to a Markdown file outside ``docs/`` is shown as its text (there is nothing to
  point at on the site);
* a link to something that does not exist is a warning, so ``mkdocs build --strict`` fails on it as on any broken
  link.

Used from ``mkdocs.yml`` (``hooks:``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

# Under "mkdocs." so that strict mode counts its warnings.
log = logging.getLogger("mkdocs.hooks.repository_links")

_LINK = re.compile(r"(!?)\[([^\]]*)\]\((\.\./[^)\s]+)\)")
_SITE_FOLDER = "repository"


def _target(config: Any, page_uri: str, url: str) -> tuple[Path, Path]:
    """The linked path (anchor dropped, resolved) and the repository root."""
    docs = Path(config.docs_dir).resolve()
    return (docs / Path(page_uri).parent / url.partition("#")[0]).resolve(), docs.parent


def _copied(target: Path, repo: Path) -> str | None:
    """The site path of the copy of ``target``, or None when it is not copied (a folder, a Markdown file)."""
    if target.is_file() and target.suffix != ".md" and target.is_relative_to(repo):
        return f"{_SITE_FOLDER}/{target.relative_to(repo).as_posix()}"
    return None


def on_files(files: Files, config: Any) -> Files:
    for page in list(files.documentation_pages()):
        if page.abs_src_path is None:
            continue
        for m in _LINK.finditer(Path(page.abs_src_path).read_text(encoding="utf-8")):
            target, repo = _target(config, page.src_uri, m.group(3))
            uri = _copied(target, repo)
            if uri is not None and files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(target)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    def rewrite(m: re.Match[str]) -> str:
        bang, text, url = m.groups()
        target, repo = _target(config, page.file.src_uri, url)
        if not target.exists() or not target.is_relative_to(repo):
            log.warning(f"Doc file '{page.file.src_uri}' links to '{url}', which is not a file of the repository")
            return m.group(0)
        uri = _copied(target, repo)
        if uri is None:
            return text
        anchor = url.partition("#")[2]
        rel = os.path.relpath(uri, start=os.path.dirname(page.file.src_uri) or ".")
        return f"{bang}[{text}]({rel}{'#' + anchor if anchor else ''})"

    return _LINK.sub(rewrite, markdown)
