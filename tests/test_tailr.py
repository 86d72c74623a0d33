"""Tests of kexue.losses.tailr (https://kexue.fm/archives/9526) and the calibration metrics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from kexue.losses import TaiLrLoss, tailr_loss, tailr_weight
from kexue.train import expected_calibration_error, reliability_diagram


def _naive(logits: torch.Tensor, target: torch.Tensor, gamma: float, b: float, eps: float, form: str) -> torch.Tensor:
    """Per-example loss written straight from the formulas, one row at a time (float64)."""
    out = []
    for row, y in zip(logits.double(), target.tolist()):
        p_all = torch.exp(row) / torch.exp(row).sum()
        p = p_all[y]
        if form == "closed":
            main = -torch.log(gamma + (1 - gamma) * p) / (1 - gamma) if gamma < 1 else 1 - p
        else:
            w = min(max(float(p / (gamma + (1 - gamma) * p)), b), 1.0)
            main = -w * torch.log(p)
        smooth = -torch.log(p_all).mean()
        out.append((1 - eps) * main + eps * smooth)
    return torch.stack(out)


def _grad(fn, logits: torch.Tensor) -> torch.Tensor:
    x = logits.detach().clone().requires_grad_(True)
    fn(x).backward()
    assert x.grad is not None
    return x.grad


# --- reduction to cross entropy -------------------------------------------------------------------


@pytest.mark.parametrize("form", ["weighted", "closed"])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])  # label_smoothing's range is F.cross_entropy's [0, 1]
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gamma0_equals_cross_entropy(form: str, eps: float, reduction: str, gen: torch.Generator) -> None:
    logits = torch.randn(16, 7, generator=gen, dtype=torch.float64) * 3
    target = torch.randint(0, 7, (16,), generator=gen)
    target[[2, 5, 11]] = -100
    ours = tailr_loss(logits, target, gamma=0.0, label_smoothing=eps, reduction=reduction, form=form)  # type: ignore[arg-type]
    ref = F.cross_entropy(logits, target, label_smoothing=eps, reduction=reduction)
    torch.testing.assert_close(ours, ref)

    def f_ours(x: torch.Tensor) -> torch.Tensor:
        return tailr_loss(x, target, gamma=0.0, label_smoothing=eps, form=form).mul(1.0)  # type: ignore[arg-type]

    torch.testing.assert_close(
        _grad(f_ours, logits), _grad(lambda x: F.cross_entropy(x, target, label_smoothing=eps), logits)
    )


def test_gamma0_sequence_shape_equals_cross_entropy(gen: torch.Generator) -> None:
    logits = torch.randn(3, 11, 5, generator=gen)  # (B, V, L)
    target = torch.randint(0, 11, (3, 5), generator=gen)
    target[0, 3:] = 7
    target[2, 1:] = -1
    for eps in (0.0, 0.2):
        torch.testing.assert_close(
            tailr_loss(logits, target, gamma=0.0, ignore_index=-1, label_smoothing=eps, reduction="none"),
            F.cross_entropy(logits, target, ignore_index=-1, label_smoothing=eps, reduction="none"),
        )
        torch.testing.assert_close(
            tailr_loss(logits, target, gamma=0.0, ignore_index=-1, label_smoothing=eps),
            F.cross_entropy(logits, target, ignore_index=-1, label_smoothing=eps),
        )


# --- the formulas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["weighted", "closed"])
@pytest.mark.parametrize(("gamma", "b", "eps"), [(0.1, 0.0, 0.0), (0.5, 0.2, 0.1), (0.8, 0.3, 0.0), (1.0, 0.0, 0.1)])
def test_matches_naive_formula(form: str, gamma: float, b: float, eps: float, gen: torch.Generator) -> None:
    if form == "closed":
        b = 0.0
    logits = torch.randn(12, 6, generator=gen, dtype=torch.float64) * 2
    target = torch.randint(0, 6, (12,), generator=gen)
    got = tailr_loss(logits, target, gamma=gamma, min_weight=b, label_smoothing=eps, form=form, reduction="none")  # type: ignore[arg-type]
    torch.testing.assert_close(got, _naive(logits, target, gamma, b, eps, form))


@pytest.mark.parametrize("gamma", [1e-7, 0.1, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_closed_and_weighted_have_equal_gradients_when_b0(gamma: float, eps: float, gen: torch.Generator) -> None:
    logits = torch.randn(4, 9, 3, generator=gen, dtype=torch.float64) * 4
    target = torch.randint(0, 9, (4, 3), generator=gen)
    target[1, 2] = -100
    g_w = _grad(lambda x: tailr_loss(x, target, gamma=gamma, label_smoothing=eps), logits)
    g_c = _grad(lambda x: tailr_loss(x, target, gamma=gamma, label_smoothing=eps, form="closed"), logits)
    torch.testing.assert_close(g_w, g_c)


def test_gradient_is_weighted_cross_entropy_gradient(gen: torch.Generator) -> None:
    """Su's derivation: ∇ℓ_γ = -p/(γ+(1-γ)p) ∇log p, i.e. w times the CE gradient, per example."""
    logits = torch.randn(10, 5, generator=gen, dtype=torch.float64) * 3
    target = torch.randint(0, 5, (10,), generator=gen)
    gamma = 0.3
    p = torch.softmax(logits, 1).gather(1, target[:, None])  # (N, 1)
    w = p / (gamma + (1 - gamma) * p)
    g_ce = _grad(lambda x: F.cross_entropy(x, target, reduction="sum"), logits)
    g = _grad(lambda x: tailr_loss(x, target, gamma=gamma, reduction="sum", form="closed"), logits)
    torch.testing.assert_close(g, w * g_ce)


def test_gamma_to_one_approaches_one_minus_p(gen: torch.Generator) -> None:
    logits = torch.randn(20, 4, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 4, (20,), generator=gen)
    one_minus_p = 1 - torch.softmax(logits, 1).gather(1, target[:, None]).squeeze(1)
    errs = []
    for gamma in (0.9, 0.99, 0.999, 1 - 1e-6):
        got = tailr_loss(logits, target, gamma=gamma, form="closed", reduction="none")
        errs.append(float((got - one_minus_p).abs().max()))
    assert errs == sorted(errs, reverse=True)
    assert errs[-1] < 1e-5
    torch.testing.assert_close(tailr_loss(logits, target, gamma=1.0, form="closed", reduction="none"), one_minus_p)


def test_closed_form_bounded_by_cross_entropy_and_by_log_gamma(gen: torch.Generator) -> None:
    """Concavity of log: log(γ + (1-γ)p) >= (1-γ) log p, so 0 <= ℓ_γ <= CE; and ℓ_γ <= -log γ / (1-γ)."""
    logits = torch.randn(64, 10, generator=gen, dtype=torch.float64) * 6
    target = torch.randint(0, 10, (64,), generator=gen)
    ce = F.cross_entropy(logits, target, reduction="none")
    for gamma in (0.01, 0.3, 0.9):
        got = tailr_loss(logits, target, gamma=gamma, form="closed", reduction="none")
        assert bool((got >= 0).all())
        assert bool((got <= ce + 1e-12).all())
        assert bool((got <= -math.log(gamma) / (1 - gamma) + 1e-12).all())


# --- stop-gradient and stability ------------------------------------------------------------


def test_weight_is_detached(gen: torch.Generator) -> None:
    """The weighted form's gradient is w * (CE gradient) with w constant; a differentiated w differs."""
    logits = torch.randn(8, 5, generator=gen, dtype=torch.float64) * 2
    target = torch.randint(0, 5, (8,), generator=gen)
    gamma, b = 0.5, 0.2
    logp = torch.log_softmax(logits, 1).gather(1, target[:, None]).squeeze(1)
    w = tailr_weight(logp, gamma=gamma, min_weight=b)
    g_ce = _grad(lambda x: F.cross_entropy(x, target, reduction="none").mul(w).sum(), logits)
    g = _grad(lambda x: tailr_loss(x, target, gamma=gamma, min_weight=b, reduction="sum"), logits)
    torch.testing.assert_close(g, g_ce)

    def undetached(x: torch.Tensor) -> torch.Tensor:
        lp = torch.log_softmax(x, 1).gather(1, target[:, None]).squeeze(1)
        return -(tailr_weight(lp, gamma=gamma, min_weight=b) * lp).sum()

    assert not torch.allclose(_grad(undetached, logits), g)


def test_weight_in_range_and_floor() -> None:
    logp = torch.log(torch.tensor([1.0, 0.5, 1e-3, 1e-30], dtype=torch.float64))
    w = tailr_weight(logp, gamma=0.5, min_weight=0.2)
    assert bool(((w >= 0.2) & (w <= 1.0)).all())
    assert float(w[0]) == 1.0
    assert float(w[-1]) == 0.2
    torch.testing.assert_close(w[1], torch.tensor(0.5 / 0.75, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("form", ["weighted", "closed"])
def test_stable_tiny_gamma_with_underflowing_p(dtype: torch.dtype, form: str) -> None:
    """γ=1e-7 and p = e^-200 (exp underflows in float32): finite loss and gradient, the stable value."""
    logits = torch.tensor([[0.0, 200.0, 0.0], [5.0, 0.0, -3.0]], dtype=dtype, requires_grad=True)
    target = torch.tensor([0, 0])
    gamma = 1e-7
    loss = tailr_loss(logits, target, gamma=gamma, min_weight=0.0, form=form, reduction="none")  # type: ignore[arg-type]
    loss.sum().backward()
    assert logits.grad is not None
    assert bool(torch.isfinite(loss).all())
    assert bool(torch.isfinite(logits.grad).all())
    if form == "closed":
        # -log(γ + (1-γ)p)/(1-γ) with p ≈ e^-200 is -log(γ)/(1-γ) to double precision
        expected = -math.log(gamma) / (1 - gamma)
        assert abs(float(loss[0].detach()) - expected) < 1e-4 * expected
        # gradient wrt the target logit is -(1-p_y) w with w = p/(γ+(1-γ)p) ≈ 0 here
        assert abs(float(logits.grad[0, 0])) < 1e-6
    else:
        # weight p/γ ≈ e^-200 / 1e-7 is ~0, so the huge -log p = 200 is multiplied away
        assert float(loss[0].detach()) < 1e-6


def test_tiny_gamma_matches_float64_reference() -> None:
    """γ=1e-30 and p=e^-120 (below float32 range): the float32 result matches the float64 formula."""
    logp = torch.tensor([-120.0])
    gamma = 1e-30  # far below p's float32 precision around 1
    logits = torch.tensor([[-120.0, 0.0]])  # log_softmax ≈ (-120, 0)
    stable = tailr_loss(logits, torch.tensor([0]), gamma=gamma, form="closed")
    ref = -math.log(gamma + (1 - gamma) * math.exp(float(logp))) / (1 - gamma)
    assert abs(float(stable) - ref) < 1e-3 * ref


# --- reductions, shapes, modules ------------------------------------------------------------------


@given(
    n=st.integers(2, 6),
    c=st.integers(2, 6),
    length=st.integers(2, 4),
    gamma=st.floats(0.0, 1.0),
    b=st.floats(0.0, 1.0),
    eps=st.floats(0.0, 0.5),
    seed=st.integers(0, 10_000),
)
def test_reduction_laws_and_layouts(n: int, c: int, length: int, gamma: float, b: float, eps: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, length, generator=g, dtype=torch.float64) * 3
    target = torch.randint(0, c, (n, length), generator=g)
    target[0, 0] = -100
    kw = {"gamma": gamma, "min_weight": b, "label_smoothing": eps}
    none = tailr_loss(logits, target, reduction="none", **kw)
    assert none.shape == (n, length)
    assert float(none[0, 0]) == 0.0
    torch.testing.assert_close(tailr_loss(logits, target, reduction="sum", **kw), none.sum())
    keep = target != -100
    torch.testing.assert_close(tailr_loss(logits, target, reduction="mean", **kw), none.sum() / keep.sum())
    # (N, C, L) equals the flattened (N*L, C) layout
    flat = tailr_loss(logits.transpose(1, 2).reshape(-1, c), target.reshape(-1), reduction="none", **kw)
    torch.testing.assert_close(flat, none.reshape(-1))
    # weights live in [b, 1] and the loss never exceeds the (smoothed) cross entropy
    ce = F.cross_entropy(logits, target, label_smoothing=eps, reduction="none")
    assert bool((none <= ce + 1e-9).all())


def test_module_matches_functional_and_repr(gen: torch.Generator) -> None:
    logits = torch.randn(6, 4, generator=gen)
    target = torch.randint(0, 4, (6,), generator=gen)
    crit = TaiLrLoss(gamma=0.8, min_weight=0.2, label_smoothing=0.1)
    torch.testing.assert_close(
        crit(logits, target), tailr_loss(logits, target, gamma=0.8, min_weight=0.2, label_smoothing=0.1)
    )
    assert "gamma=0.8" in repr(crit)
    assert "min_weight=0.2" in repr(crit)


def test_dtype_preserved_and_low_precision() -> None:
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        logits = torch.randn(4, 3, dtype=dtype)
        assert tailr_loss(logits, torch.tensor([0, 1, 2, 0]), gamma=0.1).dtype == dtype


def test_all_ignored_mean_is_nan_like_cross_entropy() -> None:
    logits = torch.randn(3, 4)
    target = torch.full((3,), -100)
    assert math.isnan(float(tailr_loss(logits, target, gamma=0.5)))
    assert math.isnan(float(F.cross_entropy(logits, target)))


@pytest.mark.parametrize(("gamma", "eps"), [(0.0, 0.0), (0.3, 0.0), (0.7, 0.1), (1.0, 0.0), (1e-7, 0.1)])
def test_gradcheck_closed_form(gamma: float, eps: float, gen: torch.Generator) -> None:
    logits = torch.randn(3, 4, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[0, 3], [1, -100], [2, 2]])

    def f(x: torch.Tensor) -> torch.Tensor:
        return tailr_loss(x, target, gamma=gamma, label_smoothing=eps, form="closed", reduction="none")

    assert torch.autograd.gradcheck(f, (logits,))
    assert torch.autograd.gradgradcheck(f, (logits,))


@pytest.mark.parametrize(("gamma", "b"), [(0.0, 0.0), (0.6, 1.0)])
def test_gradcheck_weighted_form_where_weight_is_constant(gamma: float, b: float, gen: torch.Generator) -> None:
    """The weighted form's gradient is by design not the derivative of its value (the weight is detached), so
    finite differences apply only where the weight is constant: γ=0 (w=1) or b=1 (w clamped to 1).
    Elsewhere its gradient is checked against the closed form's (equal gradients when b=0)."""
    logits = torch.randn(3, 4, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[0, 3], [1, -100], [2, 2]])

    def f(x: torch.Tensor) -> torch.Tensor:
        return tailr_loss(x, target, gamma=gamma, min_weight=b, label_smoothing=0.1, reduction="none")

    assert torch.autograd.gradcheck(f, (logits,))
    assert torch.autograd.gradgradcheck(f, (logits,))


# --- error paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gamma": -0.1}, "gamma must be >= 0"),
        ({"gamma": 1.5}, "gamma must be <= 1"),
        ({"gamma": float("nan")}, "gamma must be finite"),
        ({"gamma": 0.5, "min_weight": 1.2}, "min_weight must be <= 1"),
        ({"gamma": 0.5, "min_weight": -0.2}, "min_weight must be >= 0"),
        ({"gamma": 0.5, "label_smoothing": 2.0}, "label_smoothing must be <= 1"),
        ({"gamma": 0.5, "reduction": "avg"}, "reduction must be"),
        ({"gamma": 0.5, "form": "exact"}, "form must be"),
        ({"gamma": 0.5, "min_weight": 0.2, "form": "closed"}, "no weight floor"),
    ],
)
def test_bad_options(kwargs: dict, match: str) -> None:
    logits, target = torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=match):
        tailr_loss(logits, target, **kwargs)
    with pytest.raises(ValueError, match=match):
        TaiLrLoss(**kwargs)


def test_bad_inputs() -> None:
    logits = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"class index 3, expected values in \[0, 2\]"):
        tailr_loss(logits, torch.tensor([0, 3]), gamma=0.5)
    with pytest.raises(ValueError, match="class index -1"):
        tailr_loss(logits, torch.tensor([-1, 0]), gamma=0.5)
    with pytest.raises(ValueError, match="target must have shape"):
        tailr_loss(logits, torch.tensor([0, 1, 2]), gamma=0.5)
    with pytest.raises(ValueError, match="target must have shape"):
        tailr_loss(torch.randn(2, 3, 4), torch.tensor([0, 1]), gamma=0.5)
    with pytest.raises(ValueError, match="logits must have at least 2 dimensions"):
        tailr_loss(torch.randn(3), torch.tensor(0), gamma=0.5)
    with pytest.raises(TypeError, match="logits must have a floating-point dtype"):
        tailr_loss(torch.ones(2, 3, dtype=torch.long), torch.tensor([0, 1]), gamma=0.5)
    with pytest.raises(TypeError, match="target must hold integer"):
        tailr_loss(logits, torch.tensor([0.0, 1.0]), gamma=0.5)
    with pytest.raises(TypeError, match="gamma must be a real number"):
        tailr_loss(logits, torch.tensor([0, 1]), gamma="0.5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="class index 3"):
        TaiLrLoss(gamma=0.1)(logits, torch.tensor([0, 3]))
    # ignore_index itself is allowed even though it is out of range
    tailr_loss(logits, torch.tensor([0, -100]), gamma=0.5)


# --- calibration ----------------------------------------------------------------------------------


def test_ece_matches_naive_loop(gen: torch.Generator) -> None:
    logits = torch.randn(200, 5, generator=gen) * 3
    target = torch.randint(0, 5, (200,), generator=gen)
    probs = torch.softmax(logits.double(), 1)
    conf, pred = probs.max(1)
    n_bins = 10
    ece = 0.0
    for i in range(n_bins):
        lo, hi = i / n_bins, (i + 1) / n_bins
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += float(m.sum()) / 200 * abs(float((pred[m] == target[m]).double().mean() - conf[m].mean()))
    assert abs(expected_calibration_error(logits, target, n_bins=n_bins) - ece) < 1e-9
    d = reliability_diagram(logits, target, n_bins=n_bins)
    assert int(d.count.sum()) == 200
    assert d.edges.shape == (11,)


def test_ece_errors() -> None:
    with pytest.raises(ValueError, match="n_bins must be"):
        expected_calibration_error(torch.randn(3, 2), torch.tensor([0, 1, 0]), n_bins=0)
    with pytest.raises(ValueError, match="logits must be"):
        expected_calibration_error(torch.randn(3, 2), torch.tensor([0, 1]))


# --- autocast, masked classes, extremes, validation ---------------------------------------------------


@pytest.mark.parametrize("form", ["weighted", "closed"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cpu_autocast_computes_and_returns_float32_like_cross_entropy(form: str, reduction: str) -> None:
    """Under CPU autocast TaiLr used to return bfloat16 where F.cross_entropy returns float32."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(6, 8, generator=g), torch.randn(8, 5, generator=g)
    target = torch.tensor([0, 1, 2, 3, 4, -100])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = x @ w  # a bfloat16 matmul output
        assert logits.dtype == torch.bfloat16
        ce = F.cross_entropy(logits, target, reduction=reduction)
        ours0 = tailr_loss(logits, target, gamma=0.0, form=form, reduction=reduction)  # type: ignore[arg-type]
        ours = tailr_loss(logits, target, gamma=0.3, form=form, reduction=reduction)  # type: ignore[arg-type]
        mod = TaiLrLoss(gamma=0.3, form=form, reduction=reduction)(logits, target)  # type: ignore[arg-type]
    assert ce.dtype == torch.float32
    assert ours0.dtype == ours.dtype == mod.dtype == torch.float32
    torch.testing.assert_close(ours0, ce)  # γ=0 is cross entropy, also under autocast
    ref = tailr_loss(logits.float(), target, gamma=0.3, form=form, reduction=reduction)  # type: ignore[arg-type]
    torch.testing.assert_close(ours, ref)
    # outside autocast a bfloat16 input keeps its dtype, as with F.cross_entropy
    assert tailr_loss(logits, target, gamma=0.3).dtype == F.cross_entropy(logits, target).dtype == torch.bfloat16


def test_masked_target_class_gives_the_limit_not_nan() -> None:
    """A -inf target logit (p = 0) made w * log p = 0 * -inf = NaN in the weighted form with b = 0."""
    logits = torch.tensor([[-math.inf, 0.0, 1.0], [0.5, -math.inf, 2.0]], requires_grad=True)
    target = torch.tensor([0, 2])
    loss = tailr_loss(logits, target, gamma=0.5, reduction="none")
    loss.sum().backward()
    assert float(loss[0].detach()) == 0.0  # lim_{p->0} -(p / γ) log p = 0
    torch.testing.assert_close(loss[1], tailr_loss(logits[1:].detach(), target[1:], gamma=0.5, reduction="none")[0])
    assert logits.grad is not None
    assert bool(torch.isfinite(logits.grad).all())
    # the floor keeps b of the cross-entropy loss: b * (-log 0) = +inf, as F.cross_entropy
    assert math.isinf(float(tailr_loss(logits.detach(), target, gamma=0.5, min_weight=0.2, reduction="none")[0]))


@pytest.mark.parametrize("spread", [1e4, 1e30])
@pytest.mark.parametrize("form", ["weighted", "closed"])
def test_extreme_logit_spread_matches_float64(spread: float, form: str) -> None:
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(6, 5, generator=g) * spread).requires_grad_()
    target = torch.tensor([0, 1, 2, 3, 4, 0])
    loss = tailr_loss(logits, target, gamma=0.2, form=form, reduction="none")  # type: ignore[arg-type]
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    ref = tailr_loss(logits.detach().double(), target, gamma=0.2, form=form, reduction="none")  # type: ignore[arg-type]
    torch.testing.assert_close(loss.detach().double(), ref, rtol=1e-5, atol=1e-5)
    assert bool(torch.isfinite(grad).all())


def test_non_finite_empty_and_option_types_rejected() -> None:
    target = torch.tensor([0, 1])
    for bad in (math.nan, math.inf):
        logits = torch.randn(2, 3)
        logits[1, 2] = bad
        with pytest.raises(ValueError, match=r"logits contains NaN or \+inf"):
            tailr_loss(logits, target, gamma=0.5)
    with pytest.raises(ValueError, match="logits must not be empty"):
        tailr_loss(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), gamma=0.5)
    with pytest.raises(TypeError, match="logits must have a floating-point dtype"):
        tailr_loss(torch.zeros(2, 3, dtype=torch.complex64), target, gamma=0.5)
    with pytest.raises(ValueError, match="gamma must be finite"):
        tailr_loss(torch.randn(2, 3), target, gamma=math.inf)
    with pytest.raises(TypeError, match="gamma must be a real number"):
        TaiLrLoss(gamma=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ignore_index must be an integer"):
        tailr_loss(torch.randn(2, 3), target, gamma=0.5, ignore_index=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ignore_index must be an integer"):
        TaiLrLoss(gamma=0.5, ignore_index="pad")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"logp must hold log-probabilities in \[-inf, 0\]"):
        tailr_weight(torch.tensor([0.5]), gamma=0.5)
    with pytest.raises(ValueError, match=r"logp must hold log-probabilities"):
        tailr_weight(torch.tensor([math.nan]), gamma=0.5)
    with pytest.raises(TypeError, match="logp must have a floating-point dtype"):
        tailr_weight(torch.zeros(3, dtype=torch.long), gamma=0.5)
    torch.testing.assert_close(tailr_weight(torch.tensor([-math.inf]), gamma=0.5), torch.tensor([0.0]))


@pytest.mark.parametrize("form", ["closed", "weighted"])
def test_half_precision_logits_outside_autocast_stay_non_negative(form: str) -> None:
    """bf16 logits of a confident prediction: the loss is >= 0 (half-precision log-add-exp once gave -0.0035)."""
    x = torch.full((4, 5), -20.0, dtype=torch.bfloat16)
    x[:, 0] = 20.0
    t = torch.zeros(4, dtype=torch.long)
    out = tailr_loss(x, t, gamma=0.5, form=form, reduction="none")
    assert out.dtype == torch.bfloat16
    assert (out >= 0).all(), out
    torch.testing.assert_close(out.float(), tailr_loss(x.float(), t, gamma=0.5, form=form, reduction="none"),
                               atol=1e-2, rtol=1e-2)  # fmt: skip
