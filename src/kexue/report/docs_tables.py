"""The claims tables of the README and the docs pages, generated from the committed results.

Numbers in the README and the docs are never typed by hand: they sit between marker comments and are rewritten
from the run folders under ``results/<preset>/<experiment>/`` (the ``claims.json`` each run wrote)::

    <!-- BEGIN GENERATED claims -->            README: the summary counts and every experiment's claims
    <!-- BEGIN GENERATED claims:<experiment> -->   a docs page: that experiment's claims

Usage (from the repository root)::

    python -m kexue.report.docs_tables            # rewrite the marked sections
    python -m kexue.report.docs_tables --check    # exit 1 and name the files whose sections are stale

``make reproduce`` reruns every experiment's quick preset into ``results/quick`` and then rewrites the tables; a test
fails when a committed table and the committed results disagree.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DOCS_PAGES", "load_results", "render_experiment", "render_summary", "update"]

# Experiment -> the docs page that shows its claims (mnist_baseline appears in the README only).
DOCS_PAGES: dict[str, str] = {
    "regularizers": "docs/regularizers.md",
    "simsiam": "docs/simsiam.md",
    "ptuning": "docs/ptuning.md",
    "flatnce": "docs/flatnce.md",
    "multitask": "docs/multitask.md",
    "tailr": "docs/tailr.md",
    "ign": "docs/ign.md",
    "topk": "docs/topk.md",
}

_EMPIRICAL = ("reproduced", "not reproduced", "inconclusive", "not testable")


def load_results(results: str | Path) -> list[dict[str, Any]]:
    """The runs under ``results`` (one sub-folder per experiment with a ``claims.json``), in report order.

    Each run is the parsed ``claims.json`` plus ``config`` (from ``config.json`` when present).
    """
    root = Path(results)
    runs: list[dict[str, Any]] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        cj = d / "claims.json"
        if not cj.is_file():
            continue
        run = json.loads(cj.read_text(encoding="utf-8"))
        run.setdefault("experiment", d.name)
        cfg = d / "config.json"
        run["config"] = json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() else {}
        runs.append(run)
    order = _order()
    runs.sort(key=lambda r: (order.get(r["experiment"], 100), r["experiment"]))
    return runs


def _order() -> dict[str, int]:
    try:
        from kexue import experiments

        return {name: i for i, name in enumerate(experiments.available())}
    except Exception:  # the tables must render even where an experiment module fails to import
        return {}


def _cell(text: Any) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def _mde(c: dict[str, Any]) -> str:
    v = c.get("mde")
    if v is None or c.get("kind", "claim") == "check":
        return "—"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _cell(v)
    return "∞" if math.isinf(f) else f"{f:.3g}"


def _counts(claims: Sequence[dict[str, Any]]) -> tuple[int, int, dict[str, int]]:
    checks = [c for c in claims if c.get("kind", "claim") == "check"]
    passed = sum(1 for c in checks if c["verdict"] == "reproduced")
    emp: dict[str, int] = dict.fromkeys(_EMPIRICAL, 0)
    for c in claims:
        if c.get("kind", "claim") != "check":
            emp[c["verdict"]] = emp.get(c["verdict"], 0) + 1
    return passed, len(checks), emp


def _claim_rows(claims: Sequence[dict[str, Any]], *, experiment: str | None) -> list[str]:
    head = "| experiment | claim | verdict | seeds | test | MDE | evidence |" if experiment else ""
    lines = [head or "| claim | verdict | seeds | test | MDE | evidence |"]
    lines.append("|---" * (7 if experiment else 6) + "|")
    for c in claims:
        seeds = c.get("seeds")
        cells = [
            f"`{c['id']}`",
            f"**{c['verdict']}**",
            "—" if seeds is None else str(seeds),
            _cell(c.get("test") or "—"),
            _mde(c),
            _cell(c.get("evidence", "")),
        ]
        if experiment:
            cells.insert(0, experiment)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _split(claims: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    emp = [c for c in claims if c.get("kind", "claim") != "check"]
    checks = [c for c in claims if c.get("kind", "claim") == "check"]
    return emp, checks


def _preset(run: dict[str, Any]) -> str:
    return str(run.get("preset") or run.get("config", {}).get("preset") or "quick")


def render_experiment(run: dict[str, Any]) -> str:
    """One experiment's claims for its docs page: empirical claims first, then the checks."""
    emp, checks = _split(run.get("claims", []))
    passed, n_checks, counts = _counts(run.get("claims", []))
    out = [
        f"Generated from `results/{_preset(run)}/{run['experiment']}/claims.json` by "
        "`python -m kexue.report.docs_tables`; do not edit by hand.",
        "",
        "Empirical claims: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + f". Checks: {passed} of "
        f"{n_checks} pass.",
        "",
    ]
    if emp:
        out += ["**Empirical claims** (decided by a statistical test over seeds; MDE = minimum detectable effect)", ""]
        out += [*_claim_rows(emp, experiment=None), ""]
    if checks:
        out += ["**Checks** (deterministic properties verified numerically)", ""]
        out += [*_claim_rows(checks, experiment=None), ""]
    return "\n".join(out).rstrip() + "\n"


def render_summary(runs: Sequence[dict[str, Any]]) -> str:
    """The README's section: counts per experiment (checks and claims apart), then every claim."""
    all_claims = [c for r in runs for c in r.get("claims", [])]
    passed, n_checks, counts = _counts(all_claims)
    presets = sorted({_preset(r) for r in runs}) or ["quick"]
    out = [
        f"Generated from `results/{'|'.join(presets)}/*/claims.json` by `python -m kexue.report.docs_tables`; "
        "do not edit by hand.",
        "",
        f"**Empirical claims** (about training, decided by a statistical test): {counts['reproduced']} reproduced, "
        f"{counts['not reproduced']} not reproduced, {counts['inconclusive']} inconclusive, "
        f"{counts['not testable']} not testable. **Checks** (deterministic properties verified numerically): "
        f"{passed} of {n_checks} pass.",
        "",
        "| experiment | claims reproduced | not reproduced | inconclusive | not testable | checks passed |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        p, n, c = _counts(r.get("claims", []))
        out.append(
            f"| {r['experiment']} | {c['reproduced']} | {c['not reproduced']} | {c['inconclusive']} | "
            f"{c['not testable']} | {p} / {n} |"
        )
    emp = [(r["experiment"], c) for r in runs for c in _split(r.get("claims", []))[0]]
    checks = [(r["experiment"], c) for r in runs for c in _split(r.get("claims", []))[1]]
    for title, rows in (("Empirical claims", emp), ("Checks", checks)):
        if not rows:
            continue
        out += ["", f"**{title}**", "", "| experiment | claim | verdict | seeds | test | MDE | evidence |"]
        out.append("|---|---|---|---|---|---|---|")
        for exp, c in rows:
            out.append(_claim_rows([c], experiment=exp)[2])
    return "\n".join(out).rstrip() + "\n"


def _replace(text: str, tag: str, body: str, path: Path) -> str:
    begin, end = f"<!-- BEGIN GENERATED {tag} -->", f"<!-- END GENERATED {tag} -->"
    pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path}: no '{begin}' ... '{end}' section")
    return pattern.sub(lambda _: f"{begin}\n{body}{end}", text, count=1)


def update(repo: str | Path = ".", results: str | Path = "results/quick", *, check: bool = False) -> list[Path]:
    """Rewrite (or with ``check=True`` only compare) the generated sections; returns the stale files.

    Raises:
        FileNotFoundError: ``results`` holds no run folder.
        ValueError: a file lacks its marker section.
    """
    repo = Path(repo)
    runs = load_results(repo / results)
    if not runs:
        raise FileNotFoundError(f"no run folders with claims.json under {repo / results}")
    targets: dict[Path, list[tuple[str, str]]] = {repo / "README.md": [("claims", render_summary(runs))]}
    for run in runs:
        page = DOCS_PAGES.get(run["experiment"])
        if page:
            targets.setdefault(repo / page, []).append((f"claims:{run['experiment']}", render_experiment(run)))
    stale: list[Path] = []
    for path, sections in targets.items():
        old = path.read_text(encoding="utf-8")
        new = old
        for tag, body in sections:
            new = _replace(new, tag, body, path)
        if new != old:
            stale.append(path)
            if not check:
                path.write_text(new, encoding="utf-8")
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kexue.report.docs_tables", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/quick", help="folder of run folders (default results/quick)")
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


if __name__ == "__main__":
    raise SystemExit(main())
