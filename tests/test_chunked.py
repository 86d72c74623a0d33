"""Tests of kexue.losses.chunked: TaiLr / cross entropy from hidden states in token chunks.

The reference is the unchunked ``tailr_loss(hidden @ weight.T + bias, target, ...)`` (itself tested against naive
formulas and ``F.cross_entropy`` in test_tailr.py); the chunked loss must match it in value and in the gradients of
hidden, weight and bias, TaiLr's stop-gradient included.
"""

from __future__ import annotations

import doctest
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import kexue.losses.chunked as chunked_module
from kexue.losses import ChunkedTaiLrLoss, chunked_cross_entropy, chunked_tailr_loss, tailr_loss

F64 = torch.float64

# (gamma, min_weight, label_smoothing, form): CE, the paper's three settings, the closed form, its γ=1 limit
SETTINGS = [
    (0.0, 0.0, 0.0, "weighted"),
    (0.0, 0.0, 0.1, "closed"),
    (1e-7, 0.2, 0.0, "weighted"),
    (0.1, 0.3, 0.1, "weighted"),
    (0.8, 0.2, 0.1, "weighted"),
    (0.5, 0.0, 0.2, "closed"),
    (1.0, 0.0, 0.0, "closed"),
]


def _data(
    gen: torch.Generator, shape: tuple[int, ...] = (3, 7), h: int = 5, v: int = 13, dtype: torch.dtype = F64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    hidden = (torch.randn(*shape, h, generator=gen, dtype=dtype) * 2).requires_grad_()
    weight = torch.randn(v, h, generator=gen, dtype=dtype).requires_grad_()
    bias = torch.randn(v, generator=gen, dtype=dtype).requires_grad_()
    target = torch.randint(0, v, shape, generator=gen)
    flat = target.view(-1)
    flat[[i for i in (1, 4, 9) if i < flat.numel()]] = -100  # padding, spread over chunks
    return hidden, weight, bias, target


def _reference(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, bias: Any, **kw: Any) -> torch.Tensor:
    logits = hidden @ weight.T
    if bias is not None:
        logits = logits + bias
    flat = logits.reshape(-1, weight.shape[0])
    out = tailr_loss(flat, target.reshape(-1), **kw)
    return out.reshape(target.shape) if kw.get("reduction") == "none" else out


def _grads(out: torch.Tensor, inputs: list[torch.Tensor], seed: int = 0) -> tuple[torch.Tensor, ...]:
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad(out, inputs, w)


# ----------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize(("gamma", "b", "eps", "form"), SETTINGS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_equals_unchunked_tailr(gamma: float, b: float, eps: float, form: str, reduction: str) -> None:
    """Values and gradients (hidden, weight, bias) at chunk sizes that divide N = 21 and ones that do not."""
    gen = torch.Generator().manual_seed(3)
    hidden, weight, bias, target = _data(gen)
    kw = dict(gamma=gamma, min_weight=b, label_smoothing=eps, form=form, reduction=reduction)
    ref = _reference(hidden, weight, target, bias, **kw)
    ref_grads = _grads(ref, [hidden, weight, bias])
    for chunk in (1, 2, 7, 8, 21, 1024):
        out = chunked_tailr_loss(hidden, weight, target, bias=bias, chunk_size=chunk, **kw)  # type: ignore[arg-type]
        torch.testing.assert_close(out, ref, msg=f"chunk {chunk}")
        for got, want, name in zip(_grads(out, [hidden, weight, bias]), ref_grads, "hwb"):
            torch.testing.assert_close(got, want, msg=f"d{name}, chunk {chunk}")


def test_gamma0_equals_cross_entropy_without_bias_float32(gen: torch.Generator) -> None:
    hidden, weight, _, target = _data(gen, (40,), h=16, v=50, dtype=torch.float32)
    for eps in (0.0, 0.1):
        ref = F.cross_entropy(hidden @ weight.T, target, label_smoothing=eps)
        ref_grads = _grads(ref, [hidden, weight])
        for out in (
            chunked_tailr_loss(hidden, weight, target, gamma=0.0, chunk_size=16, label_smoothing=eps),
            chunked_cross_entropy(hidden, weight, target, chunk_size=16, label_smoothing=eps),
        ):
            torch.testing.assert_close(out, ref)
            for got, want in zip(_grads(out, [hidden, weight]), ref_grads):
                torch.testing.assert_close(got, want)


@given(
    n=st.integers(2, 12),
    v=st.integers(2, 9),
    chunk=st.integers(1, 14),
    gamma=st.sampled_from([0.0, 1e-3, 0.4, 1.0]),
    b=st.sampled_from([0.0, 0.25]),
    seed=st.integers(0, 2**16),
)
def test_property_matches_unchunked(n: int, v: int, chunk: int, gamma: float, b: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, 3, generator=gen, dtype=F64).requires_grad_()
    weight = torch.randn(v, 3, generator=gen, dtype=F64).mul(3).requires_grad_()
    target = torch.randint(0, v, (n,), generator=gen)
    target[0] = -100
    kw = dict(gamma=gamma, min_weight=b)
    out = chunked_tailr_loss(hidden, weight, target, chunk_size=chunk, reduction="sum", **kw)
    ref = tailr_loss(hidden @ weight.T, target, reduction="sum", **kw)
    torch.testing.assert_close(out, ref)
    for got, want in zip(_grads(out, [hidden, weight]), _grads(ref, [hidden, weight])):
        torch.testing.assert_close(got, want)


def test_weight_is_detached_as_in_tailr(gen: torch.Generator) -> None:
    """With b = 0 the weighted rule's gradient is the closed form's; differentiating the weight would differ."""
    hidden, weight, _, target = _data(gen)
    kw = dict(gamma=0.3, chunk_size=4)
    g_weighted = _grads(chunked_tailr_loss(hidden, weight, target, **kw), [hidden, weight])
    g_closed = _grads(chunked_tailr_loss(hidden, weight, target, form="closed", **kw), [hidden, weight])
    for a, c in zip(g_weighted, g_closed):
        torch.testing.assert_close(a, c)
    # negative control: the same loss with the weight NOT detached has a different gradient
    logp = F.log_softmax(hidden.reshape(-1, 5) @ weight.T, 1)
    keep = target.reshape(-1) != -100
    lp = logp[keep].gather(1, target.reshape(-1)[keep, None]).squeeze(1)
    w = torch.exp(lp - torch.log(0.3 + 0.7 * lp.exp()))
    undetached = -(w * lp).mean()
    g_bad = _grads(undetached, [hidden, weight])
    assert not torch.allclose(g_bad[0], g_weighted[0])


@pytest.mark.parametrize("form", ["weighted", "closed"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck(form: str, reduction: str, gen: torch.Generator) -> None:
    """Closed form and γ = 0 are ordinary functions of the inputs (the weighted rule's weight is a stop-gradient)."""
    hidden = torch.randn(2, 3, 3, generator=gen, dtype=F64, requires_grad=True)
    weight = torch.randn(4, 3, generator=gen, dtype=F64, requires_grad=True)
    bias = torch.randn(4, generator=gen, dtype=F64, requires_grad=True)
    target = torch.tensor([[0, 3, -100], [2, 1, 1]])
    gamma = 0.0 if form == "weighted" else 0.4

    def f(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return chunked_tailr_loss(
            h, w, target, gamma=gamma, bias=b, chunk_size=2, label_smoothing=0.1, form=form, reduction=reduction
        )  # type: ignore[arg-type]

    assert torch.autograd.gradcheck(f, (hidden, weight, bias))


# ----------------------------------------------------------------------------------------- reductions


def test_reduction_laws(gen: torch.Generator) -> None:
    hidden, weight, bias, target = _data(gen)
    kw: dict[str, Any] = dict(gamma=0.1, min_weight=0.3, label_smoothing=0.1, bias=bias, chunk_size=4)
    none = chunked_tailr_loss(hidden, weight, target, reduction="none", **kw)
    assert none.shape == target.shape
    assert bool((none[target == -100] == 0).all())
    n_keep = int((target != -100).sum())
    torch.testing.assert_close(chunked_tailr_loss(hidden, weight, target, reduction="sum", **kw), none.sum())
    torch.testing.assert_close(chunked_tailr_loss(hidden, weight, target, **kw), none.sum() / n_keep)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_num_items_in_batch_like_hugging_face(as_tensor: bool, gen: torch.Generator) -> None:
    """sum over non-ignored tokens / the given count; two micro-batches then give the full-batch mean and gradient."""
    hidden, weight, bias, target = _data(gen, (4, 6))
    kw: dict[str, Any] = dict(gamma=1e-7, min_weight=0.2, bias=bias, chunk_size=5)
    n_total = int((target != -100).sum())
    count: Any = torch.tensor(n_total) if as_tensor else n_total
    ref = _reference(hidden, weight, target, bias, gamma=1e-7, min_weight=0.2, reduction="sum") / 17.0
    torch.testing.assert_close(chunked_tailr_loss(hidden, weight, target, num_items_in_batch=17.0, **kw), ref)

    full = chunked_tailr_loss(hidden, weight, target, **kw)
    g_full = _grads(full, [hidden, weight, bias])
    micro = [
        chunked_tailr_loss(hidden[i : i + 2], weight, target[i : i + 2], num_items_in_batch=count, **kw) for i in (0, 2)
    ]
    torch.testing.assert_close(micro[0] + micro[1], full)
    for got, want in zip(_grads(micro[0] + micro[1], [hidden, weight, bias]), g_full):
        torch.testing.assert_close(got, want)


def test_all_targets_ignored(gen: torch.Generator) -> None:
    hidden, weight, _, target = _data(gen, (5,))
    target = torch.full_like(target, -100)
    mean = chunked_tailr_loss(hidden, weight, target, gamma=0.2)
    ref = F.cross_entropy(hidden @ weight.T, target)
    assert bool(torch.isnan(mean)) and bool(torch.isnan(ref))
    mean.backward()
    assert hidden.grad is not None and bool((hidden.grad == 0).all())
    assert weight.grad is not None and bool((weight.grad == 0).all())
    assert float(chunked_tailr_loss(hidden, weight, target, gamma=0.2, reduction="sum").detach()) == 0.0
    assert float(chunked_tailr_loss(hidden, weight, target, gamma=0.2, num_items_in_batch=3).detach()) == 0.0


# ----------------------------------------------------------------------------------------- memory, autograd


def test_no_token_by_vocab_tensor_is_kept_for_backward(gen: torch.Generator) -> None:
    """What the graph keeps is O(N·H + V·H): nothing of the (N, V) logits' size (here N·V = 40 × 500)."""
    n, h, v = 40, 4, 500
    hidden = torch.randn(n, h, generator=gen, requires_grad=True)
    weight = torch.randn(v, h, generator=gen, requires_grad=True)
    target = torch.randint(0, v, (n,), generator=gen)
    for reduction in ("mean", "none"):
        saved: list[int] = []

        def pack(t: torch.Tensor, saved: list[int] = saved) -> torch.Tensor:
            saved.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = chunked_tailr_loss(hidden, weight, target, gamma=0.1, chunk_size=8, reduction=reduction)  # type: ignore[arg-type]
        kept = [t.numel() for t in (out.grad_fn.grads or ()) if t is not None] if reduction == "mean" else []  # type: ignore[union-attr]
        assert max(saved + kept) <= v * h, (reduction, saved, kept)
        # the unchunked path does keep (N, V)-sized tensors: the check can fail
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            tailr_loss(hidden @ weight.T, target, gamma=0.1)
        assert max(saved) >= n * v


def test_frozen_weight_and_no_grad(gen: torch.Generator) -> None:
    hidden, weight, _, target = _data(gen)
    frozen = weight.detach()
    out = chunked_tailr_loss(hidden, frozen, target, gamma=0.1, chunk_size=3)
    (g,) = torch.autograd.grad(out, [hidden])
    ref = tailr_loss(hidden.reshape(-1, 5) @ frozen.T, target.reshape(-1), gamma=0.1)
    torch.testing.assert_close(g, torch.autograd.grad(ref, [hidden])[0])
    with torch.no_grad():
        value = chunked_tailr_loss(hidden, weight, target, gamma=0.1, chunk_size=3)
    assert value.grad_fn is None
    torch.testing.assert_close(value, out.detach())


def test_second_backward_through_retained_graph(gen: torch.Generator) -> None:
    """The first backward hands over the gradients computed in forward; a second one recomputes the same bits."""
    hidden, weight, bias, target = _data(gen)
    out = chunked_tailr_loss(hidden, weight, target, gamma=0.3, bias=bias, chunk_size=4, label_smoothing=0.1)
    first = torch.autograd.grad(2.0 * out, [hidden, weight, bias], retain_graph=True)
    second = torch.autograd.grad(2.0 * out, [hidden, weight, bias])
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_upstream_gradient_scales(gen: torch.Generator) -> None:
    hidden, weight, _, target = _data(gen)
    out = chunked_tailr_loss(hidden, weight, target, gamma=0.5, chunk_size=4)
    ref = _reference(hidden, weight, target, None, gamma=0.5)
    for got, want in zip(
        torch.autograd.grad(3.5 * out, [hidden, weight]), torch.autograd.grad(3.5 * ref, [hidden, weight])
    ):
        torch.testing.assert_close(got, want)


def test_autocast_computes_in_float32(gen: torch.Generator) -> None:
    hidden, weight, bias, target = _data(gen, (6, 5), h=16, v=40, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = chunked_tailr_loss(hidden, weight, target, gamma=0.1, bias=bias, chunk_size=7)
        ref = _reference(hidden, weight, target, bias, gamma=0.1)
    assert out.dtype == torch.float32 and ref.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)
    for got, want in zip(_grads(out, [hidden, weight, bias]), _grads(ref, [hidden, weight, bias])):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2)
    # half inputs without autocast: computed in float32 inside, returned in the input dtype
    half = chunked_tailr_loss(hidden.detach().bfloat16(), weight.detach().bfloat16(), target, gamma=0.1)
    assert half.dtype == torch.bfloat16


def test_extreme_logits_stay_finite(gen: torch.Generator) -> None:
    """Logits of ±1e4 in float32: the in-place max shift keeps the loss and the gradients finite and exact."""
    hidden, weight, _, target = _data(gen, (12,), h=4, v=30, dtype=torch.float32)
    big = (hidden.detach() * 1e3).requires_grad_()
    for gamma, b in ((0.0, 0.0), (1e-7, 0.2), (0.8, 0.0)):
        out = chunked_tailr_loss(big, weight, target, gamma=gamma, min_weight=b, chunk_size=5)
        ref = tailr_loss(big.double() @ weight.double().T, target, gamma=gamma, min_weight=b)
        assert bool(torch.isfinite(out))
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-3)
        assert all(bool(torch.isfinite(g).all()) for g in _grads(out, [big, weight]))


# ----------------------------------------------------------------------------------------- module, docs


def test_module_matches_functional(gen: torch.Generator) -> None:
    hidden, weight, bias, target = _data(gen)
    crit = ChunkedTaiLrLoss(gamma=0.1, min_weight=0.3, label_smoothing=0.1, chunk_size=5)
    torch.testing.assert_close(
        crit(hidden, weight, target, bias=bias, num_items_in_batch=11),
        chunked_tailr_loss(
            hidden, weight, target, gamma=0.1, min_weight=0.3, label_smoothing=0.1, bias=bias, num_items_in_batch=11
        ),
    )
    assert "chunk_size=5" in repr(crit) and "gamma=0.1" in repr(crit)


def test_doctests() -> None:
    assert doctest.testmod(chunked_module, extraglobs={"torch": torch}).failed == 0


# ----------------------------------------------------------------------------------------- errors


def _call(**over: Any) -> torch.Tensor:
    hidden, weight, target = torch.randn(4, 3), torch.randn(6, 3), torch.tensor([0, 1, 5, -100])
    args: dict[str, Any] = dict(hidden=hidden, weight=weight, target=target, gamma=0.1)
    args.update(over)
    return chunked_tailr_loss(args.pop("hidden"), args.pop("weight"), args.pop("target"), **args)


@pytest.mark.parametrize(
    ("over", "err", "match"),
    [
        (dict(hidden=torch.randn(4)), ValueError, r"hidden must have 2 or 3 dimensions"),
        (dict(hidden=torch.ones(4, 3, dtype=torch.long)), TypeError, r"hidden must have a floating-point dtype"),
        (dict(weight=torch.randn(6, 2)), ValueError, r"weight must have shape \(V, 3\)"),
        (dict(weight=torch.randn(6, 3, dtype=F64)), TypeError, r"hidden and weight must have the same dtype"),
        (dict(bias=torch.randn(5)), ValueError, r"bias must have shape \(6,\)"),
        (dict(target=torch.tensor([0, 1, 2])), ValueError, r"target must have shape \(4,\)"),
        (dict(target=torch.zeros(4)), TypeError, r"target must hold integer class indices"),
        (dict(target=torch.tensor([0, 1, 6, -100])), ValueError, r"target holds class index 6"),
        (dict(target=torch.tensor([0, 1, -3, -100])), ValueError, r"target holds class index -3"),
        (dict(chunk_size=0), ValueError, r"chunk_size must be >= 1, got 0"),
        (dict(chunk_size=2.0), TypeError, r"chunk_size must be an integer"),
        (dict(gamma=1.5), ValueError, r"gamma must be <= 1"),
        (dict(min_weight=-0.1), ValueError, r"min_weight must be >= 0"),
        (dict(reduction="avg"), ValueError, r"reduction must be one of"),
        (dict(form="open"), ValueError, r"form must be one of"),
        (dict(form="closed", min_weight=0.2), ValueError, r"form='closed' has no weight floor"),
        (dict(num_items_in_batch=0), ValueError, r"num_items_in_batch must be a finite number > 0, got 0"),
        (dict(num_items_in_batch="7"), TypeError, r"num_items_in_batch must be a positive number"),
        (dict(num_items_in_batch=torch.ones(2)), TypeError, r"num_items_in_batch must be a number or a one-element"),
        (dict(num_items_in_batch=3, reduction="sum"), ValueError, r"num_items_in_batch sets the denominator"),
        (dict(hidden=torch.tensor([[0.0, float("nan"), 0.0]] * 4)), ValueError, r"hidden contains NaN or infinite"),
        (dict(weight=torch.full((6, 3), float("inf"))), ValueError, r"weight contains NaN or infinite"),
        (dict(hidden=torch.full((4, 3), 1e20), weight=torch.full((6, 3), 1e20)), ValueError, r"logits overflowed"),
    ],
)
def test_bad_inputs(over: dict[str, Any], err: type[Exception], match: str) -> None:
    with pytest.raises(err, match=match):
        _call(**over)


def test_bad_module_options() -> None:
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        ChunkedTaiLrLoss(gamma=0.1, chunk_size=-1)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        ChunkedTaiLrLoss(gamma=-1.0)
