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

Run: ``python benchmarks/topk.py --memory`` (``--quick``: first two shapes only; ``--only-interleaved``: skip
the wall-clock tables; ``--overhead``: the fixed per-call cost; ``--compile-time``: first-call time of
``torch.compile(fullgraph=True)``). The script sets ``OMP_WAIT_POLICY=PASSIVE`` before torch starts and
``torch.set_num_threads(--threads)`` (default 1). Wall-clock timings on a shared machine are noisy: the
interleaved CPU-time section measures the target shape robustly, and prints each ratio to ``torch.topk`` as the
median and interquartile range of per-round ratios; ``--memory`` measures peak memory at n = 1e6 with one fresh
process per case.
"""

from __future__ import annotations

import os

# before torch starts its OpenMP runtime: idle worker threads sleep instead of spinning on a shared machine
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from _timing import Case, Timing, compare, header
from kexue.ops import soft_topk
from kexue.ops.topk import _soft_topk_core, _validate_args

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
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--overhead", action="store_true", help="only the fixed per-call cost section")
    ap.add_argument("--compile-time", action="store_true", help="only the torch.compile first-call times")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{header()}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    print()
    if args.overhead:
        _overhead(args.rounds * 10)
        return
    if args.compile_time:
        _compile_time()
        return
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
    ratios are robust to contention (single-thread CPU kernels only; no memory column). The ratio to
    ``torch.topk`` is taken within each round; its median and interquartile range are printed.
    """
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
        times = _rounds(cases, rounds)
        med = {name: statistics.median(v) for name, v in times.items()}
        base = times["torch.topk (hard)"]
        peer_names = [p for p in med if not p.startswith(("kexue", "torch.topk"))]
        print(f"**CPU time, interleaved ({rounds} rounds), B={b}, n={n}, k={k}**\n")
        print("| case | median CPU time | x torch.topk (median [IQR] of per-round ratios) | fastest peer / case |")
        print("|---|---:|---:|---:|")
        for name, t in med.items():
            ratio = _spread([a / c for a, c in zip(times[name], base, strict=True)])
            fastest = f"{min(med[p] for p in peer_names) / t:.2f}" if peer_names else "-"
            print(f"| {name} | {t * 1e3:.3f} ms | {ratio} | {fastest} |")
        print()


def _rounds(cases: list[Case], rounds: int) -> dict[str, list[float]]:
    """Per-call CPU times, one call of every case per round (after one warm-up call each)."""
    times: dict[str, list[float]] = {c.name: [] for c in cases}
    for c in cases:
        c.fn()
    for _ in range(rounds):
        for c in cases:
            t0 = time.process_time()
            c.fn()
            times[c.name].append(time.process_time() - t0)
    return times


def _spread(values: list[float]) -> str:
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return f"{q2:.2f} [{q1:.2f}, {q3:.2f}]"


def _overhead(rounds: int) -> None:
    """Fixed per-call cost of ``soft_topk`` beyond the math, forward only, interleaved rounds.

    ``soft_topk`` is ``_validate_args`` followed by ``_soft_topk_core``; the validation (type checks and one
    finiteness reduction with its host sync) is the cost that does not depend on the method. It is timed alone,
    and as the per-round difference between the public call and the core with pre-validated arguments. At a tiny
    shape (2, 8) the whole call is close to pure per-call cost (Python and op dispatch of the method's ops).
    """
    print(f"**Fixed per-call cost, forward, CPU time, interleaved ({rounds} rounds)**\n")
    print("| shape, k | method | validation alone | public - core (per round) | public call |")
    print("|---|---|---:|---:|---:|")
    for (b, n), k in (((64, 1024), 10), ((2, 8), 3)):
        x = torch.randn(b, n, generator=torch.Generator().manual_seed(0))
        for m in ("exp", "sigmoid", "laplace"):
            cases = [
                Case("validate", lambda x=x, k=k, m=m: _validate_args(x, k, m, 1.0, -1, False)),
                Case("public", lambda x=x, k=k, m=m: soft_topk(x, k, method=m)),
                Case("core", lambda x=x, k=k, m=m: _soft_topk_core(x, k, m, 1.0, 1, False)),
            ]
            t = _rounds(cases, rounds)
            diff = [a - c for a, c in zip(t["public"], t["core"], strict=True)]
            q1, q2, q3 = statistics.quantiles(diff, n=4)
            print(
                f"| ({b}, {n}), {k} | {m} | {statistics.median(t['validate']) * 1e3:.4f} ms | "
                f"{q2 * 1e3:.4f} ms [{q1 * 1e3:.4f}, {q3 * 1e3:.4f}] | {statistics.median(t['public']) * 1e3:.3f} ms |"
            )
    print()


def _compile_time() -> None:
    """Wall and CPU time of the first call of ``torch.compile(soft_topk, fullgraph=True)`` (forward + backward).

    One fresh process per method, inductor caches disabled and compilation in-process (one compile thread), so
    that each number includes the whole compile and the CPU time counts all of it.
    """
    import subprocess

    code = """
import os, resource, sys, time, torch
sys.path[:0] = {paths!r}
torch.set_num_threads(1)
from kexue.ops import soft_topk
x = torch.randn(64, 1024, requires_grad=True)
fn = torch.compile(lambda t: soft_topk(t, 10, method={m!r}), fullgraph=True)
t0 = time.perf_counter()
fn(x).square().sum().backward()
wall = time.perf_counter() - t0
cpu = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
          for f in ("ru_utime", "ru_stime"))  # the whole process so far, imports included
t0 = time.perf_counter()
for _ in range(20):
    fn(x).square().sum().backward()
print(wall, cpu, (time.perf_counter() - t0) / 20)
"""
    print("**torch.compile(fullgraph=True), inductor, first call forward + backward, B=64, n=1024, k=10**\n")
    print("| method | first call wall | process CPU time until then | later calls |")
    print("|---|---:|---:|---:|")
    env = dict(os.environ, TORCHINDUCTOR_FORCE_DISABLE_CACHES="1", TORCHINDUCTOR_COMPILE_THREADS="1")
    for m in ("exp", "sigmoid", "laplace"):
        out = subprocess.run(
            [sys.executable, "-c", code.format(paths=sys.path, m=m)], capture_output=True, text=True, env=env
        )
        try:
            wall, cpu, later = (float(v) for v in out.stdout.split()[-3:])
            print(f"| {m} | {wall:.1f} s | {cpu:.1f} s | {later * 1e3:.2f} ms |")
        except ValueError:
            print(f"| {m} | failed: {out.stderr.strip().splitlines()[-1][:80] if out.stderr else '?'} | - | - |")
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
