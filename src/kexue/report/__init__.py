"""Reports: the claims table, metrics and plots of a set of run folders, as Markdown and self-contained HTML.

The report reads only the JSON and PNG files that runs wrote (``claims.json``, ``metrics.json``, ``*.png``), so it
can be rebuilt at any time with ``kexue report DIR``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["claims_table", "collect", "write_report"]

_COLORS = {
    "reproduced": "#1a7f37",
    "not reproduced": "#cf222e",
    "inconclusive": "#9a6700",
    "error": "#6e7781",
}


def collect(root: str | Path) -> list[dict[str, Any]]:
    """Every run folder under ``root`` (itself included) that has a ``claims.json`` or an ``error.txt``."""
    root = Path(root)
    runs: list[dict[str, Any]] = []
    dirs = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
    for d in dirs:
        cj, err = d / "claims.json", d / "error.txt"
        if cj.is_file():
            run = json.loads(cj.read_text(encoding="utf-8"))
            mj = d / "metrics.json"
            run["metrics"] = json.loads(mj.read_text(encoding="utf-8")) if mj.is_file() else {}
            run["dir"] = d
            runs.append(run)
        elif err.is_file():
            runs.append(
                {
                    "experiment": d.name,
                    "title": d.name,
                    "error": err.read_text(encoding="utf-8"),
                    "claims": [],
                    "plots": [],
                    "metrics": {},
                    "dir": d,
                }
            )
    return runs


def _rows(runs: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    rows = []
    for r in runs:
        if "error" in r:
            last = r["error"].strip().splitlines()[-1] if r["error"].strip() else "error"
            rows.append((r["experiment"], "-", "error", last))
        for c in r["claims"]:
            rows.append((r["experiment"], c["id"], c["verdict"], c["evidence"]))
    return rows


def claims_table(runs: list[dict[str, Any]]) -> str:
    """The claims of ``runs`` as a Markdown table (experiment, claim, verdict, evidence)."""
    lines = ["| experiment | claim | verdict | evidence |", "|---|---|---|---|"]
    for exp, cid, verdict, evidence in _rows(runs):
        lines.append(f"| {exp} | {cid} | **{verdict}** | {evidence.replace('|', '/')} |")
    return "\n".join(lines)


def _summary(runs: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for _, _, v, _ in _rows(runs):
        counts[v] = counts.get(v, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "no claims"


def _flat_metrics(metrics: dict[str, Any], prefix: str = "", limit: int = 60) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flat_metrics(v, key + ".", limit)
        elif isinstance(v, (bool, int, str)):
            out.append((key, str(v)))
        elif isinstance(v, float):
            out.append((key, f"{v:.4g}" if math.isfinite(v) else str(v)))
        if len(out) >= limit:
            break
    return out[:limit]


def write_report(root: str | Path, *, title: str = "kexue reproduction report") -> tuple[Path, Path]:
    """Write ``report.md`` and a self-contained ``report.html`` (plots inlined) into ``root``.

    Returns:
        the paths of the Markdown and HTML files.
    """
    root = Path(root)
    runs = collect(root)
    md = [f"# {title}", "", f"Claims: {_summary(runs)}.", "", claims_table(runs), ""]
    for r in runs:
        md += [f"## {r.get('title', r['experiment'])}", ""]
        if r.get("article"):
            md += [f"Article: {r['article']} · preset `{r.get('preset', '?')}`", ""]
        if "error" in r:
            md += ["```", r["error"].strip()[-2000:], "```", ""]
        for c in r["claims"]:
            md += [f"- **{c['verdict']}** `{c['id']}`: {c['statement']} — {c['evidence']}"]
        md.append("")
        for p in r.get("plots", []):
            md += [f"![{p}]({Path(r['dir']).relative_to(root) / p})", ""]
    md_path = root / "report.md"
    md_path.write_text("\n".join(md), encoding="utf-8")

    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>",
        "body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#1f2328}",
        "table{border-collapse:collapse;width:100%;margin:1em 0}td,th{border:1px solid #d0d7de;padding:4px 8px;"
        "vertical-align:top;text-align:left;font-size:14px}th{background:#f6f8fa}",
        ".v{font-weight:600;white-space:nowrap}img{max-width:100%;border:1px solid #d0d7de;margin:6px 0}",
        "pre{background:#f6f8fa;padding:8px;overflow:auto}details{margin:.5em 0}",
        "</style></head><body>",
        f"<h1>{e(title)}</h1><p>Claims: {e(_summary(runs))}.</p>",
        "<table><tr><th>experiment</th><th>claim</th><th>verdict</th><th>evidence</th></tr>",
    ]
    for exp, cid, verdict, evidence in _rows(runs):
        color = _COLORS.get(verdict, "#000")
        parts.append(
            f"<tr><td>{e(exp)}</td><td>{e(cid)}</td><td class='v' style='color:{color}'>{e(verdict)}</td>"
            f"<td>{e(evidence)}</td></tr>"
        )
    parts.append("</table>")
    for r in runs:
        parts.append(f"<h2>{e(r.get('title', r['experiment']))}</h2>")
        if r.get("article"):
            url = e(r["article"])
            parts.append(f"<p>Article: <a href='{url}'>{url}</a> · preset <code>{e(r.get('preset', '?'))}</code></p>")
        if "error" in r:
            parts.append(f"<pre>{e(r['error'].strip()[-4000:])}</pre>")
        if r["claims"]:
            parts.append("<ul>")
            for c in r["claims"]:
                color = _COLORS.get(c["verdict"], "#000")
                parts.append(
                    f"<li><span class='v' style='color:{color}'>{e(c['verdict'])}</span> <code>{e(c['id'])}</code>: "
                    f"{e(c['statement'])}<br><small>{e(c['source'])}</small><br>{e(c['evidence'])}</li>"
                )
            parts.append("</ul>")
        for p in r.get("plots", []):
            f = Path(r["dir"]) / p
            if f.is_file():
                b64 = base64.b64encode(f.read_bytes()).decode()
                parts.append(f"<img alt='{e(p)}' src='data:image/png;base64,{b64}'>")
        flat = _flat_metrics(r.get("metrics", {}))
        if flat:
            parts.append("<details><summary>metrics</summary><table>")
            parts += [f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in flat]
            parts.append("</table></details>")
    parts.append("</body></html>")
    html_path = root / "report.html"
    html_path.write_text("\n".join(parts), encoding="utf-8")
    return md_path, html_path
