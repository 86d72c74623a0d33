"""Reports: the claims, plots and metrics of a set of run folders, as Markdown and as self-contained HTML.

The report reads only what runs wrote (``claims.json``, ``metrics.json``, ``config.json``, ``env.json``, plots,
``error.txt``), so it can be rebuilt at any time with ``kexue report DIR``. ``report.html`` opens with a summary
card per experiment and then one section per experiment; ``report.md`` carries the same content for the terminal
and for diffs.
"""

from __future__ import annotations

from pathlib import Path

from ._html import render_html
from ._markdown import claims_table, render_markdown
from ._runs import ClaimRecord, Run, collect

__all__ = ["ClaimRecord", "Run", "claims_table", "collect", "write_report"]


def write_report(root: str | Path, *, title: str = "kexue reproduction report") -> tuple[Path, Path]:
    """Write ``report.md`` and a self-contained ``report.html`` (plots inlined) into ``root``.

    Args:
        root: a run folder, or a folder of run folders (as ``kexue reproduce`` writes).
        title: the reports' heading.

    Returns:
        the paths of the Markdown and HTML files.
    """
    root = Path(root)
    runs = collect(root)
    md_path = root / "report.md"
    md_path.write_text(render_markdown(runs, root, title=title), encoding="utf-8")
    html_path = root / "report.html"
    html_path.write_text(render_html(runs, root, title=title), encoding="utf-8")
    return md_path, html_path
