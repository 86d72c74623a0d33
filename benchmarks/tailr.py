"""TaiLr loss vs F.cross_entropy: forward + backward time and peak memory, side by side in one process.

Cases: a classification batch (N, C) = (4096, 1000) and a token-level language-model batch (B, L, V) =
(2, 512, 32000) flattened to (B*L, V), each with and without label smoothing. ``--full`` grows the token case
to (8, 512, 32000) (0.5 GB per buffer).

    python benchmarks/tailr.py [--full]

The peer is PyTorch's own fused ``F.cross_entropy`` (what a user would otherwise call). No other maintained
TaiLr implementation exists as a package (the reference is a fairseq criterion inside the paper's repository).
"""

from __future__ import annotations

import os

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read once when torch loads: idle OpenMP threads sleep, not spin

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

from _timing import Bench, Case
from kexue.losses import tailr_loss


def _fwd_bwd(loss: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor) -> Callable[[], None]:
    def fn() -> None:
        logits.grad = None
        loss(logits).backward()

    return fn


def _cases(logits: torch.Tensor, target: torch.Tensor, eps: float) -> list[Case]:
    return [
        Case("F.cross_entropy", _fwd_bwd(lambda x: F.cross_entropy(x, target, label_smoothing=eps), logits)),
        Case(
            "tailr γ=0 (CE path)",
            _fwd_bwd(lambda x: tailr_loss(x, target, gamma=0.0, label_smoothing=eps), logits),
        ),
        Case(
            "tailr weighted γ=0.1 b=0.3",
            _fwd_bwd(lambda x: tailr_loss(x, target, gamma=0.1, min_weight=0.3, label_smoothing=eps), logits),
        ),
        Case(
            "tailr closed γ=0.1",
            _fwd_bwd(lambda x: tailr_loss(x, target, gamma=0.1, label_smoothing=eps, form="closed"), logits),
        ),
    ]


def _saved_buffers(fn: Callable[[], None], numel: int) -> int:
    """How many distinct tensors of at least ``numel`` elements autograd saves for backward in ``fn``."""
    seen: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.numel() >= numel:
            seen.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return len(seen)


def _table(bench: Bench, table_id: str, title: str, cases: list[Case], numel: int, budget: float) -> None:
    saved = ", ".join(f"{c.name} {_saved_buffers(c.fn, numel)}" for c in cases)
    note = f"(N, C)-sized tensors autograd saves for backward (the logits not counted): {saved}"
    bench.compare(table_id, title, cases, baseline="F.cross_entropy", memory=True, budget_s=budget, note=note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="token case (8, 512, 32000) instead of (2, ...)")
    bench = Bench("tailr", "TaiLr loss vs F.cross_entropy, forward + backward", parser)
    args = bench.args
    torch.manual_seed(0)
    n, c = 4096, 1000
    logits = torch.randn(n, c, requires_grad=True)
    target = torch.randint(0, c, (n,))
    for eps in (0.0, 0.1):
        title = f"(N, C) = ({n}, {c}), label_smoothing={eps}, fwd+bwd"
        _table(bench, f"cls_ls{eps}", title, _cases(logits, target, eps), n * c, 30.0)
    b, length, v = (8 if args.full else 2), 512, 32000
    tok_logits = torch.randn(b * length, v, requires_grad=True)  # (B*L, V): a flattened (B, L, V) LM output
    tok_target = torch.randint(0, v, (b * length,))
    tok_target[::7] = -100  # some padding
    for eps in (0.0, 0.1):
        title = f"tokens (B, L, V) = ({b}, {length}, {v}) flattened, label_smoothing={eps}, fwd+bwd"
        _table(bench, f"tok_ls{eps}", title, _cases(tok_logits, tok_target, eps), b * length * v, 60.0)
    for t in ("cls_ls0.0", "tok_ls0.0"):
        bench.target(
            f"{t}_weighted",
            f"weighted TaiLr ≤ 1.5× cross entropy ({t[:3]})",
            table=t,
            case="tailr weighted γ=0.1 b=0.3",
            limit=1.5,
        )
    bench.summary = {
        "technique": "TaiLr",
        "doc": "docs/tailr.md",
        "what": f"fwd+bwd × `F.cross_entropy`, (N, C) = ({n}, {c}) and tokens ({b}, {length}, {v})",
        "headlines": [
            {"label": f"weighted, ({n}, {c})", "case": "tailr weighted γ=0.1 b=0.3", "tables": ["cls_ls0.0"]},
            {
                "label": f"weighted, tokens ({b}, {length}, {v})",
                "case": "tailr weighted γ=0.1 b=0.3",
                "tables": ["tok_ls0.0"],
            },
            {"label": "closed form, tokens", "case": "tailr closed γ=0.1", "tables": ["tok_ls0.0"]},
            {"label": "γ = 0 (the cross-entropy path), tokens", "case": "tailr γ=0 (CE path)", "tables": ["tok_ls0.0"]},
        ],
        "target": "≤ 1.5×",
    }
    bench.save()


if __name__ == "__main__":
    main()
