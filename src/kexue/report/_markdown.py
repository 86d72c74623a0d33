"""The Markdown report (for the terminal and for diffs): summary first, then every claim one line each."""

from __future__ import annotations

from pathlib import Path

from ._metrics import metric_tables
from ._runs import VERDICT_ORDER, Run

__all__ = ["claims_table", "render_markdown"]

SMOKE_NOTE_MD = (
    "> **Preset `smoke`: pipeline check, not evidence.** Smoke runs train for seconds on a sliver of the data to show "
    "that the code runs end to end; their verdicts say nothing about the articles. Run `make reproduce` (preset "
    "`quick`) for evidence."
)


def _cell(s: object) -> str:
    return str(s).replace("|", "/").replace("\n", " ")


def claims_table(runs: list[Run]) -> str:
    """Every claim of ``runs`` as one Markdown table, one row per claim (failed runs as one ``error`` row).

    Columns: experiment, claim, verdict, evidence; then kind, seeds, MDE and test, each only when some claim
    records it (so tables of older run folders keep their four columns). A check's verdict reads passed/failed.
    """
    claims = [c for r in runs for c in r.claims]
    show_kind = any(c.kind == "check" for c in claims)
    show_seeds = any(c.seeds is not None for c in claims)
    show_mde = any(c.mde is not None for c in claims)
    show_test = any(c.test for c in claims)
    head = ["experiment", "claim", "verdict", "evidence"]
    head += ["kind"] * show_kind + ["seeds"] * show_seeds + ["MDE"] * show_mde + ["test"] * show_test
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        if r.error is not None:
            last = r.error.strip().splitlines()[-1] if r.error.strip() else "error"
            extra = [""] * (len(head) - 4)
            lines.append("| " + " | ".join([r.name, "-", "**error**", _cell(last), *extra]) + " |")
            continue
        for c in r.claims:
            row = [r.name, c.id, f"**{c.label}**", _cell(c.evidence)]
            if show_kind:
                row.append(c.kind)
            if show_seeds:
                row.append("—" if c.seeds is None else str(c.seeds))
            if show_mde:
                row.append("—" if c.mde is None else f"{c.mde:.3g}")
            if show_test:
                row.append(_cell(c.test or "—"))
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _summary_table(runs: list[Run]) -> str:
    lines = [
        "| experiment | article | preset | checks passed | " + " | ".join(VERDICT_ORDER) + " |",
        "|---|---|---|---|" + "---|" * len(VERDICT_ORDER),
    ]
    tot_checks = tot_passed = 0
    totals = dict.fromkeys(VERDICT_ORDER, 0)
    for r in runs:
        link = f"[{r.name}](#{r.anchor})"
        if r.error is not None:
            lines.append(f"| {link} | {r.article} | {r.preset or '?'} | **run failed** |" + " |" * len(VERDICT_ORDER))
            continue
        checks = r.checks
        passed = sum(c.verdict == "reproduced" for c in checks)
        tot_checks += len(checks)
        tot_passed += passed
        counts = r.counts("claim")
        for v in VERDICT_ORDER:
            totals[v] += counts[v]
        chk = f"{passed}/{len(checks)}" if checks else "—"
        cells = " | ".join(str(counts[v]) for v in VERDICT_ORDER)
        lines.append(f"| {link} | {r.article} | {r.preset or '?'} | {chk} | {cells} |")
    if len(runs) > 1:
        chk = f"{tot_passed}/{tot_checks}" if tot_checks else "—"
        lines.append(f"| **all** | | | {chk} | " + " | ".join(str(totals[v]) for v in VERDICT_ORDER) + " |")
    return "\n".join(lines)


def _metrics_md(run: Run) -> list[str]:
    t = metric_tables(run.metrics)
    out: list[str] = []
    if t.pairs:
        out += ["| metric | value |", "|---|---|", *(f"| {_cell(k)} | {_cell(v)} |" for k, v in t.pairs), ""]
    for m in t.matrices:
        out += [
            f"| {_cell(m.caption) or ' '} | " + " | ".join(_cell(c) for c in m.columns) + " |",
            "|---|" + "---|" * len(m.columns),
            *(f"| {_cell(r)} | " + " | ".join(_cell(v) for v in vals) + " |" for r, vals in m.rows),
            "",
        ]
    if t.omitted:
        out += [f"{t.omitted} more values in `metrics.json`.", ""]
    return out


def render_markdown(runs: list[Run], root: Path, *, title: str) -> str:
    """The report as Markdown: summary table, smoke caveat, every claim, then per-experiment plots and metrics."""
    md = [f"# {title}", ""]
    if any(r.smoke for r in runs):
        md += [SMOKE_NOTE_MD, ""]
    md += [
        "Verdicts: *reproduced* agrees with the article, *not reproduced* contradicts it, *inconclusive* / "
        "*not testable* says neither. Checks (deterministic properties) read *passed* / *failed*.",
        "",
        "## Summary",
        "",
        _summary_table(runs) if runs else "No run folders found.",
        "",
        "## Claims",
        "",
        claims_table(runs),
        "",
    ]
    for r in runs:
        md += [f'<a id="{r.anchor}"></a>', "", f"## {r.title}", ""]
        meta = [f"experiment `{r.name}`", f"preset `{r.preset or '?'}`"]
        if r.article:
            meta.insert(0, f"Article: {r.article}")
        md += [" · ".join(meta), ""]
        if r.smoke:
            md += ["> smoke preset: pipeline check, not evidence.", ""]
        if r.error is not None:
            md += ["```", r.error.strip()[-2000:], "```", ""]
        for p in r.existing_plots():
            try:
                rel = (r.dir / p).relative_to(root).as_posix()
            except ValueError:
                rel = p
            md += [f"![{p}]({rel})", ""]
        md += _metrics_md(r)
    return "\n".join(md).rstrip() + "\n"
