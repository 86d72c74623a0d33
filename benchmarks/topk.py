"""Smooth top-k: forward + backward time against the peers, as ratios to hard ``torch.topk``.

Shapes (B, n, k): (64, 128, 10), (64, 1024, k) for k in {1, 10, 102}, (8, 32768, 64) and (1, 1_000_000, 10).
Cases in every table, interleaved in one process:

* ``torch.topk (hard)`` (the floor, the baseline): ``x.topk(k).values`` then backward;
* ``kexue sigmoid`` / ``exp`` / ``laplace``: the threshold constructions of ``kexue.ops.soft_topk``;
* ``entmax.budget_bisect`` (budget = k, its default 50 bisection steps);
* ``torchsort`` soft-rank mask ``clamp(soft_rank(x) - (n - k), 0, 1)`` (regularization "l2", strength 1).

``gradtopk`` and ``iterative`` (O(n k) work) are timed at (64, 128, 10) only, in a table of their own (the cache
they leave behind would slow down the call after them). The ``difftopk`` bitonic sorting network holds B x n x n
matrices per stage (about 30 GB at (64, 1024)) and takes a fraction of a second per call, so it has a table of its
own at (64, 128, 10) with a few rounds. A last table times the fixed per-call cost of ``soft_topk``: its argument
validation, against the computation with validated arguments.

Targets: every threshold method at least 2x faster than the fastest peer (entmax, torchsort) at every shape, and
argument validation at most 0.1 ms per call at (64, 1024).

    python benchmarks/topk.py
"""

from __future__ import annotations

import os

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read once when torch loads: idle OpenMP threads sleep, not spin

import io
from collections.abc import Callable
from contextlib import redirect_stdout

import torch

from _timing import Bench, Case
from kexue.ops import soft_topk
from kexue.ops.topk import _soft_topk_core, _validate_args

SHAPES = [(64, 128, 10), (64, 1024, 1), (64, 1024, 10), (64, 1024, 102), (8, 32768, 64), (1, 1_000_000, 10)]
THRESHOLD = ("sigmoid", "exp", "laplace")
HARD = "torch.topk (hard)"
ENTMAX, TORCHSORT, DIFFTOPK = "entmax.budget_bisect", "torchsort soft-rank mask", "difftopk bitonic"
Op = Callable[[torch.Tensor, int], torch.Tensor]


def _peers(bench: Bench) -> dict[str, Op]:
    """The peers that are installed (a missing one is noted in the results)."""
    bench.peer("entmax", "torchsort", "difftopk")
    peers: dict[str, Op] = {}
    try:
        from entmax import budget_bisect

        peers[ENTMAX] = lambda x, k: budget_bisect(x, k)
    except ImportError as e:
        bench.notes.append(f"{ENTMAX}: not installed ({e}).")
    try:
        import torchsort

        def _ts(x: torch.Tensor, k: int) -> torch.Tensor:
            r = torchsort.soft_rank(x, regularization="l2", regularization_strength=1.0)
            return torch.clamp(r - (x.shape[-1] - k), 0, 1)

        peers[TORCHSORT] = _ts
    except ImportError as e:
        bench.notes.append(f"{TORCHSORT}: not installed ({e}).")
    try:
        with redirect_stdout(io.StringIO()):  # difftopk prints a note about the optional torch_sparse
            from difftopk import get_sorting_network
            from difftopk import topk as dtopk
        nets: dict[int, object] = {}

        def _dt(x: torch.Tensor, k: int) -> torch.Tensor:
            n = x.shape[-1]
            if n not in nets:
                nets[n] = get_sorting_network("bitonic", n, x.device)
            _, mat = dtopk(nets[n], x, k, steepness=10.0, distribution="cauchy")
            return mat.sum(-1)  # (B, n, k) relaxed top-k permutation columns -> mask

        peers[DIFFTOPK] = _dt
    except ImportError as e:
        bench.notes.append(f"{DIFFTOPK}: not installed ({e}).")
    return peers


def _fwd_bwd(op: Op, x: torch.Tensor, k: int, g: torch.Tensor) -> Callable[[], None]:
    def fn() -> None:
        x.grad = None
        (op(x, k) * g).sum().backward()

    return fn


def _hard(x: torch.Tensor, k: int, g: torch.Tensor) -> Callable[[], None]:
    def fn() -> None:
        x.grad = None
        (x.topk(k, -1).values * g[:, :k]).sum().backward()

    return fn


def _ours(method: str) -> Op:
    return lambda x, k: soft_topk(x, k, method=method)


def _inputs(b: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(b, n, generator=gen).requires_grad_(True), torch.randn(b, n, generator=gen)


def _overhead(bench: Bench, b: int = 64, n: int = 1024, k: int = 10) -> None:
    """Fixed per-call cost: ``soft_topk`` is ``_validate_args`` then ``_soft_topk_core``; forward only."""
    x = torch.randn(b, n, generator=torch.Generator().manual_seed(0))
    cases = [
        Case("core (arguments validated)", lambda: _soft_topk_core(x, k, "sigmoid", 1.0, 1, False)),
        Case("soft_topk (public call)", lambda: soft_topk(x, k, method="sigmoid")),
        Case("argument validation alone", lambda: _validate_args(x, k, "sigmoid", 1.0, -1, False)),
    ]
    timings = bench.compare(
        "overhead",
        f"fixed per-call cost, sigmoid forward, (B, n, k) = ({b}, {n}, {k})",
        cases,
        baseline="core (arguments validated)",
        budget_s=15.0,
        note="The public call is argument validation followed by the core; validation is timed alone as well.",
    )
    core = next(t for t in timings if t.name == "core (arguments validated)")
    if core.error is None:
        limit = 1e-4 / core.median_s  # 0.1 ms in units of the core's median time
        bench.target(
            "validation",
            f"argument validation ≤ 0.1 ms per call at ({b}, {n}) (≤ {limit:.2f}× the core call)",
            table="overhead",
            case="argument validation alone",
            limit=limit,
        )
        valid = next(t for t in timings if t.name == "argument validation alone")
        if valid.error is None:
            bench.summary["validation_ms"] = round(valid.median_s * 1e3, 4)


def main() -> None:
    bench = Bench("topk", "Smooth top-k vs hard torch.topk and the peers, forward + backward")
    peers = _peers(bench)
    rivals = [p for p in (ENTMAX, TORCHSORT) if p in peers]
    table_ids = []
    for b, n, k in SHAPES:
        x, g = _inputs(b, n)
        cases = [Case(HARD, _hard(x, k, g))]
        cases += [Case(f"kexue {m}", _fwd_bwd(_ours(m), x, k, g)) for m in THRESHOLD]
        small = n <= 128
        cases += [Case(p, _fwd_bwd(peers[p], x, k, g)) for p in rivals]
        tid = f"b{b}_n{n}_k{k}"
        table_ids.append(tid)
        big = n >= 1_000_000
        bench.compare(
            tid,
            f"forward + backward, (B, n, k) = ({b}, {n}, {k})",
            cases,
            baseline=HARD,
            budget_s=30.0 if big else 20.0,
            note="gradtopk and iterative (O(n k)) are timed at n = 128 only, in a table of their own.",
        )
        times = {t["case"]: t for t in bench.tables[-1]["rows"] if t["median_s"] is not None}
        ready = [p for p in rivals if p in times]
        if ready:
            fastest = min(ready, key=lambda p: times[p]["median_s"])
            for m in THRESHOLD:
                bench.target(
                    f"{tid}_{m}",
                    f"{m} ≥ 2× faster than the fastest peer at ({b}, {n}, {k})",
                    table=tid,
                    case=f"kexue {m}",
                    other=fastest,
                    limit=0.5,
                )
        if small:
            # milliseconds per call: in a table of their own, so that the cache they leave behind does not slow
            # down the call after them in the main table
            onk = [cases[0], cases[1]] + [
                Case(f"kexue {m}", _fwd_bwd(_ours(m), x, k, g)) for m in ("gradtopk", "iterative")
            ]
            bench.compare(
                f"onk_b{b}_n{n}_k{k}",
                f"O(n k) constructions, forward + backward, (B, n, k) = ({b}, {n}, {k})",
                onk,
                baseline=HARD,
                budget_s=10.0,
            )
        if small and DIFFTOPK in peers:
            # seconds per call: a table of its own with a few rounds, so that it does not set the others' pace
            dt = [cases[0], cases[1], Case(DIFFTOPK, _fwd_bwd(peers[DIFFTOPK], x, k, g))]
            bench.compare(
                f"difftopk_b{b}_n{n}_k{k}",
                f"difftopk, forward + backward, (B, n, k) = ({b}, {n}, {k})",
                dt,
                baseline=HARD,
                rounds=15,
                budget_s=10.0,
                warmup=1,
                note="difftopk's dense sorting-network stages hold B × n × n matrices: timed at n = 128 only.",
            )
    _overhead(bench)
    heads = [{"label": m, "case": f"kexue {m}", "tables": table_ids} for m in THRESHOLD]
    heads += [{"label": p.split()[0], "case": p, "tables": table_ids} for p in rivals]
    bench.summary.update(
        {
            "technique": "smooth top-k",
            "doc": "docs/topk.md",
            "what": "fwd+bwd × hard `torch.topk`, (B, n, k) from (64, 128, 10) to (1, 1e6, 10); targets against the "
            "fastest peer (entmax, torchsort)",
            "headlines": heads,
            "target": "threshold methods ≥ 2× faster than the fastest peer at every shape; validation ≤ 0.1 ms",
        }
    )
    bench.save()


if __name__ == "__main__":
    main()
