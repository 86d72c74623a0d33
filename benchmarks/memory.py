"""Peak memory and time of the memory-lean losses against their dense paths, each case in a fresh process.

Parts (``--part``):

* ``lm`` (default): forward + backward of a language-model loss from hidden states at (N, V, H) = (8192, 65536,
  1024), float32: ``F.cross_entropy(hidden @ W.T, y)`` (the baseline) against ``chunked_cross_entropy`` and
  ``chunked_tailr_loss`` (γ = 1e-7, b = 0.2, the paper's language-model setting). Target: peak ≤ 25 % and time
  ≤ 1.3× of the baseline.
* ``contrastive``: InfoNCE / FlatNCE at (B, D) = (8192, 128), float32: dense ``info_nce``/``flat_nce`` against the
  tiled ones.
* ``huge``: the tiled losses at B = 65,536, D = 128, float32, run once each. The dense path is not run: its
  (B, B) score matrix alone is 16 GiB, and autograd keeps it (or its softmax) and allocates its gradient.

Each case runs in its own fresh interpreter (``python benchmarks/memory.py --worker ...``): inputs are allocated,
one untimed warm-up forward + backward runs (``contrastive`` only), the gradients are freed, the peak
resident set (``VmHWM``) is reset to the current one through ``/proc/self/clear_refs``, then one forward +
backward is timed, in wall time and in CPU time (``getrusage``: user + system of all threads, the steadier measure
on a shared machine). Peak = ``VmHWM`` after it minus ``VmRSS`` before it (inputs and parameters excluded, their
gradients included). Cases alternate within each round, so a slow spell of the machine hits every case; ratios
to the baseline are taken per round and printed as median [min, max] over rounds. Thread count
(``torch.set_num_threads``) and ``OMP_WAIT_POLICY=PASSIVE`` are set explicitly for every worker.

    PYTHONPATH=src python benchmarks/memory.py [--part lm|contrastive|huge] [--rounds 3] [--threads 2]
    PYTHONPATH=src python benchmarks/memory.py --table [--docs]   # print (and write into docs/scale.md) the tables

Results are merged into ``benchmarks/results/memory.json`` (one entry per part).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "memory.json"
DOCS = ROOT.parent / "docs" / "scale.md"
_START, _END = "<!-- memory:start -->", "<!-- memory:end -->"

LM = {"n": 8192, "v": 65536, "h": 1024}
CONTRASTIVE = {"b": 8192, "d": 128}
HUGE = {"b": 65536, "d": 128}

PARTS: dict[str, dict[str, Any]] = {
    "lm": {
        "title": "LM loss from hidden states, (N, V, H) = (8192, 65536, 1024), float32, forward + backward",
        "baseline": {
            "chunked_cross_entropy": "F.cross_entropy(hidden @ W.T)",
            "chunked_tailr_loss γ=1e-7 b=0.2": "F.cross_entropy(hidden @ W.T)",
        },
        "cases": ["F.cross_entropy(hidden @ W.T)", "chunked_cross_entropy", "chunked_tailr_loss γ=1e-7 b=0.2"],
        "size": LM,
        "warmup": 0,  # one forward + backward takes minutes: one-time start-up costs are noise
    },
    "contrastive": {
        "title": "InfoNCE / FlatNCE, (B, D) = (8192, 128), float32, forward + backward",
        "baseline": {"tiled_info_nce": "info_nce (dense)", "tiled_flat_nce": "flat_nce (dense)"},
        "cases": ["info_nce (dense)", "tiled_info_nce", "flat_nce (dense)", "tiled_flat_nce"],
        "size": CONTRASTIVE,
        "warmup": 1,
    },
    "huge": {
        "title": "Tiled InfoNCE / FlatNCE, (B, D) = (65536, 128), float32, forward + backward, run once",
        "baseline": {},
        "cases": ["tiled_info_nce", "tiled_flat_nce"],
        "size": HUGE,
        "warmup": 0,
    },
}


# --------------------------------------------------------------------------------------------- worker


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _worker(part: str, case: str, threads: int, tile: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from kexue.losses import (
        chunked_cross_entropy,
        chunked_tailr_loss,
        flat_nce,
        info_nce,
        tiled_flat_nce,
        tiled_info_nce,
    )

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    if part == "lm":
        n, v, h = LM["n"], LM["v"], LM["h"]
        hidden = torch.randn(n, h, generator=g).requires_grad_()
        weight = (torch.randn(v, h, generator=g) / h**0.5).requires_grad_()
        target = torch.randint(0, v, (n,), generator=g)
        leaves = [hidden, weight]
        fns = {
            "F.cross_entropy(hidden @ W.T)": lambda: F.cross_entropy(hidden @ weight.T, target),
            "chunked_cross_entropy": lambda: chunked_cross_entropy(hidden, weight, target, chunk_size=tile),
            "chunked_tailr_loss γ=1e-7 b=0.2": lambda: chunked_tailr_loss(
                hidden, weight, target, gamma=1e-7, min_weight=0.2, chunk_size=tile
            ),
        }
    else:
        size = CONTRASTIVE if part == "contrastive" else HUGE
        q = torch.randn(size["b"], size["d"], generator=g)
        k = (q + 0.5 * torch.randn(size["b"], size["d"], generator=g)).requires_grad_()
        q.requires_grad_()
        leaves = [q, k]
        fns = {
            "info_nce (dense)": lambda: info_nce(q, k),
            "flat_nce (dense)": lambda: flat_nce(q, k),
            "tiled_info_nce": lambda: tiled_info_nce(q, k, tile_size=tile),
            "tiled_flat_nce": lambda: tiled_flat_nce(q, k, tile_size=tile),
        }
    fn = fns[case]

    def step() -> float:
        loss = fn()
        loss.backward()
        return float(loss.detach())

    for _ in range(PARTS[part]["warmup"]):
        step()
    for x in leaves:
        x.grad = None
    gc.collect()
    base_kb = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    value = step()
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)  # every thread of this process
    peak_kb = _status_kb("VmHWM") - base_kb
    return {
        "case": case,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_bytes": peak_kb * 1024,
        "base_bytes": base_kb * 1024,
        "loss": value,
    }


# --------------------------------------------------------------------------------------------- driver


def _run_case(part: str, case: str, threads: int, tile: int) -> dict[str, Any]:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--worker", case, "--part", part, "--threads", str(threads), "--tile", str(tile)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"case": case, "error": (proc.stderr.strip().splitlines() or ["?"])[-1], "rc": proc.returncode}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _summary(rounds: list[list[dict[str, Any]]], baseline: dict[str, str]) -> list[dict[str, Any]]:
    """Per case: medians, and the per-round ratios to its dense reference (median, min, max over rounds)."""
    cases = [r["case"] for r in rounds[0]]
    rows = []
    for i, case in enumerate(cases):
        runs = [rnd[i] for rnd in rounds]
        ok = [r for r in runs if "error" not in r]
        row: dict[str, Any] = {"case": case, "runs": len(runs), "failed": len(runs) - len(ok)}
        if ok:
            row["seconds_median"] = statistics.median(r["seconds"] for r in ok)
            row["cpu_seconds_median"] = statistics.median(r["cpu_seconds"] for r in ok)
            row["peak_bytes_median"] = statistics.median(r["peak_bytes"] for r in ok)
        ref = baseline.get(case)
        if ref is not None:
            row["reference"] = ref
            j = cases.index(ref)
            pairs = [(rnd[i], rnd[j]) for rnd in rounds if "error" not in rnd[i] and "error" not in rnd[j]]
            if pairs:
                for key, field in (
                    ("memory_ratio", "peak_bytes"),
                    ("cpu_ratio", "cpu_seconds"),
                    ("time_ratio", "seconds"),
                ):
                    vals = [a[field] / b[field] for a, b in pairs]
                    row[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
        rows.append(row)
    return rows


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _ratio(r: dict[str, float] | None) -> str:
    return "-" if r is None else f"{r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}]"


def markdown(part: str, entry: dict[str, Any]) -> str:
    """The part's table: peak memory and time per case, and ratios to the dense reference of that case."""
    head = f"**{entry['title']}** — {entry['machine']}, {entry['threads']} threads, {entry['rounds']} round(s)"
    lines = [head, ""]
    if entry["baseline"]:
        lines += [
            "| case | peak memory | CPU time | wall time | vs | memory ratio | CPU-time ratio | wall-time ratio |",
            "|---|---:|---:|---:|---|---:|---:|---:|",
        ]
    else:
        lines += ["| case | peak memory | CPU time | wall time |", "|---|---:|---:|---:|"]
    for row in entry["rows"]:
        if "seconds_median" not in row:
            lines.append(f"| {row['case']} | failed | | | | | | |")
            continue
        peak, secs = _gib(row["peak_bytes_median"]), f"{row['seconds_median']:.1f} s"
        cpu = f"{row['cpu_seconds_median']:.1f} s"
        if entry["baseline"]:
            ref = row.get("reference", "")
            ratios = " | ".join(_ratio(row.get(k)) for k in ("memory_ratio", "cpu_ratio", "time_ratio"))
            lines.append(f"| {row['case']} | {peak} | {cpu} | {secs} | {ref} | {ratios} |")
        else:
            lines.append(f"| {row['case']} | {peak} | {cpu} | {secs} |")
    if entry["baseline"]:
        lines += [
            "",
            "Ratios: median [min, max] over rounds of (case / reference), both measured in the same round. CPU time "
            "(user + system, all threads) is the steadier measure on a shared machine; wall time moves with the load.",
        ]
    return "\n".join(lines)


def _dense_estimate(contrastive: dict[str, Any]) -> str:
    """What the dense path would need at the huge size, scaled from its measured peak at the contrastive size."""
    b_small, b_huge = contrastive["size"]["b"], HUGE["b"]
    matrix = b_huge**2 * 4  # one (B, B) float32 score matrix
    lines = [f"Dense path at B = {b_huge:,} (not run): one (B, B) float32 score matrix is {_gib(matrix)}."]
    for row in contrastive["rows"]:
        if "dense" in row["case"] and "peak_bytes_median" in row:
            k = row["peak_bytes_median"] / (b_small**2 * 4)
            lines.append(
                f"`{row['case'].split()[0]}` peaked at {k:.1f}× its score matrix at B = {b_small:,}; "
                f"by the same count it needs {_gib(k * matrix)} at B = {b_huge:,}."
            )
    return " ".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=sorted(PARTS), default="lm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, default=1024, help="chunk_size / tile_size of the lean losses")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--table", action="store_true", help="print the tables of the committed results and exit")
    ap.add_argument("--docs", action="store_true", help="with --table: write the tables into docs/scale.md")
    ap.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/memory.json")
    args = ap.parse_args()

    if args.worker:
        print(json.dumps(_worker(args.part, args.worker, args.threads, args.tile)))
        return
    if args.table:
        results = json.loads(RESULTS.read_text(encoding="utf-8"))
        tables = "\n\n".join(markdown(part, results[part]) for part in PARTS if part in results)
        if "huge" in results and "contrastive" in results:
            tables += "\n\n" + _dense_estimate(results["contrastive"])
        print(tables)
        if args.docs:  # the docs' tables come from the committed results, never typed by hand
            text = DOCS.read_text(encoding="utf-8")
            start, end = text.index(_START) + len(_START), text.index(_END)
            DOCS.write_text(text[:start] + "\n" + tables + "\n" + text[end:], encoding="utf-8")
            print(f"\nwrote the tables into {DOCS.relative_to(ROOT.parent)}")
        return

    spec = PARTS[args.part]
    rounds = []
    n_rounds = 1 if args.part == "huge" else args.rounds
    for i in range(n_rounds):
        rnd = []
        for case in spec["cases"]:
            res = _run_case(args.part, case, args.threads, args.tile)
            print(f"round {i + 1}/{n_rounds}: {json.dumps(res, ensure_ascii=False)}", flush=True)
            rnd.append(res)
        rounds.append(rnd)

    import torch

    entry = {
        "title": spec["title"],
        "size": spec["size"],
        "baseline": spec["baseline"],
        "threads": args.threads,
        "chunk_or_tile": args.tile,
        "rounds": n_rounds,
        "machine": f"torch {torch.__version__}, {platform.machine()} CPU, {os.cpu_count()} cores",
        "command": f"PYTHONPATH=src python benchmarks/memory.py --part {args.part} --rounds {n_rounds} "
        f"--threads {args.threads}",
        "rows": _summary(rounds, spec["baseline"]),
        "raw": rounds,
    }
    print()
    print(markdown(args.part, entry))
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        results = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
        results[args.part] = entry
        RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nwrote {RESULTS.relative_to(ROOT.parent)}")


if __name__ == "__main__":
    main()
