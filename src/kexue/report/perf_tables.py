"""The performance tables of the README and the docs pages, generated from the committed benchmark results.

Each script under ``benchmarks/`` writes ``benchmarks/results/<name>.json``: the command, the machine (CPU model,
threads, OpenMP wait policy, torch version, load average), every table (per case the median time per call and the
per-round time ratio to the table's baseline: median, interquartile range, min-max), the targets and a summary.
The numbers in the README and docs sit between marker comments and are rewritten from those files::

    <!-- BEGIN GENERATED perf -->            README: one row per benchmark (headline ratios, targets met)
    <!-- BEGIN GENERATED perf:<name> -->     a docs page's Benchmark section: that benchmark's full tables

Usage (from the repository root)::

    python -m kexue.report.perf_tables            # rewrite the marked sections
    python -m kexue.report.perf_tables --check    # exit 1 and name the files whose sections are stale

``make bench`` reruns every benchmark and then rewrites the tables; a test fails when a committed table and the
committed results disagree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._sections import run_cli, write_sections

__all__ = ["ORDER", "load_results", "render_benchmark", "render_summary", "update"]

# README row order; a results file not listed here comes after these, by name.
ORDER = ("topk", "contrastive", "selfsupervised", "regularizers", "multitask", "tailr", "ign", "ptuning")


def load_results(results: str | Path) -> list[dict[str, Any]]:
    """The benchmark results (``*.json``) under ``results``, in README order.

    Only files in the format ``benchmarks/_timing.py`` writes (``machine`` and ``tables``) are read; a script that
    writes its own format there (``memory.json``) renders its own tables.
    """
    root = Path(results)
    docs = []
    for p in sorted(root.glob("*.json")) if root.is_dir() else []:
        doc = json.loads(p.read_text(encoding="utf-8"))
        if not (isinstance(doc, dict) and isinstance(doc.get("machine"), dict) and isinstance(doc.get("tables"), list)):
            continue
        doc.setdefault("benchmark", p.stem)
        doc["_file"] = p.name
        docs.append(doc)
    rank = {n: i for i, n in enumerate(ORDER)}
    docs.sort(key=lambda d: (rank.get(d["benchmark"], len(ORDER)), d["benchmark"]))
    return docs


def _cell(text: Any) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def _x(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:,.0f}"


def _ratio(r: dict[str, float] | None, *, spread: bool = True) -> str:
    if not r:
        return "—"
    s = f"{_x(r['median'])}×"
    return f"{s} ({_x(r['q1'])}–{_x(r['q3'])})" if spread else s


def _time(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _bytes(n: int | None) -> str:
    if n is None:
        return "—"
    x = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if x < 1024 or unit == "GB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return "—"


def _row(doc: dict[str, Any], table: str, case: str) -> dict[str, Any] | None:
    for t in doc.get("tables", []):
        if t["id"] == table:
            for r in t["rows"]:
                if r["case"] == case:
                    return r
    return None


def _headline(doc: dict[str, Any], h: dict[str, Any]) -> str | None:
    """``label 1.05× (1.01–1.09)`` for one table; ``label 0.8–1.2×`` (the range of the medians) for several."""
    ratios = [r["ratio"] for t in h["tables"] if (r := _row(doc, t, h["case"])) and r.get("ratio")]
    if not ratios:
        return None
    if len(ratios) == 1:
        return f"{h['label']} {_ratio(ratios[0])}"
    meds = [r["median"] for r in ratios]
    lo, hi = min(meds), max(meds)
    return f"{h['label']} {_x(lo)}–{_x(hi)}×" if _x(lo) != _x(hi) else f"{h['label']} {_x(lo)}×"


def _machine(m: dict[str, Any]) -> str:
    return (
        f"{m.get('cpu', '?')}, {m.get('threads', '?')} thread(s) of {m.get('cores', '?')} cores, "
        f"torch {m.get('torch', '?')}, OMP_WAIT_POLICY={m.get('omp_wait_policy', '?')}, {m.get('clock', '?')}"
    )


def _load(m: dict[str, Any]) -> str:
    a, b = m.get("loadavg_start"), m.get("loadavg_end")
    return f"{a[0]:.2f} → {b[0]:.2f}" if a and b else "—"


def _targets(doc: dict[str, Any]) -> tuple[int, int, list[dict[str, Any]]]:
    ts = [t for t in doc.get("targets", []) if t.get("met") is not None]
    return sum(1 for t in ts if t["met"]), len(ts), [t for t in ts if not t["met"]]


def render_summary(docs: Sequence[dict[str, Any]]) -> str:
    """The README's section: one row per benchmark, then the machines and commands."""
    out = [
        "Generated from `benchmarks/results/*.json` by `python -m kexue.report.perf_tables`; do not edit by hand. "
        "Each figure is a case's median time over its baseline's median time, the cases timed in interleaved rounds "
        "(below 1: faster than the baseline); in brackets the interquartile range of the case's per-round times over "
        "that median. A range `a–b×` spans several sizes. Full tables, peak memory and the targets are in each docs "
        "page.",
        "",
        "| technique | what is timed | measured | target | met |",
        "|---|---|---|---|---|",
    ]
    machines: dict[str, list[str]] = {}
    for d in docs:
        s = d.get("summary") or {}
        heads = [x for h in s.get("headlines", []) if (x := _headline(d, h))]
        met, n, missed = _targets(d)
        verdict = f"{met} of {n}" if n else "—"
        if missed:
            verdict += "; not: " + "; ".join(f"{t['text']} ({_ratio(t.get('ratio'), spread=False)})" for t in missed)
        doc_link = f"[{s.get('technique', d['benchmark'])}]({s['doc']})" if s.get("doc") else d["benchmark"]
        out.append(
            "| "
            + " | ".join(
                [
                    doc_link,
                    _cell(s.get("what", "")),
                    _cell("; ".join(heads) or "—"),
                    _cell(s.get("target", "—")),
                    _cell(verdict),
                ]
            )
            + " |"
        )
        m = d.get("machine", {})
        machines.setdefault(_machine(m), []).append(
            f"`{m.get('command', '')}` ({m.get('date', '?')}, load average {_load(m)})"
        )
    out += ["", "Runs:"]
    for machine, runs in machines.items():
        out.append(f"- {machine}: " + "; ".join(runs))
    return "\n".join(out).rstrip() + "\n"


def render_benchmark(doc: dict[str, Any]) -> str:
    """One benchmark's docs section: machine and command, every table, the targets."""
    m = doc.get("machine", {})
    out = [
        f"Generated from `benchmarks/results/{doc.get('_file', doc['benchmark'] + '.json')}` by "
        "`python -m kexue.report.perf_tables`; do not edit by hand.",
        "",
        f"Command: `{m.get('command', '')}`. Machine: {_machine(m)}; load average {_load(m)}; {m.get('date', '?')}"
        + (f"; commit {m['git_commit']}" if m.get("git_commit") else "")
        + ".",
    ]
    peers = doc.get("peers") or {}
    if peers:
        out.append("Peers: " + ", ".join(f"{k} {v}" for k, v in peers.items()) + ".")
    out += [
        "Ratio: the case's median time over the baseline's median time (below 1: faster than the baseline); IQR and "
        "min–max: the case's per-round times over the baseline's median.",
        "",
    ]
    for t in doc.get("tables", []):
        out += [
            f"**{_cell(t['title'])}**",
            "",
            f"| case | time / call | × {_cell(t['baseline'])} | IQR | min–max | rounds | peak mem |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in t["rows"]:
            if r.get("error"):
                out.append(f"| {_cell(r['case'])} | {_cell(r['error'][:80])} | — | — | — | — | — |")
                continue
            q = r.get("ratio")
            cells = (
                [f"{_x(q['median'])}", f"{_x(q['q1'])}–{_x(q['q3'])}", f"{_x(q['min'])}–{_x(q['max'])}"]
                if q
                else ["—", "—", "—"]
            )
            out.append(
                f"| {_cell(r['case'])} | {_time(r.get('median_s'))} | "
                + " | ".join(cells)
                + f" | {r.get('rounds', '—')} | {_bytes(r.get('peak_bytes'))} |"
            )
        if t.get("note"):
            out += ["", _cell(t["note"])]
        out.append("")
    targets = doc.get("targets", [])
    if targets:
        out += ["**Targets**", ""]
        for t in targets:
            verdict = "no reading" if t.get("met") is None else ("met" if t["met"] else "**not met**")
            other = f" (× {t['other']})" if t.get("other") else ""
            out.append(f"- {_cell(t['text'])}: {_ratio(t.get('ratio'))}{other} — {verdict}")
        out.append("")
    for n in doc.get("notes", []):
        out += [_cell(n), ""]
    return "\n".join(out).rstrip() + "\n"


def update(repo: str | Path = ".", results: str | Path = "benchmarks/results", *, check: bool = False) -> list[Path]:
    """Rewrite (or with ``check=True`` only compare) the generated sections; returns the stale files.

    Raises:
        FileNotFoundError: ``results`` holds no results file.
        ValueError: a file lacks its marker section.
    """
    repo = Path(repo)
    docs = load_results(repo / results)
    if not docs:
        raise FileNotFoundError(f"no benchmark results (*.json) under {repo / results}")
    targets: dict[Path, list[tuple[str, str]]] = {repo / "README.md": [("perf", render_summary(docs))]}
    for d in docs:
        page = (d.get("summary") or {}).get("doc")
        if page:
            targets.setdefault(repo / page, []).append((f"perf:{d['benchmark']}", render_benchmark(d)))
    return write_sections(targets, check=check)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(
        argv,
        prog="python -m kexue.report.perf_tables",
        description=__doc__.splitlines()[0],
        default_results="benchmarks/results",
        update=update,
    )


if __name__ == "__main__":
    raise SystemExit(main())
