"""Regularizers at extreme input scales and on bad inputs and targets: scale-safe probe and difference steps,
labels checked before cross entropy, ``reduction`` on the module forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.regularizers import (
    VAT,
    NoiseConsistencyLoss,
    SmoothnessPenalty,
    fgm_loss,
    gradient_penalty_loss,
    noise_consistency_loss,
    noisy_loss,
    pgd_loss,
    probe_radius,
    smoothness_penalty,
    vat_direction,
    vat_loss,
)

# A power of two: multiplying by it is exact, so the scaled problem holds the same numbers as the unscaled one
# and every answer must agree to the last bits. Its square (2**200) overflows float32.
S = 2.0**100


class _Unscale(nn.Module):
    """``inner(x / S)``: a model whose natural input scale is 1e30."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x * (1.0 / S))


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def _x() -> Tensor:
    return torch.randn(5, 4, generator=torch.Generator().manual_seed(1))


_Y = torch.tensor([0, 1, 2, 0, 1])


# ------------------------------------------------------------------------------------ extreme input scales


@pytest.mark.parametrize("scope", ["per_sample", "global"])
def test_probe_radius_does_not_overflow_at_1e30(scope: str) -> None:
    x = _x()
    # before: ||S x||^2 overflowed float32, the radius was inf and every VAT probe NaN
    got = probe_radius(x * S, 1e-6, scope)  # type: ignore[arg-type]
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, probe_radius(x, 1e-6, scope) * S, rtol=0, atol=0)  # type: ignore[arg-type]


def test_vat_direction_and_loss_at_1e30_equal_the_unscaled_problem() -> None:
    """A model reading inputs of size 1e30 is the unscaled model: the direction and the loss must not move."""
    inner, x = _mlp(), _x()
    d = vat_direction(inner, x, xi=1e-6, generator=torch.Generator().manual_seed(0))
    assert d.abs().sum() > 0  # a real direction (the network is not saturated), not the all-zero answer
    d_s = vat_direction(_Unscale(inner), x * S, xi=1e-6, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(d_s).all()  # before: NaN
    torch.testing.assert_close(d_s, d)
    loss = vat_loss(inner, x, eps=1.0, xi=1e-6, generator=torch.Generator().manual_seed(0))
    loss_s = vat_loss(_Unscale(inner), x * S, eps=S, xi=1e-6, generator=torch.Generator().manual_seed(0))
    assert float(loss.detach()) > 0
    torch.testing.assert_close(loss_s, loss)


@pytest.mark.parametrize("scope", ["global", "per_sample"])
def test_finite_difference_penalty_at_1e30_equals_the_unscaled_problem(scope: str) -> None:
    """``L + eps ||grad_x L||`` with ``x -> S x`` and ``eps -> S eps`` is the same objective: the step ``h`` is
    relative to ``||x||``, so value and parameter gradient must agree (before: ``h = inf``, a NaN loss)."""
    inner, x = _mlp(), _x()

    def run(model: nn.Module, inputs: Tensor, eps: float) -> tuple[Tensor, list[Tensor]]:
        inner.zero_grad()
        loss = gradient_penalty_loss(model, inputs, _Y, eps=eps, form="norm", scope=scope, method="finite_difference")  # type: ignore[arg-type]
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in inner.parameters()]  # type: ignore[union-attr]

    loss, grads = run(inner, x, 1.0)
    loss_s, grads_s = run(_Unscale(inner), x * S, S)
    assert torch.isfinite(loss_s)
    torch.testing.assert_close(loss_s, loss)
    for g_s, g in zip(grads_s, grads, strict=True):
        torch.testing.assert_close(g_s, g, rtol=1e-4, atol=1e-6)


# -------------------------------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x, y: noisy_loss(m, x, y, sigma=0.1),
        lambda m, x, y: gradient_penalty_loss(m, x, y),
        lambda m, x, y: gradient_penalty_loss(m, x, y, method="finite_difference"),
        lambda m, x, y: fgm_loss(m, x, y, eps=0.1),
        lambda m, x, y: pgd_loss(m, x, y, eps=0.1, steps=2),
    ],
    ids=["noisy", "gp", "gp_fd", "fgm", "pgd"],
)
def test_class_targets_are_checked_before_cross_entropy(call) -> None:  # type: ignore[no-untyped-def]
    m, x = _mlp(), _x()
    for bad in (torch.tensor([0, 1, 3, 0, 1]), torch.tensor([0, 1, -2, 0, 1])):  # before: IndexError
        with pytest.raises(ValueError, match=r"target holds class index (3|-2), expected values in \[0, 2\]"):
            call(m, x, bad)
    with pytest.raises(TypeError, match="target must hold integer class indices"):  # before: RuntimeError
        call(m, x, _Y.float())
    assert torch.isfinite(call(m, x, torch.tensor([0, -100, 2, 0, 1])))  # cross entropy's ignore_index
    assert torch.isfinite(call(m, x, torch.softmax(torch.randn(5, 3), -1)))  # class probabilities, as F.cross_entropy


def test_a_custom_loss_fn_reads_its_own_targets() -> None:
    """Only the default cross entropy's labels are checked: a regression target stays the loss_fn's business."""
    m, x = _mlp(), _x()
    y = torch.randn(5, 3)
    torch.testing.assert_close(noisy_loss(m, x, y, sigma=0.0, loss_fn=F.mse_loss), F.mse_loss(m(x), y))
    assert torch.isfinite(fgm_loss(m, x, y, eps=0.1, loss_fn=F.mse_loss))


def test_bad_inputs_are_named_as_the_caller_passed_them() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _mlp()

        def forward(self, a: Tensor, b: Tensor) -> Tensor:
            return self.net(a + b)

    x = _x()
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^inputs contains NaN"):
        fgm_loss(_mlp(), bad, _Y, eps=0.1)
    with pytest.raises(ValueError, match=r"^inputs\[0\] contains NaN"):
        fgm_loss(Two(), (bad, x), _Y, eps=0.1)
    with pytest.raises(ValueError, match=r"inputs\['a'\] contains NaN"):
        fgm_loss(Two(), {"a": bad, "b": x}, _Y, eps=0.1, site="input:a")
    emb = nn.Sequential(nn.Embedding(5, 4), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="inputs must hold a non-empty batch"):  # a hooked site: token ids
        fgm_loss(emb, torch.zeros(0, 1, dtype=torch.long), _Y[:0], eps=0.1, site="embedding")


# -------------------------------------------------------------------------------- module reductions


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_module_forms_take_reduction(reduction: str) -> None:
    m, x = _mlp(), _x()
    torch.testing.assert_close(
        SmoothnessPenalty(reduction=reduction)(m, x),  # type: ignore[arg-type]
        smoothness_penalty(m, x, reduction=reduction),  # type: ignore[arg-type]
    )
    torch.manual_seed(2)
    got = NoiseConsistencyLoss(sigma=0.1, reduction=reduction)(m, x)  # type: ignore[arg-type]
    torch.manual_seed(2)
    torch.testing.assert_close(got, noise_consistency_loss(m, x, sigma=0.1, reduction=reduction))
    torch.manual_seed(3)
    got = VAT(eps=1.0, xi=1e-3, reduction=reduction)(m, x)  # type: ignore[arg-type]
    torch.manual_seed(3)
    torch.testing.assert_close(got, vat_loss(m, x, eps=1.0, xi=1e-3, reduction=reduction))  # type: ignore[arg-type]
    assert got.shape == ((5,) if reduction == "none" else ())
    assert f"reduction={reduction!r}" in repr(VAT(reduction=reduction))  # type: ignore[arg-type]
