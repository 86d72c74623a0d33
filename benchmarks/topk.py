"""Smooth top-k: forward + backward time and peak memory against the peers, as ratios to hard ``torch.topk``.

Cases, measured one after the other in this process for every (B, n) in {(64, 128), (64, 1024), (8, 16384),
(1, 1_000_000)} and k in {1, 10, n/10}:

* ``torch.topk`` (hard; the floor): ``x.topk(k).values`` then backward;
* ``kexue <method>`` for the five constructions of ``kexue.ops.soft_topk`` (``gradtopk`` and ``iterative`` are
  O(n k) and are skipped where B * n * k > 5e7);
* ``entmax.budget_bisect`` (budget = k, its default 50 bisection steps);
* ``torchsort`` soft-rank mask ``clamp(soft_rank(x) - (n - k), 0, 1)`` (regularization "l2", strength 1);
* ``difftopk`` bitonic sorting network (Cauchy relaxation, steepness 10): its dense layers hold B x n x n
  matrices per stage, so it is run only for n = 128 (at n = 1024 and B = 64 it would need about 30 GB).

Run: ``OMP_NUM_THREADS=1 python benchmarks/topk.py --memory`` (``--quick``: first two shapes only). Peers that
are not installed are printed as such. Wall-clock timings on a shared machine are noisy: the interleaved
CPU-time section at the end measures the target shape robustly; ``--memory`` measures peak memory at n = 1e6
with one fresh process per case.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch

from _timing import Case, Timing, compare, header
from kexue.ops import soft_topk

SHAPES = [(64, 128), (64, 1024), (8, 16384), (1, 1_000_000)]
METHODS = ("sigmoid", "exp", "laplace", "gradtopk", "iterative")
ONK_LIMIT = 5e7


def _peers() -> dict[str, Callable[[torch.Tensor, int], torch.Tensor] | str]:
    peers: dict[str, Callable[[torch.Tensor, int], torch.Tensor] | str] = {}
    try:
        from entmax import budget_bisect

        peers["entmax.budget_bisect"] = lambda x, k: budget_bisect(x, k)
    except ImportError as e:
        peers["entmax.budget_bisect"] = f"not installed ({e})"
    try:
        import torchsort

        def _ts(x: torch.Tensor, k: int) -> torch.Tensor:
            r = torchsort.soft_rank(x, regularization="l2", regularization_strength=1.0)
            return torch.clamp(r - (x.shape[-1] - k), 0, 1)

        peers["torchsort soft-rank mask"] = _ts
    except ImportError as e:
        peers["torchsort soft-rank mask"] = f"not installed ({e})"
    try:
        import io
        from contextlib import redirect_stdout

        with redirect_stdout(io.StringIO()):  # difftopk prints a note about the optional torch_sparse
            from difftopk import get_sorting_network
            from difftopk import topk as dtopk
        nets: dict[int, object] = {}

        def _dt(x: torch.Tensor, k: int) -> torch.Tensor:
            n = x.shape[-1]
            if n > 128:
                raise MemoryError(f"skipped: dense sorting network needs B*n*n per stage at n={n}")
            if n not in nets:
                nets[n] = get_sorting_network("bitonic", n, x.device)
            _, mat = dtopk(nets[n], x, k, steepness=10.0, distribution="cauchy")
            return mat.sum(-1)  # (B, n, k) relaxed top-k permutation columns -> mask

        peers["difftopk bitonic"] = _dt
    except ImportError as e:
        peers["difftopk bitonic"] = f"not installed ({e})"
    return peers


def _fwd_bwd(op: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, k: int, g: torch.Tensor) -> Callable:
    def fn() -> None:
        x.grad = None
        y = op(x, k)
        (y * g).sum().backward()

    return fn


def _hard(x: torch.Tensor, k: int, g: torch.Tensor) -> Callable:
    def fn() -> None:
        x.grad = None
        v = x.topk(k, -1).values
        (v * g[:, :k]).sum().backward()

    return fn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="only the two smaller shapes")
    ap.add_argument("--max-seconds", type=float, default=3.0, help="time budget per case")
    ap.add_argument("--rounds", type=int, default=40, help="rounds of the interleaved CPU-time section")
    ap.add_argument("--only-interleaved", action="store_true", help="skip the wall-clock tables")
    ap.add_argument("--memory", action="store_true", help="also measure peak memory at n=1e6 in fresh processes")
    args = ap.parse_args()
    print(header())
    print()
    peers = _peers()
    for name, p in peers.items():
        if isinstance(p, str):
            print(f"- {name}: {p}")
    summary: list[str] = []
    shapes = [] if args.only_interleaved else SHAPES[:2] if args.quick else SHAPES
    for b, n in shapes:
        for k in sorted({1, 10, n // 10}):
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(b, n, generator=gen).requires_grad_(True)
            g = torch.randn(b, n, generator=gen)
            cases = [Case("torch.topk (hard)", _hard(x, k, g))]
            for m in METHODS:
                if m in ("gradtopk", "iterative") and b * n * k > ONK_LIMIT:
                    continue
                cases.append(Case(f"kexue {m}", _fwd_bwd(lambda t, kk, m=m: soft_topk(t, kk, method=m), x, k, g)))
            for name, p in peers.items():
                if not isinstance(p, str):
                    cases.append(Case(name, _fwd_bwd(p, x, k, g)))
            res = compare(
                f"forward+backward, B={b}, n={n}, k={k}",
                cases,
                baseline="torch.topk (hard)",
                max_seconds=args.max_seconds,
                repeats=15,
            )
            skipped = [m for m in METHODS if m in ("gradtopk", "iterative") and b * n * k > ONK_LIMIT]
            if skipped:
                print(f"(skipped {', '.join(skipped)}: O(n k) with B*n*k = {b * n * k:.1e} > {ONK_LIMIT:.0e})\n")
            summary += _summarise(res, b, n, k)
    print("**Targets (wall-clock tables above)**\n")
    print("\n".join(summary))
    print()
    _interleaved(peers, args.rounds)
    if args.memory:
        _memory_table()
    sys.stdout.flush()


_MEM_SNIPPET = """
import sys, torch
sys.path[:0] = {paths!r}
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
x = torch.randn(1, {n}).requires_grad_(True)
g = torch.randn(1, {n})
name = {name!r}
if name == 'torch.topk (hard)':
    op = lambda t: t.topk({k}, -1).values
    g = g[:, :{k}]
elif name.startswith('kexue '):
    from kexue.ops import soft_topk
    op = lambda t: soft_topk(t, {k}, method=name[6:])
elif name == 'entmax.budget_bisect':
    from entmax import budget_bisect
    op = lambda t: budget_bisect(t, {k})
else:
    import torchsort
    op = lambda t: torch.clamp(torchsort.soft_rank(t) - ({n} - {k}), 0, 1)
base = hwm()
(op(x) * g).sum().backward()
print(hwm() - base)
"""


def _memory_table(n: int = 1_000_000, k: int = 10) -> None:
    """Peak resident memory of one forward+backward at B=1, n=1e6, one fresh process per case (VmHWM)."""
    import os
    import subprocess

    names = ["torch.topk (hard)"] + [f"kexue {m}" for m in METHODS]
    names += ["entmax.budget_bisect", "torchsort soft-rank mask"]
    x_bytes = 4 * n
    print(f"**Peak memory of one forward+backward, B=1, n={n}, k={k} (fresh process per case)**\n")
    print("| case | peak RSS growth | / size of x |")
    print("|---|---:|---:|")
    for name in names:
        code = _MEM_SNIPPET.format(paths=sys.path, n=n, k=k, name=name)
        try:
            out = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                timeout=300,
                env=dict(os.environ),
            )
            val = int(out.stdout.strip().splitlines()[-1])
            print(f"| {name} | {val / 2**20:.1f} MB | {val / x_bytes:.1f} |")
        except Exception as e:  # a failing or missing peer is reported, not fatal
            print(f"| {name} | failed: {type(e).__name__} | - |")
    print()


def _interleaved(peers: dict[str, Callable[[torch.Tensor, int], torch.Tensor] | str], rounds: int) -> None:
    """CPU time per call at the target shape (64, 1024), cases interleaved round-robin.

    On a shared machine the wall-clock medians above drift with other processes' load between cases. Here
    every round runs each case once, and ``time.process_time`` counts only this process's CPU time, so the
    ratios are robust to contention (single-thread CPU kernels only; no memory column).
    """
    import statistics
    import time

    b, n = 64, 1024
    for k in (1, 10, n // 10):
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(b, n, generator=gen).requires_grad_(True)
        g = torch.randn(b, n, generator=gen)
        cases = [Case("torch.topk (hard)", _hard(x, k, g))]
        for m in ("sigmoid", "exp", "laplace"):
            cases.append(Case(f"kexue {m}", _fwd_bwd(lambda t, kk, m=m: soft_topk(t, kk, method=m), x, k, g)))
        for name, p in peers.items():
            if not isinstance(p, str) and name != "difftopk bitonic":
                cases.append(Case(name, _fwd_bwd(p, x, k, g)))
        times: dict[str, list[float]] = {c.name: [] for c in cases}
        for c in cases:
            c.fn()  # warm-up
        for _ in range(rounds):
            for c in cases:
                t0 = time.process_time()
                c.fn()
                times[c.name].append(time.process_time() - t0)
        med = {name: statistics.median(v) for name, v in times.items()}
        best_peer = min(med[p] for p in med if not p.startswith(("kexue", "torch.topk")))
        print(f"**CPU time, interleaved ({rounds} rounds), B={b}, n={n}, k={k}**\n")
        print("| case | median CPU time | x torch.topk | fastest peer / case |")
        print("|---|---:|---:|---:|")
        for name, t in med.items():
            print(f"| {name} | {t * 1e3:.3f} ms | {t / med['torch.topk (hard)']:.2f} | {best_peer / t:.2f} |")
        print()


def _summarise(res: list[Timing], b: int, n: int, k: int) -> list[str]:
    t = {r.name: r for r in res if not r.error}
    hard = t.get("torch.topk (hard)")
    peer_names = ("entmax.budget_bisect", "torchsort soft-rank mask", "difftopk bitonic")
    peer_times = [t[p].median_s for p in peer_names if p in t]
    out = []
    for m in ("sigmoid", "exp"):
        ours = t.get(f"kexue {m}")
        if ours is None or hard is None:
            continue
        line = f"- B={b}, n={n}, k={k}, {m}: {ours.median_s / hard.median_s:.1f}x torch.topk"
        if peer_times:
            best = min(peer_times)
            line += f", fastest peer / ours = {best / ours.median_s:.2f}"
        out.append(line)
    return out


if __name__ == "__main__":
    main()
