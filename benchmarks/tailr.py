"""TaiLr loss vs F.cross_entropy: forward + backward time and peak memory, side by side in one process.

Cases: a classification batch (N, C) = (4096, 1000) and a token-level language-model batch (B, L, V) =
(8, 512, 32000) flattened to (B*L, V), each with and without label smoothing. ``--small`` shrinks the token case
to (2, 512, 32000) for machines where the 0.5 GB-per-buffer full case is too slow.

    python benchmarks/tailr.py [--small]

The peer is PyTorch's own fused ``F.cross_entropy`` (what a user would otherwise call). No other maintained
TaiLr implementation exists as a package (the reference is a fairseq criterion inside the paper's repository).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from _timing import Case, Timing, header, markdown_table, measure
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


def compare_interleaved(
    title: str, cases: Sequence[Case], *, baseline: str, numel: int, warmup: int = 2, repeats: int = 10
) -> None:
    """Time the cases round-robin (A B C A B C ...) so load changes on a shared machine hit all of them alike.

    Peak memory comes from :func:`_timing.measure` (one extra pass per case); the last column counts the
    (N, C)-sized tensors autograd keeps for backward (the logits themselves are not counted: they are saved by
    nobody here).
    """
    for c in cases:
        for _ in range(warmup):
            c.fn()
    times: dict[str, list[float]] = {c.name: [] for c in cases}
    for _ in range(repeats):
        for c in cases:
            t0 = time.perf_counter()
            c.fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[c.name].append(time.perf_counter() - t0)
    timings = []
    for c in cases:
        ts = times[c.name]
        q = statistics.quantiles(ts, n=4)
        peak = measure(c.name, c.fn, warmup=0, repeats=1).peak_bytes
        timings.append(Timing(c.name, statistics.median(ts), q[0], q[2], len(ts), peak))
    table = markdown_table(title, timings, baseline).splitlines()
    table[2] += " saved (N, C) buffers |"
    table[3] += "---:|"
    for i, c in enumerate(cases):
        table[4 + i] += f" {_saved_buffers(c.fn, numel)} |"
    print("\n".join(table))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="token case (2, 512, 32000) instead of (8, ...)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(header())
    print()
    n, c = 4096, 1000
    logits = torch.randn(n, c, requires_grad=True)
    target = torch.randint(0, c, (n,))
    for eps in (0.0, 0.1):
        compare_interleaved(
            f"(N, C) = ({n}, {c}), label_smoothing={eps}, fwd+bwd",
            _cases(logits, target, eps),
            baseline="F.cross_entropy",
            numel=n * c,
            repeats=args.repeats,
        )
    b, length, v = (2 if args.small else 8), 512, 32000
    tok_logits = torch.randn(b * length, v, requires_grad=True)  # (B*L, V): a flattened (B, L, V) LM output
    tok_target = torch.randint(0, v, (b * length,))
    tok_target[::7] = -100  # some padding
    for eps in (0.0, 0.1):
        compare_interleaved(
            f"tokens (B, L, V) = ({b}, {length}, {v}) flattened, label_smoothing={eps}, fwd+bwd",
            _cases(tok_logits, tok_target, eps),
            baseline="F.cross_entropy",
            numel=b * length * v,
            warmup=1,
            repeats=max(3, args.repeats // 2),
        )


if __name__ == "__main__":
    main()
