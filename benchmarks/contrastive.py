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
import sys

import torch
import torch.nn.functional as F

from _timing import Case, compare, header
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
        # small sizes run in ~1 ms: many repeats so that a burst of machine load does not decide the median
        kw: dict[str, float] = {
            32: {"repeats": 300, "max_seconds": 10.0},
            256: {"repeats": 60, "max_seconds": 15.0},
            1024: {"repeats": 15, "max_seconds": 20.0},
        }.get(b, {"max_seconds": 20.0, "repeats": 5, "warmup": 1})

        cases = [
            Case("floor: F.cross_entropy", _fb(_floor, q, k)),
            Case("kexue info_nce", _fb(lambda a, c: info_nce(a, c, temperature=TAU), q, k)),
            Case(
                "kexue info_nce stable", _fb(lambda a, c: info_nce(a, c, temperature=TAU, stable=True), q, k)
            ),
            Case("kexue flat_nce", _fb(lambda a, c: flat_nce(a, c, temperature=TAU), q, k)),
        ]
        if peer_info_nce is not None:
            cases.append(
                Case("info-nce-pytorch", _fb(lambda a, c: peer_info_nce(a, c, temperature=TAU), q, k))
            )
        else:
            print("info-nce-pytorch: not installed")
        values = {c.name: c.fn() for c in cases}
        compare(f"in-batch InfoNCE, B={b}", cases, baseline="floor: F.cross_entropy", **kw)
        _print_diffs(
            values,
            "floor: F.cross_entropy",
            flat_ref=float(flat_nce(q.detach().double(), k.detach().double())),
        )

        labels = torch.cat([torch.arange(b), torch.arange(b)])
        sym = [
            Case("floor: masked F.cross_entropy", _fb(_floor_sym, q, k)),
            Case(
                "kexue info_nce sym", _fb(lambda a, c: info_nce(a, c, temperature=TAU, symmetric=True), q, k)
            ),
            Case(
                "kexue info_nce sym stable",
                _fb(lambda a, c: info_nce(a, c, temperature=TAU, symmetric=True, stable=True), q, k),
            ),
            Case(
                "kexue flat_nce sym", _fb(lambda a, c: flat_nce(a, c, temperature=TAU, symmetric=True), q, k)
            ),
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
        compare(f"SimCLR NT-Xent (2B views), B={b}", sym, baseline="floor: masked F.cross_entropy", **kw)
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
