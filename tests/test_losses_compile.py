"""The losses trace into one graph under torch.compile: fullgraph=True, no graph break.

Value checks that read tensor values (a device sync) are skipped while dynamo traces (kexue._validate.is_compiling);
shape and dtype checks stay. Backend "eager" keeps the tests fast: the property is dynamo's graph capture.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch._dynamo

from kexue.losses import TaiLrLoss, flat_nce, flat_nce_from_logits, info_nce, info_nce_from_logits, tailr_loss

Case = tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]


def _cases() -> dict[str, Case]:
    g = torch.Generator().manual_seed(0)
    q, k, n = (torch.randn(b, 6, generator=g) for b in (4, 4, 3))
    logits = torch.randn(4, 7, generator=g)
    logits[0, 5] = -math.inf  # a masked candidate
    target = torch.tensor([0, 2, 6, 3])
    lonely = logits.clone()
    lonely[1, [0, 1, 3, 4, 5, 6]] = -math.inf  # row 1 keeps only its positive: InfoNCE 0, zero gradient
    seq = torch.randn(2, 5, 3, generator=g)  # (B, V, L)
    seq_t = torch.tensor([[1, 4, -100], [0, 2, 3]])
    mod = TaiLrLoss(gamma=0.1, min_weight=0.3, label_smoothing=0.1)
    return {
        "tailr_weighted": (lambda x, t: tailr_loss(x, t, gamma=0.3, min_weight=0.2, label_smoothing=0.1), (seq, seq_t)),
        "tailr_closed": (
            lambda x, t: tailr_loss(x, t, gamma=0.5, form="closed", reduction="none"),
            (logits.clamp_min(-9), target),
        ),
        "tailr_module": (lambda x, t: mod(x, t), (seq, seq_t)),
        "info_nce": (lambda a, b, c: info_nce(a, b, negatives=c, symmetric=True), (q, k, n)),
        "info_nce_stable": (lambda a, b: info_nce(a, b, stable=True, reduction="none"), (q, k)),
        "flat_nce": (lambda a, b, c: flat_nce(a, b, negatives=c, return_info_nce=True)[0], (q, k, n)),
        "info_nce_from_logits": (lambda x, t: info_nce_from_logits(x, t, stable=True), (lonely, target)),
        "flat_nce_from_logits": (lambda x, t: flat_nce_from_logits(x, t, reduction="sum"), (logits, target)),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_no_graph_break_and_fullgraph_matches_eager(name: str) -> None:
    fn, args = _cases()[name]
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*args)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    torch._dynamo.reset()
    x = args[0].clone().requires_grad_()
    got = torch.compile(fn, fullgraph=True, backend="eager")(x, *args[1:])  # raises on any break or guard
    want_x = args[0].clone().requires_grad_()
    want = fn(want_x, *args[1:])
    torch.testing.assert_close(got, want)
    (g_got,) = torch.autograd.grad(got.sum(), x)
    (g_want,) = torch.autograd.grad(want.sum(), want_x)
    torch.testing.assert_close(g_got, g_want)
