"""InfoNCE / FlatNCE forward + backward against a plain cross-entropy floor and the peers.

Run: ``python benchmarks/contrastive.py [--sizes 32,256,1024,4096] [--dim 128]``.

Two tables per batch size B (embeddings (B, D), D = 128 by default, float32, forward + backward):

* in-batch InfoNCE (B anchors, B - 1 negatives each): the floor is
  ``F.cross_entropy(normalize(q) @ normalize(k).T / tau, arange(B))``; peer ``info-nce-pytorch``.
* SimCLR NT-Xent (2B anchors, 2B - 2 negatives each): the floor is the same cross-entropy on the 2B x 2B
  cosine matrix with its diagonal masked; peer ``pytorch-metric-learning`` ``NTXentLoss``
  (B <= 256 only: it builds per-pair index tensors and is slow beyond).

Each table also prints the largest absolute difference of every case's loss from the floor's (all compute the
same quantity in float32, except FlatNCE whose value is log xi and is compared with its own float64 value).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from _timing import Case, Timing, header, markdown_table, measure
from kexue.losses import flat_nce, info_nce

TAU = 0.1


def _peers() -> tuple[object | None, object | None]:
    try:
        from info_nce import info_nce as peer_info_nce
    except ImportError:
        peer_info_nce = None
    try:
        from pytorch_metric_learning.losses import NTXentLoss

        pml = NTXentLoss(temperature=TAU)
    except ImportError:
        pml = None
    return peer_info_nce, pml


def _floor(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / TAU
    return F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))


def _floor_sym(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    z = F.normalize(torch.cat([q, k]), dim=1)
    b = q.shape[0]
    logits = (z @ z.T / TAU).fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(q.device)
    return F.cross_entropy(logits, target)


def compare_interleaved(title: str, cases: list[Case], *, baseline: str, rounds: int, max_seconds: float) -> None:
    """Time ``cases`` round-robin (rotating the order each round) and print the ratio table.

    On a loaded machine the speed can swing several-fold within seconds; timing each case in its own block
    (``_timing.compare``) then compares different load levels. Interleaving exposes every case to the same
    load. Peak memory comes from one separate ``_timing.measure`` call per case.
    """
    mem = {c.name: measure(c.name, c.fn, warmup=0, repeats=1, max_seconds=0.0) for c in cases}
    live = [c for c in cases if mem[c.name].error is None]
    times: dict[str, list[float]] = {c.name: [] for c in live}
    budget = max_seconds / max(len(live), 1)
    for r in range(rounds):
        order = live[r % len(live) :] + live[: r % len(live)] if live else []
        ran = False
        for c in order:
            if len(times[c.name]) >= 3 and sum(times[c.name]) > budget:
                continue
            t0 = time.perf_counter()
            c.fn()
            times[c.name].append(time.perf_counter() - t0)
            ran = True
        if not ran:
            break
    timings = []
    for c in cases:
        m = mem[c.name]
        if m.error is not None:
            timings.append(m)
            continue
        ts = times[c.name]
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        timings.append(Timing(c.name, statistics.median(ts), q[0], q[2], len(ts), m.peak_bytes))
    print(markdown_table(title, timings, baseline))
    print()


def _fb(fn, q: torch.Tensor, k: torch.Tensor):  # type: ignore[no-untyped-def]
    def run() -> float:
        q.grad = k.grad = None
        loss = fn(q, k)
        loss.backward()
        return float(loss.detach())

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="32,256,1024,4096")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--pml-max", type=int, default=256)
    args = ap.parse_args()
    peer_info_nce, pml = _peers()
    print(header())
    print(f"forward + backward, D={args.dim}, tau={TAU}, float32; ratio = time / floor (lower is faster)\n")
    for b in [int(s) for s in args.sizes.split(",")]:
        g = torch.Generator().manual_seed(0)
        q = torch.randn(b, args.dim, generator=g).requires_grad_()
        k = (q.detach() + 0.5 * torch.randn(b, args.dim, generator=g)).requires_grad_()
        # rounds of interleaved calls; each case stops after 3 calls once it has used its share of max_seconds
        rounds, max_s = (400, 15.0) if b <= 1024 else (5, 60.0)

        cases = [
            Case("floor: F.cross_entropy", _fb(_floor, q, k)),
            Case("kexue info_nce", _fb(lambda a, c: info_nce(a, c, temperature=TAU), q, k)),
            Case("kexue info_nce stable", _fb(lambda a, c: info_nce(a, c, temperature=TAU, stable=True), q, k)),
            Case("kexue flat_nce", _fb(lambda a, c: flat_nce(a, c, temperature=TAU), q, k)),
        ]
        if peer_info_nce is not None:
            cases.append(Case("info-nce-pytorch", _fb(lambda a, c: peer_info_nce(a, c, temperature=TAU), q, k)))
        else:
            print("info-nce-pytorch: not installed")
        values = {c.name: c.fn() for c in cases}
        compare_interleaved(
            f"in-batch InfoNCE, B={b}",
            cases,
            baseline="floor: F.cross_entropy",
            rounds=rounds,
            max_seconds=max_s,
        )
        _print_diffs(
            values,
            "floor: F.cross_entropy",
            flat_ref=float(flat_nce(q.detach().double(), k.detach().double())),
        )

        labels = torch.cat([torch.arange(b), torch.arange(b)])
        sym = [
            Case("floor: masked F.cross_entropy", _fb(_floor_sym, q, k)),
            Case("kexue info_nce sym", _fb(lambda a, c: info_nce(a, c, temperature=TAU, symmetric=True), q, k)),
            Case(
                "kexue info_nce sym stable",
                _fb(lambda a, c: info_nce(a, c, temperature=TAU, symmetric=True, stable=True), q, k),
            ),
            Case("kexue flat_nce sym", _fb(lambda a, c: flat_nce(a, c, temperature=TAU, symmetric=True), q, k)),
        ]
        if pml is None:
            print("pytorch-metric-learning: not installed")
        elif b <= args.pml_max:
            sym.append(
                Case(
                    "pytorch-metric-learning NTXent",
                    _fb(lambda a, c, lab=labels: pml(torch.cat([a, c]), lab), q, k),
                )
            )
        else:
            print(f"pytorch-metric-learning NTXent: skipped at B={b} (> {args.pml_max})")
        values = {c.name: c.fn() for c in sym}
        compare_interleaved(
            f"SimCLR NT-Xent (2B views), B={b}",
            sym,
            baseline="floor: masked F.cross_entropy",
            rounds=rounds,
            max_seconds=max_s,
        )
        _print_diffs(
            values,
            "floor: masked F.cross_entropy",
            flat_ref=float(flat_nce(q.detach().double(), k.detach().double(), symmetric=True)),
        )
        sys.stdout.flush()


def _print_diffs(values: dict[str, float], floor: str, *, flat_ref: float) -> None:
    parts = []
    for name, v in values.items():
        if name == floor:
            continue
        ref = flat_ref if "flat" in name else values[floor]
        parts.append(f"{name}: {abs(v - ref):.1e}")
    print("max |loss - reference|: " + "; ".join(parts) + "\n")


if __name__ == "__main__":
    main()
