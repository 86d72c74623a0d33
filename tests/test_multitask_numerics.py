"""Numerics of the gradient-combination rules: scale safety (gradients of size 1e+-20 and 1e+-30 in float32
and float64, whose squares overflow or underflow) and integer inputs (rejected, never truncated)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from _multitask_toy import ToyMTL, flat, toy_data
from kexue.losses import multitask as mt

DTYPES = [torch.float32, torch.float64]
FACTORS = [1e20, 1e-20, 1e30, 1e-30]


def _grads(dtype: torch.dtype, n: int = 3, d: int = 7, seed: int = 0) -> Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 2e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}


def _close(a: Tensor, b: Tensor, dtype: torch.dtype) -> None:
    """Compare in float64, relative to the size of ``b`` (the values may be 1e30 or 1e-30)."""
    a64, b64 = a.double(), b.double()
    s = float(b64.abs().max()) or 1.0
    torch.testing.assert_close(a64 / s, b64 / s, **_tol(dtype))


# ---------------------------------------------------------------------------- all gradients scaled by c


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", FACTORS)
def test_gradient_normalization_all_scaled(dtype: torch.dtype, c: float) -> None:
    G = _grads(dtype)
    u_ref, w_ref = mt.gradient_normalization(G)
    u, w = mt.gradient_normalization(G * c)
    assert u.dtype == w.dtype == dtype
    _close(u, u_ref, dtype)  # Eq. 13 does not change when every loss is rescaled
    _close(w * c, w_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", FACTORS)
def test_gradient_normalization_one_task_scaled(dtype: torch.dtype, c: float) -> None:
    """A task whose gradient is c times larger counts exactly as much (its norm used to overflow to inf in
    float32 for c = 1e20, giving it weight 0)."""
    G = _grads(dtype)
    u_ref, w_ref = mt.gradient_normalization(G)
    Gs = G.clone()
    Gs[1] *= c
    u, w = mt.gradient_normalization(Gs)
    _close(u, u_ref, dtype)
    assert float(w[1]) > 0
    _close(w[[0, 2]], w_ref[[0, 2]], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", FACTORS)
def test_mgda_direction_all_scaled(dtype: torch.dtype, c: float) -> None:
    """MGDA on gradients of size 1e20 used to raise numpy's "argmax of an empty sequence" (the Gram matrix
    overflowed to inf in float32)."""
    G = _grads(dtype, n=4)
    u_ref, a_ref = mt.mgda_direction(G, max_iter=5000, tol=1e-14)
    u, a = mt.mgda_direction(G * c, max_iter=5000, tol=1e-14)
    assert u.dtype == a.dtype == dtype
    _close(a, a_ref, dtype)
    _close(u, u_ref * c, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", FACTORS)
def test_mgda_direction_one_task_scaled(dtype: torch.dtype, c: float) -> None:
    """Rows of very different size: the answer matches the float64 Gram-matrix solution (exact there, as
    (1e30)^2 = 1e60 fits float64) and is non-conflicting."""
    G = _grads(torch.float64, n=4)
    G[2] *= c
    a_ref = mt.min_norm_coefficients(G @ G.T, max_iter=5000, tol=1e-14)
    u, a = mt.mgda_direction(G.to(dtype), max_iter=5000, tol=1e-14)
    assert torch.isfinite(u).all() and torch.isfinite(a).all()
    torch.testing.assert_close(a.double(), a_ref, rtol=0, atol=_tol(dtype)["rtol"])
    u64 = u.double()
    scale = float((G * G).sum(1).max())
    assert ((G @ u64) >= (u64 @ u64) - 1e-4 * scale).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", FACTORS)
def test_primary_auxiliary_projection_scaled(dtype: torch.dtype, c: float) -> None:
    G = _grads(dtype, n=4)
    G[1] = -G[0] + 0.1 * G[1]  # make sure at least one auxiliary conflicts
    u_ref, lam_ref = mt.primary_auxiliary_projection(G[0], G[1:])
    assert float(lam_ref.max()) > 0
    u, lam = mt.primary_auxiliary_projection(G[0] * c, G[1:] * c)  # all scaled: lambda unchanged
    _close(lam, lam_ref, dtype)
    _close(u, u_ref * c, dtype)
    aux = G[1:].clone()
    aux[0] *= c  # one auxiliary scaled: lambda_1 scales by 1/c, the direction is unchanged
    u2, lam2 = mt.primary_auxiliary_projection(G[0], aux)
    _close(u2, u_ref, dtype)
    _close(lam2[0:1] * c, lam_ref[0:1], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", FACTORS)
def test_l2_auxiliary_projection_scaled(dtype: torch.dtype, c: float) -> None:
    g, theta = _grads(dtype, n=2)
    g = g - 2 * theta  # conflicting with theta, so the projection acts
    u_ref = mt.l2_auxiliary_projection(g, theta)
    assert not torch.equal(u_ref, g)
    _close(mt.l2_auxiliary_projection(g * c, theta), u_ref * c, dtype)
    _close(mt.l2_auxiliary_projection(g, theta * c), u_ref, dtype)  # invariant to the size of theta


@pytest.mark.parametrize("c", [1e60, 1e-60, 1e150, 1e-150])
def test_gram_solvers_are_invariant_to_the_gram_scale_float64(c: float) -> None:
    G = _grads(torch.float64, n=4)
    M = G @ G.T
    torch.testing.assert_close(mt.min_norm_coefficients(M * c), mt.min_norm_coefficients(M), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        mt.primary_auxiliary_coefficients(M * c), mt.primary_auxiliary_coefficients(M), rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("c", [1e30, 1e-30])
def test_gram_solvers_are_invariant_to_the_gram_scale_float32(c: float) -> None:
    G = _grads(torch.float32, n=4)
    M = G @ G.T
    torch.testing.assert_close(mt.min_norm_coefficients(M * c), mt.min_norm_coefficients(M), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        mt.primary_auxiliary_coefficients(M * c), mt.primary_auxiliary_coefficients(M), rtol=1e-5, atol=1e-6
    )


# ------------------------------------------------------------------------------------ through the strategies


def _shared_grad(name: str, factors: list[float], dtype: torch.dtype) -> Tensor:
    model = ToyMTL(dtype=dtype)
    x, y = toy_data(dtype=dtype)
    ls = [f * loss for f, loss in zip(factors, model.losses(x, y))]
    mt.make_strategy(name, 3).to(dtype).backward(ls, model.trunk.parameters())
    return flat([p.grad for p in model.trunk.parameters()])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [1e20, 1e-20])
def test_gradient_normalization_strategy_keeps_a_task_scaled_by_c(dtype: torch.dtype, c: float) -> None:
    """GradientNormalization used to drop a task whose loss was scaled by 1e20 in float32 (norm -> inf)
    and one scaled by 1e-20 (norm << eps); Eq. 13 is invariant to both."""
    ref = _shared_grad("gradient_normalization", [1.0, 1.0, 1.0], dtype)
    got = _shared_grad("gradient_normalization", [1.0, c, 1.0], dtype)
    _close(got, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [1e20, 1e-20])
def test_mgda_strategy_with_all_losses_scaled(dtype: torch.dtype, c: float) -> None:
    ref = _shared_grad("mgda", [1.0, 1.0, 1.0], dtype)
    got = _shared_grad("mgda", [c, c, c], dtype)
    _close(got, ref * c, dtype)


def test_bfloat16_gradients_with_many_entries() -> None:
    """Sums of squares of 16-bit numbers are accumulated in float32 (2e5 ones overflow float16's 65504)."""
    G = torch.ones(2, 200_000, dtype=torch.bfloat16)
    G[1] *= -0.5
    u, w = mt.gradient_normalization(G)
    torch.testing.assert_close(w.float(), torch.tensor([1.0, 2.0]) / 200_000**0.5, rtol=1e-2, atol=0)
    torch.testing.assert_close(u.float(), torch.zeros(200_000), rtol=0, atol=1e-2)
    _, a = mt.mgda_direction(G)
    torch.testing.assert_close(a.float(), torch.tensor([1 / 3, 2 / 3]), rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------------------------------ integer inputs


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_float_inputs_are_rejected_not_truncated(dtype: torch.dtype) -> None:
    """min_norm_coefficients([[1, 0], [0, 4]]) used to return the integer tensor [0, 0] instead of
    [0.8, 0.2]; every combination rule now rejects a non-floating input with a TypeError naming it."""
    gram = torch.tensor([[1, 0], [0, 4]]).to(dtype)
    G = torch.tensor([[1, 0, 2], [0, 3, 1]]).to(dtype)
    Gf = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]])
    with pytest.raises(TypeError, match=r"gram must have a floating-point dtype"):
        mt.min_norm_coefficients(gram)
    with pytest.raises(TypeError, match=r"gram must have a floating-point dtype"):
        mt.primary_auxiliary_coefficients(gram)
    with pytest.raises(TypeError, match=r"grads must have a floating-point dtype"):
        mt.mgda_direction(G)
    with pytest.raises(TypeError, match=r"grads must have a floating-point dtype"):
        mt.gradient_normalization(G)
    with pytest.raises(TypeError, match=r"primary must have a floating-point dtype"):
        mt.primary_auxiliary_projection(G[0], Gf[1:])
    with pytest.raises(TypeError, match=r"auxiliary must have a floating-point dtype"):
        mt.primary_auxiliary_projection(Gf[0], G[1:])
    with pytest.raises(TypeError, match=r"grad must have a floating-point dtype"):
        mt.l2_auxiliary_projection(G[0], Gf[1])
    with pytest.raises(TypeError, match=r"param must have a floating-point dtype"):
        mt.l2_auxiliary_projection(Gf[0], G[1])


def test_float_versions_of_the_integer_examples() -> None:
    torch.testing.assert_close(
        mt.min_norm_coefficients(torch.tensor([[1.0, 0.0], [0.0, 4.0]])), torch.tensor([0.8, 0.2])
    )
    u, lam = mt.primary_auxiliary_projection(torch.tensor([1.0, -1.0]), torch.tensor([[0.0, 2.0]]))
    torch.testing.assert_close(lam, torch.tensor([0.5]))  # relu(2) / 4
    torch.testing.assert_close(u, torch.tensor([1.0, 0.0]))


def test_integer_hyperparameter_vectors_are_promoted() -> None:
    """Weights and normalisers are numbers chosen by the user: ints become floats (not truncated)."""
    L = [torch.tensor(1.0), torch.tensor(3.0)]
    torch.testing.assert_close(mt.weighted_sum(L, torch.tensor([1, 2])).weights, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(mt.normalized_sum(L, [2, 4]).loss, torch.tensor(0.5 + 0.75))
    torch.testing.assert_close(mt.WeightedSum(2, weights=[1, 3]).weights, torch.tensor([1.0, 3.0]))


def test_zero_gradients_contribute_nothing() -> None:
    """eps = 0 (the article's formula) with an all-zero task gradient: no division by zero."""
    G = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    u, w = mt.gradient_normalization(G)
    torch.testing.assert_close(u, torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(w, torch.tensor([0.0, 0.2]))
    torch.testing.assert_close(
        mt.l2_auxiliary_projection(torch.tensor([1.0, 2.0]), torch.zeros(2)), torch.tensor([1.0, 2.0])
    )
    u, a = mt.mgda_direction(torch.zeros(3, 4))
    torch.testing.assert_close(u, torch.zeros(4))
    torch.testing.assert_close(a.sum(), torch.tensor(1.0))
