"""Tests for kexue.ops.topk (https://kexue.fm/archives/10373): properties, references, gradients, errors."""

from __future__ import annotations

import doctest
import time

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import _reference_topk as ref
import kexue.ops.topk as topk_module
from kexue.ops import SoftTopK, soft_topk
from kexue.ops.topk import ITERATIVE_MAX_K

ALL = ["iterative", "gradtopk", "exp", "sigmoid", "laplace"]
PROPER = ["gradtopk", "exp", "sigmoid", "laplace"]  # the constructions with a proven range / monotonicity
THRESHOLD = ["exp", "sigmoid", "laplace"]


# ----------------------------------------------------------------------------------------------------------
# hypothesis strategies


@st.composite
def rows_and_k(draw: st.DrawFn, *, max_n: int = 12, lo: float = -6.0, hi: float = 6.0) -> tuple[torch.Tensor, int]:
    n = draw(st.integers(2, max_n))
    b = draw(st.integers(1, 3))
    vals = draw(st.lists(st.floats(lo, hi, allow_nan=False, allow_infinity=False), min_size=n * b, max_size=n * b))
    k = draw(st.integers(0, n))
    return torch.tensor(vals, dtype=torch.float64).reshape(b, n), k


@st.composite
def tie_free(draw: st.DrawFn, *, max_n: int = 10) -> tuple[torch.Tensor, int]:
    """Rows of distinct values at least 0.1 apart (a random permutation of a spaced grid)."""
    n = draw(st.integers(2, max_n))
    gaps = draw(st.lists(st.floats(0.1, 2.0), min_size=n - 1, max_size=n - 1))
    start = draw(st.floats(-3.0, 3.0))
    vals = torch.tensor([start, *gaps], dtype=torch.float64).cumsum(0)
    perm = draw(st.permutations(list(range(n))))
    k = draw(st.integers(1, n - 1))
    return vals[list(perm)], k


# ----------------------------------------------------------------------------------------------------------
# the article's property table


@pytest.mark.parametrize("method", ALL)
@given(data=rows_and_k())
def test_sum_is_k(method: str, data: tuple[torch.Tensor, int]) -> None:
    x, k = data
    p = soft_topk(x, k, method=method)
    torch.testing.assert_close(p.sum(-1), torch.full_like(p[:, 0], float(k)), rtol=0, atol=1e-10 * max(k, 1))


@pytest.mark.parametrize("method", PROPER)
@given(data=rows_and_k())
def test_range(method: str, data: tuple[torch.Tensor, int]) -> None:
    x, k = data
    p = soft_topk(x, k, method=method)
    assert bool((p >= 0).all())
    assert bool((p <= 1).all())


@pytest.mark.parametrize("method", PROPER)
@given(data=rows_and_k())
def test_monotone_and_ties_symmetric(method: str, data: tuple[torch.Tensor, int]) -> None:
    x, k = data
    p = soft_topk(x, k, method=method)
    order = x.argsort(-1)
    xs, ps = x.gather(-1, order), p.gather(-1, order)
    # x_i <= x_j implies p_i <= p_j (up to rounding); equal x implies equal p
    assert bool((ps[:, 1:] - ps[:, :-1] >= -1e-12).all())
    tied = xs[:, 1:] == xs[:, :-1]
    assert bool(((ps[:, 1:] - ps[:, :-1]).abs()[tied] <= 1e-12).all())


@pytest.mark.parametrize("method", ["gradtopk", "sigmoid", "laplace"])
@given(data=tie_free())
def test_strictly_monotone(method: str, data: tuple[torch.Tensor, int]) -> None:
    x, k = data
    p = soft_topk(x, k, method=method)
    order = x.argsort()
    assert bool((p[order].diff() > 0).all())


def test_exp_only_weakly_monotone() -> None:
    # [ours] min(1, e^t) saturates: the m largest entries all equal exactly 1, with zero gradient
    x = torch.tensor([5.0, 4.0, 0.0, -1.0], dtype=torch.float64, requires_grad=True)
    p = soft_topk(x, 3, method="exp")
    assert p[0].item() == 1.0
    assert p[1].item() == 1.0
    (g,) = torch.autograd.grad(p[0], x)
    assert bool((g == 0).all())


@pytest.mark.parametrize("method", ALL)
@given(data=rows_and_k(), shift=st.floats(-50, 50))
def test_shift_invariance(method: str, data: tuple[torch.Tensor, int], shift: float) -> None:
    x, k = data
    torch.testing.assert_close(
        soft_topk(x + shift, k, method=method), soft_topk(x, k, method=method), atol=1e-9, rtol=0
    )


@pytest.mark.parametrize("method", ALL)
@given(data=tie_free())
def test_limit_is_hard_topk(method: str, data: tuple[torch.Tensor, int]) -> None:
    x, k = data
    hard = torch.zeros_like(x).scatter(0, x.topk(k).indices, 1.0)
    p = soft_topk(x, k, method=method, temperature=1e-3)
    torch.testing.assert_close(p, hard, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["gradtopk", "exp", "iterative"])
@given(data=rows_and_k())
def test_k1_is_softmax(method: str, data: tuple[torch.Tensor, int]) -> None:
    x, _ = data
    torch.testing.assert_close(soft_topk(x, 1, method=method), torch.softmax(x, -1), atol=1e-12, rtol=1e-10)


@given(data=rows_and_k())
def test_laplace_k1_softmax_iff_max_prob_at_most_half(data: tuple[torch.Tensor, int]) -> None:
    x, _ = data
    p = soft_topk(x, 1, method="laplace")
    s = torch.softmax(x, -1)
    for row in range(x.shape[0]):
        pmax = float(s[row].max())
        diff = float((p[row] - s[row]).abs().max())
        if pmax <= 0.5 - 1e-9:
            assert diff < 1e-12
        elif pmax >= 0.5 + 1e-3:
            assert diff > 1e-6


def test_laplace_k1_article_numbers() -> None:
    # spec 8.4 C3: k=1 differs from softmax once the max softmax probability exceeds 1/2
    x = torch.tensor([4.0, 1.0, 0.0, -1.0], dtype=torch.float64)
    p = soft_topk(x, 1, method="laplace")
    s = torch.softmax(x, -1)
    assert float(s.max()) > 0.5
    assert float((p - s).abs().max()) > 0.01
    top = x[0]
    lam = 0.5 * (top + torch.logsumexp(x[1:], 0))  # the m = 1 branch
    torch.testing.assert_close(p[1:], 0.5 * torch.exp(x[1:] - lam))


def test_sigmoid_k1_is_not_softmax() -> None:
    x = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    assert float((soft_topk(x, 1, method="sigmoid") - torch.softmax(x, -1)).abs().max()) > 1e-3


# ----------------------------------------------------------------------------------------------------------
# any finite temperature: exact sum, the hard limit, ties, finite and correct gradients


@pytest.mark.parametrize("method", THRESHOLD)
@pytest.mark.parametrize(
    ("dtype", "temperature"), [(torch.float32, 1e-8), (torch.float32, 1e-7), (torch.float64, 1e-16)]
)
def test_issue_example_sum_is_k_at_tiny_temperature(method: str, dtype: torch.dtype, temperature: float) -> None:
    # regression: |x| / temperature above ~1e7 (float32) or ~1e16 (float64) gave sum 0.5 (sigmoid, Laplace)
    # or 1 (exp) instead of 3
    x = torch.randn(4, 10, generator=torch.Generator().manual_seed(0), dtype=dtype)
    p = soft_topk(x, 3, method=method, temperature=temperature)
    hard = torch.zeros_like(x).scatter(-1, x.topk(3, -1).indices, 1.0)
    torch.testing.assert_close(p, hard, atol=0, rtol=0)


@st.composite
def extreme_rows(draw: st.DrawFn) -> tuple[torch.Tensor, int, float]:
    """Rows at spreads 1e-4 .. 1e30 (random or with ties) and a temperature 1e-30 .. 1e30."""
    n = draw(st.integers(2, 8))
    k = draw(st.integers(1, n - 1))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    spread = 10.0 ** draw(st.integers(-4, 30))
    temperature = 10.0 ** draw(st.integers(-30, 30))
    if draw(st.booleans()):
        base = torch.randint(0, 3, (2, n), generator=gen).double()  # ties, also across the k-th value
    else:
        base = torch.randn(2, n, generator=gen, dtype=torch.float64)
    return base * spread, k, temperature


@pytest.mark.parametrize("method", THRESHOLD)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(data=extreme_rows())
def test_threshold_exact_at_any_temperature(method: str, dtype: torch.dtype, data: tuple) -> None:
    x64, k, temperature = data
    x = x64.to(dtype).requires_grad_(True)
    g = torch.linspace(-1, 1, x.shape[-1], dtype=dtype).roll(k).expand_as(x)
    p = soft_topk(x, k, method=method, temperature=temperature)
    (grad,) = torch.autograd.grad((p * g).sum(), x)
    fi = torch.finfo(dtype)
    assert bool(torch.isfinite(p).all())
    assert bool(torch.isfinite(grad).all())
    assert bool(((p >= 0) & (p <= 1)).all())
    n = x.shape[-1]
    torch.testing.assert_close(
        p.double().sum(-1), torch.full((2,), float(k), dtype=torch.float64), atol=8 * n * fi.eps, rtol=0
    )
    for row in range(2):
        # the reference sees the same (rounded) scores; it anchors and sums the residual exactly in float64
        ref_p, ref_w = ref.threshold_any_temperature(x[row].detach(), k, method, temperature)
        torch.testing.assert_close(p[row].double(), ref_p, atol=1e-5 if dtype == torch.float32 else 1e-10, rtol=0)
        ref_grad = ref.threshold_vjp(ref_w, g[row].double(), temperature)
        # normwise: entries far below the largest carry its rounding; a w or a gradient below the dtype's normal
        # range has few bits and is bounded absolutely
        rtol = 1e-3 if dtype == torch.float32 else 1e-7
        atol = rtol * float(ref_grad.abs().max()) + 8 * fi.tiny / temperature + 4 * fi.tiny * fi.eps
        torch.testing.assert_close(grad[row].double(), ref_grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("method", [*THRESHOLD, "gradtopk"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [1e-3, 1e-8, 1e-30, 5e-324])
def test_limit_splits_ties_evenly(method: str, dtype: torch.dtype, temperature: float) -> None:
    # the hard limit at ties is the tie-split mask: 3 entries tied for the last 2 places share them
    x = torch.tensor([[4.0, 1.0, 1.0, 1.0, -2.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=dtype)
    x = x.requires_grad_(True)
    p = soft_topk(x, 3, method=method, temperature=temperature)
    expected = torch.tensor([[1.0, 2 / 3, 2 / 3, 2 / 3, 0.0, 0.0], [0.5] * 6], dtype=dtype)
    torch.testing.assert_close(p, expected, atol=1e-6 if dtype == torch.float32 else 1e-12, rtol=0)
    (grad,) = torch.autograd.grad((p * torch.arange(6.0, dtype=dtype)).sum(), x)
    assert not bool(grad.isnan().any())
    if temperature >= 1e-30:
        # at ties the gradient is O(1 / temperature): finite wherever that is (below, it overflows to inf)
        assert bool(torch.isfinite(grad).all())


@pytest.mark.parametrize("method", THRESHOLD)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_on_the_rounding_plateau_matches_reference(method: str, dtype: torch.dtype) -> None:
    # a gap of 60 temperatures between the k-th and (k+1)-th scores: the top entries round to exactly 1 and
    # sum p - k is 0 to rounding over a wide range of lambda, yet f' ~ e^-30 there (sigmoid, Laplace) and the
    # gradient ~ e^-30 / temperature ~ 1e17 is well defined; a solver that stops on "sum p == k" lands anywhere
    # on that plateau and returns a gradient off by orders of magnitude. For exp the threshold sits e^-60 above
    # the k-th score, just below the kink
    temperature = 1e-30
    x = (torch.tensor([[100.0, 60.0, 0.0, -10.0, -50.0]], dtype=torch.float64) * temperature).to(dtype)
    x.requires_grad_(True)
    g = torch.tensor([[0.3, -1.0, 2.0, 0.5, 1.0]], dtype=dtype)
    p = soft_topk(x, 2, method=method, temperature=temperature)
    (grad,) = torch.autograd.grad((p * g).sum(), x)
    _, ref_w = ref.threshold_any_temperature(x[0].detach(), 2, method, temperature)
    expected = ref.threshold_vjp(ref_w, g[0].double(), temperature)
    scale = float(expected.abs().max())
    assert scale > (1e3 if method == "exp" else 1e10)  # a large gradient, not zero (exp: ~ e^-60 / temperature)
    torch.testing.assert_close(grad[0].double(), expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("method", [*THRESHOLD, "gradtopk"])
def test_float32_temperature_below_its_range(method: str) -> None:
    # 1e-40 is not a normal float32: x / t would be 0 / 0 or use an infinite reciprocal
    x = torch.tensor([[3.0, 1.0, 2.0, 2.0, -1.0]], requires_grad=True)
    p = soft_topk(x, 2, method=method, temperature=1e-40)
    torch.testing.assert_close(p, torch.tensor([[1.0, 0.0, 0.5, 0.5, 0.0]]))
    p.sum().backward()
    assert bool(torch.isfinite(x.grad).all())  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------
# tensor (learnable) temperature


@pytest.mark.parametrize("method", ALL)
def test_tensor_temperature_matches_float(method: str, gen: torch.Generator) -> None:
    x = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    tau = torch.tensor(0.7, dtype=torch.float64)
    torch.testing.assert_close(
        soft_topk(x, 3, method=method, temperature=tau), soft_topk(x, 3, method=method, temperature=0.7)
    )


@pytest.mark.parametrize("method", ALL)
def test_gradcheck_tensor_temperature(method: str, gen: torch.Generator) -> None:
    x = _gc_input(6, gen)
    tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t, s: soft_topk(t, 3, method=method, temperature=s), (x, tau))


@pytest.mark.parametrize("method", THRESHOLD)
def test_gradgradcheck_tensor_temperature(method: str, gen: torch.Generator) -> None:
    x = _gc_input(5, gen)
    tau = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    assert gradgradcheck(lambda t, s: soft_topk(t, 2, method=method, temperature=s), (x, tau))


@pytest.mark.parametrize("method", [*THRESHOLD, "gradtopk"])
def test_tensor_temperature_gradient_finite_when_scores_overflow(method: str) -> None:
    # (x - a) / t overflows float32 here; autograd's own division backward would form 0 * inf = NaN for t
    x = torch.tensor([[1e30, -1e30, 0.0, 5e-30, 3e-30]], requires_grad=True)
    tau = torch.tensor(1e-30, requires_grad=True)
    p = soft_topk(x, 3, method=method, temperature=tau)
    (p * torch.tensor([[1.0, 2.0, -1.0, 0.5, 3.0]])).sum().backward()
    assert bool(torch.isfinite(x.grad).all())  # type: ignore[arg-type]
    assert tau.grad is not None
    assert bool(torch.isfinite(tau.grad))
    assert float(tau.grad) != 0.0  # the entries 0, 5e-30, 3e-30 compete for the last place


def test_learnable_temperature_in_module(gen: torch.Generator) -> None:
    m = SoftTopK(2, method="sigmoid", temperature=nn.Parameter(torch.tensor(1.5)))
    assert [name for name, _ in m.named_parameters()] == ["temperature"]
    x = torch.randn(4, 6, generator=gen)
    (m(x) * torch.randn(4, 6, generator=gen)).sum().backward()
    assert m.temperature.grad is not None  # type: ignore[union-attr]
    assert float(m.temperature.grad) != 0.0  # type: ignore[union-attr,arg-type]
    buffered = SoftTopK(2, temperature=torch.tensor(0.5))
    assert [name for name, _ in buffered.named_buffers()] == ["temperature"]
    torch.testing.assert_close(buffered(x), soft_topk(x, 2, temperature=0.5))
    assert "temperature=tensor(0.5)" in repr(buffered)


# ----------------------------------------------------------------------------------------------------------
# references


@pytest.mark.parametrize("n", [2, 5, 8, 10])
def test_gradtopk_bruteforce(n: int, gen: torch.Generator) -> None:
    x = torch.randn(n, generator=gen, dtype=torch.float64) * 2
    for k in range(1, n):
        torch.testing.assert_close(
            soft_topk(x, k, method="gradtopk"), ref.gradtopk_bruteforce(x, k), atol=1e-12, rtol=0
        )


def test_gradtopk_bruteforce_with_ties() -> None:
    x = torch.tensor([1.0, 1.0, 0.5, 0.5, 0.5, -2.0], dtype=torch.float64)
    torch.testing.assert_close(soft_topk(x, 3, method="gradtopk"), ref.gradtopk_bruteforce(x, 3), atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", THRESHOLD)
@given(data=rows_and_k(max_n=9))
def test_threshold_matches_bisection(method: str, data: tuple[torch.Tensor, int]) -> None:
    x, k = data
    p = soft_topk(x, k, method=method)
    expected = torch.stack([ref.threshold_bisection(row, k, method)[0] for row in x])
    torch.testing.assert_close(p, expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_exp_large_k_matches_bisection(temperature: float, gen: torch.Generator) -> None:
    # k above the solver's first head of 16 values; at low temperature more than 16 entries saturate
    x = torch.randn(3, 120, generator=gen, dtype=torch.float64)
    p = soft_topk(x, 40, method="exp", temperature=temperature)
    expected = torch.stack([ref.threshold_bisection(row / temperature, 40, "exp")[0] for row in x])
    torch.testing.assert_close(p, expected, atol=1e-9, rtol=0)
    assert int((p == 1).sum(-1).max()) > (16 if temperature < 1 else -1)


def test_iterative_matches_loop(gen: torch.Generator) -> None:
    x = torch.randn(7, generator=gen, dtype=torch.float64) * 3
    for k in range(1, 7):
        torch.testing.assert_close(soft_topk(x, k, method="iterative"), ref.iterative_loop(x, k))


def test_laplace_matches_article_code_where_it_works(gen: torch.Generator) -> None:
    for _ in range(20):
        x = torch.randn(12, generator=gen, dtype=torch.float64) * 2
        for k in range(1, 7):  # k <= n/2: the article's code is correct there
            expected = torch.from_numpy(ref.article_laplace(x.numpy(), k))
            torch.testing.assert_close(soft_topk(x, k, method="laplace"), expected, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# the article's (and its code's) known flaws, pinned as regression facts


def test_iterative_range_violation() -> None:
    # spec 8.2 [ours]: x=[-1.6, -4.6, 2.9, -3.3], k=2 gives p=[0.782, 0.040, 1.030, 0.147]
    x = torch.tensor([-1.6, -4.6, 2.9, -3.3], dtype=torch.float64)
    p = soft_topk(x, 2, method="iterative")
    torch.testing.assert_close(p, torch.tensor([0.782, 0.040, 1.030, 0.147], dtype=torch.float64), atol=1e-3, rtol=0)
    assert float(p[2]) > 1


def test_iterative_monotonicity_violation() -> None:
    # spec 8.2 [ours]: x=[0, 3, 6, 9], k=2 gives [0.003, 0.064, 0.978, 0.955]: the largest gets less than the
    # second
    x = torch.tensor([0.0, 3.0, 6.0, 9.0], dtype=torch.float64)
    p = soft_topk(x, 2, method="iterative")
    torch.testing.assert_close(p, torch.tensor([0.003, 0.064, 0.978, 0.955], dtype=torch.float64), atol=1e-3, rtol=0)
    assert float(p[3]) < float(p[2])


def test_stackexchange_wrong_limit() -> None:
    # spec 8.2: the weighted-softmax iteration tends to 1.5 / 0.5 instead of the hard mask
    p = ref.stackexchange_iteration(torch.tensor([3.0, 2.0, 1.0, 4.0]) / 0.1, 2)
    torch.testing.assert_close(p, torch.tensor([0.5, 0.0, 0.0, 1.5], dtype=torch.float64), atol=1e-3, rtol=0)


def test_article_gradtopk_recursion_breaks_ours_does_not(gen: torch.Generator) -> None:
    x = (torch.randn(100, generator=gen, dtype=torch.float64) * 10).numpy()
    article = ref.article_gradtopk(x, 10)
    assert not np.isfinite(article).all() or article.max() > 1 + 1e-6  # NaN or range violation
    ours = soft_topk(torch.from_numpy(x), 10, method="gradtopk")
    assert bool(torch.isfinite(ours).all())
    assert float(ours.max()) <= 1
    torch.testing.assert_close(ours.sum(), torch.tensor(10.0, dtype=torch.float64))


def test_article_laplace_misses_k_above_half() -> None:
    # all entries above lambda: only possible for k > n/2; the article's candidate scan has no such candidate
    x = np.array([0.3, 0.2, 0.1, 0.0])
    with pytest.raises(ValueError, match="0 consistent"):
        ref.article_laplace(x, 3)
    p = soft_topk(torch.from_numpy(x), 3, method="laplace")
    assert float(p.min()) > 0.5
    torch.testing.assert_close(p.sum(), torch.tensor(3.0, dtype=torch.float64))
    torch.testing.assert_close(p, ref.threshold_bisection(torch.from_numpy(x), 3, "laplace")[0])


def test_laplace_more_than_k_entries_above_lambda() -> None:
    # three tied entries share k = 2, each f = 2/3 > 1/2: three entries above lambda, one more than the top k + 1
    # head read first holds candidates for, so the longer head (top 2k) is read; per-row k mixes both cases
    x = torch.tensor([[0.0, 0.0, 0.0, -50.0, -60.0], [3.0, 1.0, 0.0, -1.0, -2.0]], dtype=torch.float64)
    for k in (2, torch.tensor([2, 1])):
        p = soft_topk(x, k, method="laplace")
        kk = torch.as_tensor(k).expand(2)
        for r in range(2):
            torch.testing.assert_close(p[r], ref.threshold_bisection(x[r], int(kk[r]), "laplace")[0])
    torch.testing.assert_close(p[0, :3], torch.full((3,), 2 / 3, dtype=torch.float64))
    xg = x.clone().requires_grad_(True)
    assert gradcheck(lambda t: soft_topk(t, 2, method="laplace"), (xg,))


@pytest.mark.parametrize("n", [8192, 20_011])  # a multiple of the chunk size, and a prime (a tail of the row)
@pytest.mark.parametrize("h", [2, 11, 40])
def test_largest_matches_topk_values_on_long_rows_with_ties(n: int, h: int, gen: torch.Generator) -> None:
    # many ties (integers), the maxima clustered in one chunk in the second row
    x = torch.randint(0, 300, (2, n), generator=gen).double()
    x[1, 100:140] = 1000.0
    vals, idx = topk_module._largest(x, h)
    torch.testing.assert_close(vals, x.topk(h).values, rtol=0, atol=0)
    torch.testing.assert_close(x.gather(-1, idx), vals, rtol=0, atol=0)
    assert bool((idx.sort(-1).values.diff(dim=-1) > 0).all())  # distinct positions


@pytest.mark.parametrize("method", THRESHOLD)
def test_long_rows_match_the_plain_topk_head(
    method: str, gen: torch.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = torch.randn(2, 16384, generator=gen, dtype=torch.float64).requires_grad_(True)
    g = torch.randn(2, 16384, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad((soft_topk(x, 7, method=method) * g).sum(), x)
    p = soft_topk(x, 7, method=method)
    monkeypatch.setattr(topk_module, "_largest", lambda t, h: t.topk(h, dim=-1))
    (grad_ref,) = torch.autograd.grad((soft_topk(x, 7, method=method) * g).sum(), x)
    torch.testing.assert_close(p, soft_topk(x, 7, method=method))
    torch.testing.assert_close(grad, grad_ref)


def test_article_laplace_breaks_on_ties() -> None:
    x = np.array([3.0, 2.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="consistent"):
        ref.article_laplace(x, 2)
    p = soft_topk(torch.from_numpy(x), 2, method="laplace")
    assert float(p[1]) == float(p[2])
    torch.testing.assert_close(p, ref.threshold_bisection(torch.from_numpy(x), 2, "laplace")[0])


# ----------------------------------------------------------------------------------------------------------
# gradients


def _gc_input(n: int, gen: torch.Generator, b: int = 2) -> torch.Tensor:
    return (torch.randn(b, n, generator=gen, dtype=torch.float64) * 1.5).requires_grad_(True)


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("k", [1, 3, 5])
def test_gradcheck(method: str, k: int, gen: torch.Generator) -> None:
    x = _gc_input(6, gen)
    assert gradcheck(lambda t: soft_topk(t, k, method=method, temperature=0.7), (x,))


@pytest.mark.parametrize("method", ["gradtopk", "sigmoid", "laplace", "exp"])
@pytest.mark.parametrize("k", [1, 2])
def test_gradgradcheck(method: str, k: int, gen: torch.Generator) -> None:
    x = _gc_input(5, gen)
    assert gradgradcheck(lambda t: soft_topk(t, k, method=method), (x,))


@pytest.mark.parametrize("method", ALL)
def test_gradcheck_per_row_k_and_dim(method: str, gen: torch.Generator) -> None:
    x = torch.randn(3, 5, 2, generator=gen, dtype=torch.float64).requires_grad_(True)
    k = torch.tensor([[0, 2], [3, 5], [1, 4]])
    assert gradcheck(lambda t: soft_topk(t, k, method=method, dim=1), (x,))


@pytest.mark.parametrize("method", ALL)
def test_jacobian_columns_sum_to_zero(method: str, gen: torch.Generator) -> None:
    x = torch.randn(7, generator=gen, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: soft_topk(t, 3, method=method), x)
    torch.testing.assert_close(jac.sum(0), torch.zeros(7, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", THRESHOLD)
def test_threshold_jacobian_formula(method: str, gen: torch.Generator) -> None:
    x = torch.randn(6, generator=gen, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: soft_topk(t, 2, method=method), x)
    torch.testing.assert_close(jac, ref.threshold_jacobian(soft_topk(x, 2, method=method), method))
    torch.testing.assert_close(jac, jac.T)


def test_sigmoid_matches_stop_gradient_trick(gen: torch.Generator) -> None:
    x = torch.randn(8, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(8, generator=gen, dtype=torch.float64)
    (ours,) = torch.autograd.grad((soft_topk(x, 3, method="sigmoid") * g).sum(), x)
    (sg,) = torch.autograd.grad((ref.sigmoid_sg_trick(x, 3) * g).sum(), x)
    torch.testing.assert_close(ours, sg)


# ----------------------------------------------------------------------------------------------------------
# API behaviour


@pytest.mark.parametrize("method", ALL)
def test_k0_and_kn_exact(method: str, gen: torch.Generator) -> None:
    x = torch.randn(2, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    p0 = soft_topk(x, 0, method=method)
    pn = soft_topk(x, 6, method=method)
    assert bool((p0 == 0).all())
    assert bool((pn == 1).all())
    (g,) = torch.autograd.grad((p0 + pn).sum(), x)
    assert bool((g == 0).all())


@pytest.mark.parametrize("method", ALL)
def test_per_row_k_matches_loop(method: str, gen: torch.Generator) -> None:
    x = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    k = torch.tensor([0, 1, 4, 7])
    p = soft_topk(x, k, method=method)
    for i in range(4):
        torch.testing.assert_close(p[i], soft_topk(x[i], int(k[i]), method=method))


@pytest.mark.parametrize("method", ALL)
def test_dim_argument(method: str, gen: torch.Generator) -> None:
    x = torch.randn(3, 6, 4, generator=gen, dtype=torch.float64)
    p = soft_topk(x, 2, method=method, dim=1)
    torch.testing.assert_close(p, soft_topk(x.transpose(1, 2), 2, method=method).transpose(1, 2))
    assert p.shape == x.shape


@pytest.mark.parametrize("method", ALL)
def test_hard_straight_through(method: str, gen: torch.Generator) -> None:
    x = torch.randn(3, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    ph = soft_topk(x, 3, method=method, hard=True)
    hard = torch.zeros_like(x).scatter(-1, x.detach().topk(3, -1).indices, 1.0)
    assert torch.equal(ph.detach(), hard)
    (gh,) = torch.autograd.grad((ph * g).sum(), x)
    (gs,) = torch.autograd.grad((soft_topk(x, 3, method=method) * g).sum(), x)
    torch.testing.assert_close(gh, gs)


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtype_preserved(method: str, dtype: torch.dtype) -> None:
    x = torch.randn(2, 10).to(dtype)
    p = soft_topk(x, 3, method=method)
    assert p.dtype == dtype
    assert bool(torch.isfinite(p).all())


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("k", [1, 10, 100, 990])
def test_large_spread_float32_finite(method: str, k: int, gen: torch.Generator) -> None:
    x = (torch.randn(4, 1000, generator=gen) * 1e4).requires_grad_(True)
    p = soft_topk(x, k, method=method)
    p.backward(torch.randn(4, 1000, generator=gen))
    assert bool(torch.isfinite(p).all())
    if method == "iterative" and k == 990:
        # documented flaw: the recursion's Jacobian is a product of k spread-sized factors and overflows
        grad = x.grad.nan_to_num(nan=float("inf"))  # type: ignore[union-attr]
        assert float(grad.abs().max()) > 1e15
        return
    assert bool(torch.isfinite(x.grad).all())  # type: ignore[arg-type]
    if method != "iterative":
        assert bool((p >= 0).all())
        assert bool((p <= 1).all())
        torch.testing.assert_close(p.sum(-1), torch.full((4,), float(k)), rtol=1e-5, atol=1e-3)


def test_sigmoid_converges_to_dtype_precision(gen: torch.Generator) -> None:
    x = torch.randn(16, 500, generator=gen, dtype=torch.float64) * 5
    p = soft_topk(x, 50, method="sigmoid")
    assert float((p.sum(-1) - 50).abs().max()) < 1e-11


def test_module_matches_functional(gen: torch.Generator) -> None:
    x = torch.randn(2, 9, generator=gen)
    m = SoftTopK(3, method="laplace", temperature=0.5)
    torch.testing.assert_close(m(x), soft_topk(x, 3, method="laplace", temperature=0.5))
    assert "method='laplace'" in repr(m)


def test_docstring_examples() -> None:
    assert doctest.testmod(topk_module, extraglobs={"torch": torch}).failed == 0


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"x": torch.arange(4), "k": 2}, TypeError, "x must have a floating-point dtype"),
        ({"x": [1.0, 2.0], "k": 1}, TypeError, "x must be a torch.Tensor"),
        ({"x": torch.tensor(1.0), "k": 0}, ValueError, "x must have at least 1 dimension"),
        ({"x": torch.tensor([1.0, float("nan")]), "k": 1}, ValueError, "x contains NaN"),
        ({"x": torch.tensor([1.0, float("inf")]), "k": 1}, ValueError, "x contains NaN or infinite"),
        ({"x": torch.zeros(4), "k": 5}, ValueError, "k must be <= 4, got 5"),
        ({"x": torch.zeros(4), "k": -1}, ValueError, "k must be >= 0, got -1"),
        ({"x": torch.zeros(4), "k": 1.5}, TypeError, "k must be an integer"),
        ({"x": torch.zeros(4), "k": 2.0}, TypeError, "k must be an integer"),
        ({"x": torch.zeros(4), "k": True}, TypeError, "k must be an integer"),
        ({"x": torch.zeros(4), "k": "2"}, TypeError, "k must be an integer"),
        ({"x": torch.zeros(4), "k": torch.tensor(1.5)}, TypeError, "k must be an int or an integer tensor"),
        ({"x": torch.zeros(4), "k": torch.tensor(2.0)}, TypeError, "k must be an int or an integer tensor"),
        ({"x": torch.zeros(4), "k": torch.tensor(True)}, TypeError, "k must be an int or an integer tensor"),
        ({"x": torch.zeros(2, 4), "k": torch.tensor([1, 2, 3])}, ValueError, "k of shape .* does not broadcast"),
        ({"x": torch.zeros(2, 4), "k": torch.tensor([1, 9])}, ValueError, r"k must lie in \[0, 4\]"),
        ({"x": torch.zeros(2, 4), "k": torch.tensor([-1, 2])}, ValueError, r"k must lie in \[0, 4\]"),
        ({"x": torch.zeros(4), "k": 2, "temperature": 0.0}, ValueError, "temperature must be > 0"),
        ({"x": torch.zeros(4), "k": 2, "temperature": -1.0}, ValueError, "temperature must be > 0"),
        ({"x": torch.zeros(4), "k": 2, "temperature": float("nan")}, ValueError, "temperature must be finite"),
        ({"x": torch.zeros(4), "k": 2, "temperature": float("inf")}, ValueError, "temperature must be finite"),
        ({"x": torch.zeros(4), "k": 2, "temperature": True}, TypeError, "temperature must be a real number"),
        ({"x": torch.zeros(4), "k": 2, "temperature": "1"}, TypeError, "temperature must be a real number"),
        ({"x": torch.zeros(4), "k": 2, "temperature": 1j}, TypeError, "temperature must be a real number"),
        ({"x": torch.zeros(4), "k": 2, "temperature": torch.tensor(-1.0)}, ValueError, "temperature must be > 0"),
        ({"x": torch.zeros(4), "k": 2, "temperature": torch.tensor(float("nan"))}, ValueError, "finite"),
        ({"x": torch.zeros(4), "k": 2, "temperature": torch.tensor(1)}, TypeError, "temperature must be a real"),
        ({"x": torch.zeros(4), "k": 2, "temperature": torch.ones(2)}, TypeError, "temperature must be a real"),
        ({"x": torch.zeros(4), "k": 2, "temperature": torch.ones(1)}, ValueError, "0-d tensor"),
        ({"x": torch.zeros(4), "k": 2, "dim": 1}, ValueError, "dim must be <= 0, got 1"),
        ({"x": torch.zeros(4), "k": 2, "dim": -2}, ValueError, "dim must be >= -1, got -2"),
        ({"x": torch.zeros(4), "k": 2, "dim": 0.0}, TypeError, "dim must be an integer"),
        ({"x": torch.zeros(4), "k": 2, "method": "softmax"}, ValueError, "method must be one of"),
        ({"x": torch.zeros(4), "k": 2, "method": None}, ValueError, "method must be one of"),
        ({"x": torch.zeros(4), "k": 2, "hard": 1}, TypeError, "hard must be a bool"),
        ({"x": torch.zeros(4), "k": 2, "hard": "yes"}, TypeError, "hard must be a bool"),
    ],
)
def test_bad_input(kwargs: dict, exc: type[Exception], match: str) -> None:
    x = kwargs.pop("x")
    k = kwargs.pop("k")
    with pytest.raises(exc, match=match):
        soft_topk(x, k, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((2,), {"temperature": 0.0}, ValueError, "temperature must be > 0"),
        ((2,), {"temperature": float("nan")}, ValueError, "temperature must be finite"),
        ((2,), {"temperature": torch.tensor([1.0, 2.0])}, TypeError, "temperature must be a real"),
        ((2,), {"method": "bogus"}, ValueError, "method must be one of"),
        ((2.0,), {}, TypeError, "k must be an integer"),
        ((True,), {}, TypeError, "k must be an integer"),
        ((-1,), {}, ValueError, "k must be >= 0"),
        ((torch.tensor([1.0]),), {}, TypeError, "integer tensor"),
        ((5000,), {"method": "iterative"}, ValueError, "k must be <= 4096"),
        ((2,), {"dim": 0.5}, TypeError, "dim must be an integer"),
        ((2,), {"hard": None}, TypeError, "hard must be a bool"),
    ],
)
def test_module_bad_input(args: tuple, kwargs: dict, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        SoftTopK(*args, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# iterative: bounded work


def test_iterative_rejects_huge_k_at_once() -> None:
    # k = 5e5 used to run 5e5 sequential passes (hours); it is rejected before any work
    x = torch.randn(1, 1_000_001)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"k must be <= ITERATIVE_MAX_K=4096 for method='iterative'.*k=500000"):
        soft_topk(x, 500_000, method="iterative")
    with pytest.raises(ValueError, match="ITERATIVE_MAX_K"):
        soft_topk(x[:, :5000], torch.tensor([4097]), method="iterative")
    assert time.perf_counter() - t0 < 5.0
    assert ITERATIVE_MAX_K == 4096
    # the other methods still take it: exact sum, and the hard limit at a small temperature
    p = soft_topk(x, 500_000, method="exp")
    torch.testing.assert_close(p.double().sum(), torch.tensor(500_000.0, dtype=torch.float64), rtol=1e-6, atol=0)


def test_iterative_at_the_limit_runs() -> None:
    x = torch.randn(1, ITERATIVE_MAX_K + 2, generator=torch.Generator().manual_seed(0))
    p = soft_topk(x, ITERATIVE_MAX_K, method="iterative")
    torch.testing.assert_close(p.double().sum(), torch.tensor(float(ITERATIVE_MAX_K), dtype=torch.float64))
