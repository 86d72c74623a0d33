"""Tests for kexue.regularizers: the article's equivalences on tiny float64 models, error paths,
stop-gradients."""

from __future__ import annotations

import contextlib
import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from kexue.modules import EmbeddingBagClassifier
from kexue.regularizers import (
    FGM,
    PGD,
    VAT,
    DoubleBackwardError,
    NoiseConsistencyLoss,
    NoisyLoss,
    conditional_entropy,
    consistency_divergence,
    dropout_disabled,
    fgm_loss,
    gradient_penalty_loss,
    noise_consistency_loss,
    noisy_loss,
    perturb,
    pgd_loss,
    probe_radius,
    smoothness_penalty,
    vat_direction,
    vat_loss,
)

D64 = torch.float64


def mlp(d_in: int = 5, hidden: int = 16, c: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, c)).to(D64)


def flat_grad(loss: Tensor, model: nn.Module) -> Tensor:
    gs = torch.autograd.grad(loss, list(model.parameters()))
    return torch.cat([g.reshape(-1) for g in gs])


def cosine(a: Tensor, b: Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=0))


# --------------------------------------------------------------------------- noise ~ Laplacian penalty


def _antithetic_gap(fn, x: Tensor, e: Tensor, sigma: float) -> Tensor:
    """Mean over antithetic pairs of l(x + s e) - l(x); the odd Taylor terms cancel exactly."""
    return 0.5 * (fn(x + sigma * e) + fn(x - sigma * e)).mean() - fn(x).mean()


def test_input_noise_is_half_sigma2_laplacian() -> None:
    """E[l(x+eps)] - l(x) = 1/2 sigma^2 Laplacian + O(sigma^4): the relative error shrinks like sigma^2."""
    model = mlp()
    x = torch.randn(1, 5, dtype=D64)
    y = torch.tensor([1])

    def loss(z: Tensor) -> Tensor:
        return F.cross_entropy(model(z), y.expand(z.shape[0]), reduction="none")

    hess = torch.autograd.functional.hessian(lambda z: loss(z.unsqueeze(0)).sum(), x[0])
    lap = float(torch.trace(hess))
    g = torch.Generator().manual_seed(0)
    e = torch.randn(40000, 5, dtype=D64, generator=g)
    quad = float(torch.einsum("ni,ij,nj->n", e, hess, e).mean())  # the same samples' quadratic form
    errs = []
    for sigma in (0.2, 0.1, 0.05):
        mc = float(_antithetic_gap(loss, x, e, sigma))
        errs.append(abs(mc - 0.5 * sigma**2 * quad) / (0.5 * sigma**2 * abs(quad)))
    # Halving sigma divides the relative error by ~4 (O(sigma^2) relative, O(sigma^4) absolute).
    assert 3.0 < errs[0] / errs[1] < 5.3
    assert 3.0 < errs[1] / errs[2] < 5.3
    # And E[e^T H e] = tr(H) = Laplacian, up to Monte-Carlo error.
    se = float(torch.einsum("ni,ij,nj->n", e, hess, e).std()) / math.sqrt(e.shape[0])
    assert abs(quad - lap) < 4 * se


# --------------------------------------------------------------------------- consistency ~ lambda-weighted GP


def _jacobian(model: nn.Module, x: Tensor, probs: bool) -> Tensor:
    def f(z: Tensor) -> Tensor:
        out = model(z.unsqueeze(0))[0]
        return out.softmax(-1) if probs else out

    return torch.autograd.functional.jacobian(f, x)  # (C, D)


@pytest.mark.parametrize("loss", ["mse", "kl"])
def test_smoothness_penalty_matches_reference(loss: str) -> None:
    model = mlp()
    x = torch.randn(4, 5, dtype=D64)
    got = smoothness_penalty(model, x, loss=loss, reduction="none")
    ref = []
    for b in range(4):
        if loss == "mse":
            jac = _jacobian(model, x[b], probs=False)
            ref.append(2 * jac.pow(2).sum())
        else:
            jac = _jacobian(model, x[b], probs=True)
            p = model(x[b : b + 1])[0].softmax(-1)
            ref.append((jac.pow(2).sum(1) / p).sum())
    torch.testing.assert_close(got, torch.stack(ref))


@pytest.mark.parametrize("loss", ["mse", "kl"])
def test_consistency_term_is_half_sigma2_weighted_gradient_penalty(loss: str) -> None:
    """E[l(f(x+eps), f(x))] ~ 1/2 sigma^2 sum_i lambda_i ||grad f_i||^2 (only the Gauss-Newton term
    survives)."""
    model = mlp()
    x = torch.randn(1, 5, dtype=D64)
    sigma, n = 0.01, 40000
    pen = float(smoothness_penalty(model, x, loss=loss))
    torch.manual_seed(1)
    per = noise_consistency_loss(model, x.expand(n, 5), sigma=sigma, loss=loss, reduction="none")
    mc, se = float(per.mean()), float(per.std()) / math.sqrt(n)
    expected = 0.5 * sigma**2 * pen
    assert abs(mc - expected) < 4 * se + 0.02 * expected


def test_rademacher_estimator_is_unbiased() -> None:
    model = mlp(c=4)
    x = torch.randn(3, 5, dtype=D64)
    exact = smoothness_penalty(model, x, loss="kl", reduction="none")
    g = torch.Generator().manual_seed(3)
    draws = torch.stack(
        [
            smoothness_penalty(model, x, loss="kl", estimator="rademacher", reduction="none", generator=g)
            for _ in range(800)
        ]
    )
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - exact).abs() < 4 * se + 1e-12).all()


# --------------------------------------------------------------------------- FGM ~ gradient penalty


@pytest.mark.parametrize(("norm", "form"), [("none", "squared"), ("l2", "norm")])
def test_fgm_gradient_equals_gradient_penalty_gradient(norm: str, form: str) -> None:
    """grad L(x + eps sg(dir)) - grad L(x) ~ grad of the penalty; cosine -> 1, relative error O(eps)."""
    model = mlp()
    x = torch.randn(8, 5, dtype=D64)
    y = torch.randint(0, 3, (8,))
    clean = flat_grad(F.cross_entropy(model(x), y), model)
    errs, coss = [], []
    for eps in (0.1, 0.01, 0.001):
        adv = flat_grad(fgm_loss(model, x, y, eps=eps, norm=norm, scope="global", include_clean=False), model)
        gp = flat_grad(gradient_penalty_loss(model, x, y, eps=eps, form=form, scope="global"), model)
        fgm_pen, gp_pen = adv - clean, gp - clean
        coss.append(cosine(fgm_pen, gp_pen))
        errs.append(float((fgm_pen - gp_pen).norm() / gp_pen.norm()))
    assert coss[-1] > 0.9999
    assert coss[0] <= coss[1] + 1e-9 <= coss[2] + 2e-9
    assert errs[1] < errs[0] / 5
    assert errs[2] < errs[1] / 5


@pytest.mark.parametrize(("form", "scope"), [("squared", "global"), ("norm", "global"), ("norm", "per_sample")])
def test_finite_difference_penalty_matches_double_backward(form: str, scope: str) -> None:
    model = mlp()
    x = torch.randn(6, 5, dtype=D64)
    y = torch.randint(0, 3, (6,))
    exact = gradient_penalty_loss(model, x, y, eps=0.7, form=form, scope=scope)
    fd = gradient_penalty_loss(model, x, y, eps=0.7, form=form, scope=scope, method="finite_difference", fd_step=1e-6)
    torch.testing.assert_close(fd, exact)  # values agree exactly
    ge, gf = flat_grad(exact, model), flat_grad(fd, model)
    assert float((ge - gf).norm() / ge.norm()) < 1e-4


def test_finite_difference_penalty_on_embedding_site() -> None:
    torch.manual_seed(0)
    model = EmbeddingBagClassifier(30, 2, dim=8, hidden=8).to(D64)
    ids = torch.randint(1, 30, (4, 6))
    ids[0, :2] = ids[1, :2]  # repeated tokens exercise the tied whole-matrix norm
    y = torch.tensor([0, 1, 1, 0])
    exact = gradient_penalty_loss(model, ids, y, site="embedding", form="norm", scope="global")
    fd = gradient_penalty_loss(
        model, ids, y, site="embedding", form="norm", scope="global", method="finite_difference", fd_step=1e-6
    )
    ge, gf = flat_grad(exact, model), flat_grad(fd, model)
    assert float((ge - gf).norm() / ge.norm()) < 1e-4


def test_embedding_fgm_global_equals_perturbing_the_matrix() -> None:
    """The author's FGM: delta_W = eps g_W / ||g_W|| on the whole matrix, done here through an output hook."""
    torch.manual_seed(0)
    model = EmbeddingBagClassifier(20, 2, dim=6, hidden=0).to(D64)
    ids = torch.tensor([[3, 4, 3, 0], [5, 3, 7, 8]])
    y = torch.tensor([1, 0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adv = fgm_loss(model, ids, y, eps=0.5, site="embedding", norm="l2", scope="global", include_clean=False)
    w = model.embedding.weight
    (g_w,) = torch.autograd.grad(F.cross_entropy(model(ids), y), w)
    w_adv = w.detach() + 0.5 * g_w / g_w.norm()
    ref = F.cross_entropy(model.classify(F.embedding(ids, w_adv), ids != 0), y)
    torch.testing.assert_close(adv, ref)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])  # nothing edited in place, nothing to restore


@pytest.mark.parametrize("scope", ["global", "per_sample"])
def test_embedding_fgm_with_clean_term_matches_manual_gradient(scope: str) -> None:
    torch.manual_seed(0)
    model = EmbeddingBagClassifier(20, 2, dim=6, hidden=5).to(D64)
    ids = torch.tensor([[3, 4, 3, 0], [5, 3, 7, 8]])
    y = torch.tensor([1, 0])
    got = flat_grad(fgm_loss(model, ids, y, eps=0.5, site="embedding", scope=scope), model)
    emb = model.embed(ids)
    (g,) = torch.autograd.grad(F.cross_entropy(model.classify(emb, ids != 0), y), emb)
    if scope == "global":
        g_w = torch.zeros(20, 6, dtype=D64).index_add(0, ids.reshape(-1), g.reshape(-1, 6))
        delta = 0.5 * (g_w / g_w.norm())[ids]
    else:
        delta = 0.5 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1)
    ref_loss = F.cross_entropy(model(ids), y) + F.cross_entropy(model.classify(emb + delta.detach(), ids != 0), y)
    torch.testing.assert_close(got, flat_grad(ref_loss, model))


# --------------------------------------------------------------------------- VAT power iteration


def test_power_iteration_finds_top_eigenvector_of_gauss_newton() -> None:
    model = mlp(d_in=10, hidden=12, c=4, seed=2)
    x = torch.randn(3, 10, dtype=D64)
    g = torch.Generator().manual_seed(0)
    for b in range(3):
        jac = _jacobian(model, x[b], probs=False)  # (C, D) logits Jacobian
        p = model(x[b : b + 1])[0].softmax(-1)
        hess = jac.T @ (torch.diag(p) - torch.outer(p, p)) @ jac  # Hessian of KL(p || p(x+e)) at e = 0
        evals, evecs = torch.linalg.eigh(hess)
        top = evecs[:, -1]
        d = vat_direction(model, x, xi=1e-5, n_power=30, generator=g)[b]
        assert abs(cosine(d, top)) > 0.999
        assert float(d @ hess @ d) / float(evals[-1]) > 0.999
    # More iterations never hurt on average: r=1 beats a random direction in Rayleigh quotient.
    jac = _jacobian(model, x[0], probs=False)
    p = model(x[:1])[0].softmax(-1)
    hess = jac.T @ (torch.diag(p) - torch.outer(p, p)) @ jac
    rq = {}
    for r in (0, 1):
        ds = [vat_direction(model, x[:1], xi=1e-5, n_power=r, generator=g)[0] for _ in range(50)]
        rq[r] = sum(float(d @ hess @ d) for d in ds) / 50
    assert rq[1] > rq[0]


def test_vat_loss_equals_kl_at_eps_direction() -> None:
    model = mlp()
    x = torch.randn(4, 5, dtype=D64)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    d = vat_direction(model, x, xi=1e-4, n_power=1, generator=g1)
    loss = vat_loss(model, x, eps=0.3, xi=1e-4, n_power=1, generator=g2, reduction="none")
    ref = consistency_divergence(model(x + 0.3 * d), model(x).detach(), reduction="none")
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(d.norm(dim=1), torch.ones(4, dtype=D64))


def test_vat_clean_target_is_detached() -> None:
    """The loss gradient equals the gradient with a constant target (official tf.stop_gradient)."""
    model = mlp()
    x = torch.randn(4, 5, dtype=D64)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    got = flat_grad(vat_loss(model, x, eps=0.5, xi=1e-4, generator=g1), model)
    d = vat_direction(model, x, xi=1e-4, generator=g2)
    target = model(x).detach()
    ref = flat_grad(consistency_divergence(model(x + 0.5 * d), target), model)
    torch.testing.assert_close(got, ref)


def test_vat_r0_is_random_direction_noise() -> None:
    model = mlp()
    x = torch.randn(2000, 5, dtype=D64)
    d = vat_direction(model, x, n_power=0)
    torch.testing.assert_close(d.norm(dim=1), torch.ones(2000, dtype=D64))
    assert float(d.mean(0).abs().max()) < 0.1  # isotropic: no preferred direction


def test_batchnorm_stats_unchanged_by_vat_and_dropout_restored() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    model(torch.randn(16, 5))  # some non-trivial running stats
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = vat_loss(model, torch.randn(16, 5), eps=1.0, xi=1e-3, n_power=2)
    loss.backward()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)
    assert all(m.training for m in model.modules())
    with dropout_disabled(model):
        assert not model[3].training
        assert model[1].training
    assert model[3].training


def test_vat_on_embedding_author_variant_ties_tokens() -> None:
    torch.manual_seed(0)
    model = EmbeddingBagClassifier(25, 2, dim=6, hidden=6)
    ids = torch.tensor([[3, 4, 3, 0], [5, 3, 7, 8]])
    d = vat_direction(model, ids, site="embedding", scope="global", xi=10.0)
    torch.testing.assert_close(d[0, 0], d[0, 2])
    torch.testing.assert_close(d[0, 0], d[1, 1])  # token 3 shares one row of the matrix perturbation
    uniq = {}
    for tok, row in zip(ids.reshape(-1).tolist(), d.reshape(-1, 6)):
        uniq[tok] = row
    norm = torch.stack([r for t, r in uniq.items() if t != 0]).norm()
    assert abs(float(norm) - 1.0) < 1e-5
    VAT.author()(model, ids).backward()
    assert model.embedding.weight.grad is not None


# --------------------------------------------------------------------------- noise helpers


def test_noisy_loss_reduces_to_cross_entropy() -> None:
    model = mlp()
    x, y = torch.randn(6, 5, dtype=D64), torch.randint(0, 3, (6,))
    torch.testing.assert_close(noisy_loss(model, x, y, sigma=0.0), F.cross_entropy(model(x), y))
    torch.testing.assert_close(
        noisy_loss(model, x, y, sigma=0.0, label_smoothing=0.1),
        F.cross_entropy(model(x), y, label_smoothing=0.1),
    )


@pytest.mark.parametrize("site", ["input", "weights", "0"])
def test_noisy_loss_sites_leave_model_untouched(site: str) -> None:
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(6, 5, dtype=D64), torch.randint(0, 3, (6,))
    loss = noisy_loss(model, x, y, sigma=0.1, site=site, k=3)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


@pytest.mark.parametrize("distribution", ["gaussian", "uniform", "bernoulli"])
def test_multiplicative_noise_has_unit_mean_and_sigma_std(distribution: str) -> None:
    v = torch.ones(200000, dtype=D64)
    out = perturb(v, sigma=0.5, kind="multiplicative", distribution=distribution)
    assert abs(float(out.mean()) - 1) < 0.01
    assert abs(float(out.std()) - 0.5) < 0.01


# --------------------------------------------------------------------------- PGD / FGM details


def test_pgd_linf_reaches_the_analytic_worst_case_of_a_linear_model() -> None:
    torch.manual_seed(0)
    w = torch.randn(2, 5, dtype=D64)
    model = nn.Linear(5, 2, bias=False).to(D64)
    model.weight.data.copy_(w)
    x, y = torch.randn(4, 5, dtype=D64), torch.tensor([0, 1, 0, 1])
    eps = 0.1
    adv = pgd_loss(model, x, y, eps=eps, steps=8, norm="linf", include_clean=False)
    # Worst case in the linf ball: move every coordinate against the margin (w_y - w_other).
    margin_dir = (w[y] - w[1 - y]).sign()
    ref = F.cross_entropy(model(x - eps * margin_dir), y)
    torch.testing.assert_close(adv, ref)
    fgsm = fgm_loss(model, x, y, eps=eps, norm="sign", include_clean=False)
    torch.testing.assert_close(fgsm, ref)


@given(eps=st.floats(0.05, 2.0), steps=st.integers(1, 4), b=st.integers(2, 5))
def test_pgd_l2_stays_in_the_ball(eps: float, steps: int, b: int) -> None:
    model = mlp()
    x, y = torch.randn(b, 5, dtype=D64), torch.randint(0, 3, (b,))
    seen = {}

    def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits, target)

    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, z: Tensor) -> Tensor:
            seen["delta"] = (z - x).detach()
            return self.inner(z)

    pgd_loss(Spy(), x, y, eps=eps, steps=steps, norm="l2", random_start=True, loss_fn=loss_fn)
    assert float(seen["delta"].norm(dim=1).max()) <= eps * (1 + 1e-9)


def test_fgm_with_gradscaler_matches_unscaled() -> None:
    model = mlp()
    x, y = torch.randn(6, 5, dtype=D64), torch.randint(0, 3, (6,))
    ref = flat_grad(fgm_loss(model, x, y, eps=0.3), model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaled = flat_grad(scaler.scale(fgm_loss(model, x, y, eps=0.3, scaler=scaler)), model) / scaler.get_scale()
    torch.testing.assert_close(scaled, ref)


def test_module_forms_match_functionals() -> None:
    model = mlp()
    x, y = torch.randn(6, 5, dtype=D64), torch.randint(0, 3, (6,))
    torch.testing.assert_close(FGM(eps=0.2)(model, x, y), fgm_loss(model, x, y, eps=0.2))
    torch.testing.assert_close(PGD(eps=0.2, steps=2)(model, x, y), pgd_loss(model, x, y, eps=0.2, steps=2))
    assert "eps=0.2" in repr(FGM(eps=0.2))


# --------------------------------------------------------------------------- reductions, gradcheck


@pytest.mark.parametrize("fn", ["kl", "mse", "entropy"])
def test_reduction_laws(fn: str) -> None:
    a, b = torch.randn(5, 4, dtype=D64), torch.randn(5, 4, dtype=D64)

    def f(red: str) -> Tensor:
        if fn == "entropy":
            return conditional_entropy(a, reduction=red)
        return consistency_divergence(a, b, loss=fn, reduction=red)

    torch.testing.assert_close(f("mean"), f("none").mean())
    torch.testing.assert_close(f("sum"), f("none").sum())


def test_gradcheck_and_gradgradcheck_divergences() -> None:
    a = torch.randn(3, 4, dtype=D64, requires_grad=True)
    b = torch.randn(3, 4, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, q: consistency_divergence(p, q, loss="kl"), (a, b))
    assert torch.autograd.gradgradcheck(lambda p, q: consistency_divergence(p, q, loss="kl"), (a, b))
    assert torch.autograd.gradgradcheck(lambda p: conditional_entropy(p), (a,))


class _Functional(nn.Module):
    """A net whose weight is a plain tensor input, so gradcheck can differentiate penalties w.r.t. it."""

    def __init__(self, w: Tensor, v: Tensor) -> None:
        super().__init__()
        self.w, self.v = w, v

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x @ self.w) @ self.v


def test_gradcheck_penalties_wrt_weights() -> None:
    w = torch.randn(5, 6, dtype=D64, requires_grad=True)
    v = torch.randn(6, 3, dtype=D64, requires_grad=True)
    x = torch.randn(4, 5, dtype=D64)
    y = torch.tensor([0, 1, 2, 0])
    assert torch.autograd.gradcheck(lambda w_, v_: smoothness_penalty(_Functional(w_, v_), x, loss="mse"), (w, v))
    assert torch.autograd.gradcheck(
        lambda w_, v_: gradient_penalty_loss(_Functional(w_, v_), x, y, eps=0.5, form="squared"), (w, v)
    )


# --------------------------------------------------------------------------- error paths


def test_errors_on_bad_hyperparameters() -> None:
    model = mlp()
    x, y = torch.randn(4, 5, dtype=D64), torch.randint(0, 3, (4,))
    with pytest.raises(ValueError, match="eps must be"):
        vat_loss(model, x, eps=0.0)
    with pytest.raises(ValueError, match="xi must be"):
        vat_loss(model, x, xi=-1.0)
    with pytest.raises(ValueError, match="n_power must be"):
        vat_loss(model, x, n_power=-1)
    with pytest.raises(ValueError, match="eps must be"):
        fgm_loss(model, x, y, eps=-0.1)
    with pytest.raises(ValueError, match="norm must be one of"):
        fgm_loss(model, x, y, eps=0.1, norm="l3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps must be"):
        pgd_loss(model, x, y, eps=0.1, steps=0)
    with pytest.raises(ValueError, match="sigma must be"):
        noisy_loss(model, x, y, sigma=-1.0)
    with pytest.raises(ValueError, match="k must be"):
        noisy_loss(model, x, y, sigma=0.1, k=0)
    with pytest.raises(ValueError, match="scope must be"):
        vat_loss(model, x, scope="batch")  # type: ignore[arg-type]


def test_errors_on_bad_shapes_and_outputs() -> None:
    model = mlp()
    x = torch.randn(4, 5, dtype=D64)
    with pytest.raises(ValueError, match="target has batch size 3"):
        fgm_loss(model, x, torch.zeros(3, dtype=torch.long), eps=0.1)
    with pytest.raises(ValueError, match=r"logits of shape \(B=4, C\)"):
        vat_loss(nn.Sequential(model, nn.Unflatten(1, (3, 1))), x)
    with pytest.raises(ValueError, match="model output must be logits"):
        vat_loss(_TupleOut(model), x)
    with pytest.raises(ValueError, match="embedding layer not found"):
        vat_loss(model, x, site="embedding")
    with pytest.raises(ValueError, match="embedding layer ambiguous"):
        vat_loss(_TwoEmbeddings(), torch.tensor([[1, 2], [3, 4]]), site="embedding")
    with pytest.raises(ValueError, match="neither 'input', 'embedding' nor a submodule"):
        vat_loss(model, x, site="encoder.layer")
    with pytest.raises(TypeError, match="inputs must be"):
        vat_loss(model, [1, 2])  # type: ignore[arg-type]


class _TupleOut(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.m(x), x


class _TwoEmbeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(10, 4), nn.Embedding(10, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, ids: Tensor) -> Tensor:
        return self.out((self.tok(ids) + self.pos(ids)).mean(1))


class _Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class _OnceDifferentiable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(_Square.apply(self.a(x)))


class _FusedAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.out = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, L, 8)
        h = self.q(x).unsqueeze(1)
        return self.out(F.scaled_dot_product_attention(h, h, h).squeeze(1).mean(1))


@pytest.mark.parametrize("model_cls", [_OnceDifferentiable, _FusedAttention])
def test_double_backward_failure_names_finite_difference(model_cls: type[nn.Module]) -> None:
    model = model_cls()
    x = torch.randn(4, 5) if model_cls is _OnceDifferentiable else torch.randn(4, 3, 8)
    y = torch.tensor([0, 1, 1, 0])
    with pytest.raises(DoubleBackwardError, match="finite_difference"):
        gradient_penalty_loss(model, x, y)
    with pytest.raises(DoubleBackwardError, match="finite_difference"):
        smoothness_penalty(model, x)
    loss = gradient_penalty_loss(model, x, y, method="finite_difference")  # the alternative works
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# --------------------------------------------------------------------------- dropout: replayed masks


def _dropout_mlp(d_in: int = 5, p: float = 0.3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d_in, 16), nn.Tanh(), nn.Dropout(p), nn.Linear(16, 3)).to(D64).train()


def _penalty_grad(model: nn.Module, x: Tensor, y: Tensor, seed: int, **kw) -> Tensor:
    """The parameter gradient of the penalty alone (the clean gradient under the same masks subtracted)."""
    torch.manual_seed(seed)
    clean = flat_grad(F.cross_entropy(model(x), y), model)
    torch.manual_seed(seed)
    return flat_grad(gradient_penalty_loss(model, x, y, **kw), model) - clean


@pytest.mark.parametrize("site", ["input", "1"])
def test_finite_difference_penalty_replays_dropout_masks(site: str) -> None:
    """Both finite-difference passes see the clean pass's dropout mask, so FD matches double backward in
    train() mode (before: two masks, the difference quotient measured the masks, cosine ~ 0)."""
    model = _dropout_mlp()
    x, y = torch.randn(16, 5, dtype=D64), torch.randint(0, 3, (16,))
    exact = _penalty_grad(model, x, y, 3, eps=0.5, site=site)
    fd = _penalty_grad(model, x, y, 3, eps=0.5, site=site, method="finite_difference", fd_step=1e-6)
    assert cosine(exact, fd) > 0.99
    assert float((exact - fd).norm() / exact.norm()) < 1e-4


def test_finite_difference_penalty_leaves_the_rng_where_one_pass_would() -> None:
    model = _dropout_mlp()
    x, y = torch.randn(8, 5, dtype=D64), torch.randint(0, 3, (8,))
    torch.manual_seed(5)
    model(x)
    after_one_pass = torch.rand(4)
    torch.manual_seed(5)
    gradient_penalty_loss(model, x, y, method="finite_difference").backward()
    torch.testing.assert_close(torch.rand(4), after_one_pass, rtol=0, atol=0)


class _RecordingDropout(nn.Module):
    """Dropout written with torch.rand (like a functional F.dropout call) that records every mask it draws."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p, self.masks = p, []

    def forward(self, h: Tensor) -> Tensor:
        if not self.training:
            return h
        keep = torch.rand(h.shape, dtype=h.dtype, device=h.device) >= self.p
        self.masks.append(keep)
        return h * keep / (1 - self.p)


@pytest.mark.parametrize("n_power", [1, 3])
def test_vat_probes_replay_the_clean_passs_dropout_mask(n_power: int) -> None:
    """The clean-target pass and every probe draw the same mask (the finite difference is H u of one network);
    the final pass draws a fresh one. Before: each pass drew its own mask."""
    drop = _RecordingDropout(0.5)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), drop, nn.Linear(16, 3)).to(D64).train()
    x = torch.randn(16, 10, dtype=D64)
    vat_loss(model, x, eps=0.5, n_power=n_power, probe_dropout=True).backward()
    assert len(drop.masks) == n_power + 2  # clean target, n_power probes, final pass
    for m in drop.masks[1:-1]:
        assert torch.equal(m, drop.masks[0])
    assert not torch.equal(drop.masks[-1], drop.masks[0])


@pytest.mark.gpu
def test_cuda_generators_are_replayed() -> None:
    """The CUDA generator is replayed like the CPU one: FD penalty = exact penalty, VAT probes share the mask."""
    dev = torch.device("cuda")
    model = _dropout_mlp().to(dev)
    x, y = torch.randn(16, 5, dtype=D64, device=dev), torch.randint(0, 3, (16,), device=dev)
    exact = _penalty_grad(model, x, y, 3, eps=0.5)
    fd = _penalty_grad(model, x, y, 3, eps=0.5, method="finite_difference", fd_step=1e-6)
    assert float((exact - fd).norm() / exact.norm()) < 1e-4
    drop = _RecordingDropout(0.5)
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), drop, nn.Linear(16, 3)).to(dev, D64).train()
    vat_loss(net, x, eps=0.5, n_power=2, probe_dropout=True).backward()
    assert all(torch.equal(m, drop.masks[0]) for m in drop.masks[1:-1])
    assert not torch.equal(drop.masks[-1], drop.masks[0])


def test_vat_ignores_noisy_clean_logits_for_the_power_iteration() -> None:
    """clean_logits from the caller's training-mode forward (dropout on) cannot be the probes' target (dropout
    off): the direction is that of the dropout-free network, as without clean_logits."""
    model = _dropout_mlp(d_in=10, p=0.5)
    x = torch.randn(16, 10, dtype=D64)
    noisy_logits = model(x)  # the caller's own training forward
    got = vat_direction(model, x, xi=1e-6, clean_logits=noisy_logits, generator=torch.Generator().manual_seed(1))
    ref = vat_direction(model.eval(), x, xi=1e-6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(got, ref)


# --------------------------------------------------------------------------- inputs computed upstream


class _Upstream(nn.Module):
    """The user's encoder followed by the regularised model (only the latter is passed in)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Sequential(nn.Linear(6, 5), nn.Tanh()).to(D64)
        self.model = mlp(d_in=5)


@pytest.mark.parametrize("site", ["input", "1"])
@pytest.mark.parametrize(("form", "scope"), [("squared", "global"), ("norm", "per_sample")])
def test_finite_difference_penalty_differentiates_through_upstream_inputs(site: str, form: str, scope: str) -> None:
    """Before: the upstream encoder got only the c/h-weighted perturbed term (relative error ~1e4)."""
    net = _Upstream()
    x, y = torch.randn(8, 6, dtype=D64), torch.randint(0, 3, (8,))
    kw = {"eps": 0.7, "site": site, "form": form, "scope": scope}
    exact = flat_grad(gradient_penalty_loss(net.model, net.enc(x), y, **kw), net)
    fd = flat_grad(gradient_penalty_loss(net.model, net.enc(x), y, method="finite_difference", fd_step=1e-6, **kw), net)
    assert float((exact - fd).norm() / exact.norm()) < 1e-4


class _EmbedMean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.head = nn.Embedding(20, 5), nn.Linear(5, 3)
        self.to(D64)

    def forward(self, e: Tensor) -> Tensor:
        return self.head(torch.tanh(e).mean(1))


def test_regularizers_on_inputs_embeds_from_the_models_own_embedding() -> None:
    """FGM/PGD/VAT/penalty on ``inputs_embeds = model.emb(ids)``: the embedding weight is both a parameter of
    the model and upstream of the input (before: "backward through the graph a second time")."""
    model = _EmbedMean()
    ids, y = torch.randint(0, 20, (4, 7)), torch.randint(0, 3, (4,))
    # FGM against the hand-written two-pass reference.
    emb = model.emb(ids)
    (g,) = torch.autograd.grad(F.cross_entropy(model(emb), y), emb, retain_graph=True)
    delta = 0.3 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1)
    ref = flat_grad(F.cross_entropy(model(emb), y) + F.cross_entropy(model(emb + delta.detach()), y), model)
    torch.testing.assert_close(flat_grad(fgm_loss(model, model.emb(ids), y, eps=0.3), model), ref)
    # PGD with one l2 step of size eps is FGM.
    pgd = pgd_loss(model, model.emb(ids), y, eps=0.3, steps=1, norm="l2")
    torch.testing.assert_close(flat_grad(pgd, model), ref)
    # The finite-difference penalty against double backward, and VAT runs through.
    exact = flat_grad(gradient_penalty_loss(model, model.emb(ids), y), model)
    fd = flat_grad(gradient_penalty_loss(model, model.emb(ids), y, method="finite_difference", fd_step=1e-6), model)
    assert float((exact - fd).norm() / exact.norm()) < 1e-4
    for reg in (vat_loss(model, model.emb(ids), eps=0.3), smoothness_penalty(model, model.emb(ids))):
        model.zero_grad()
        reg.backward()
        assert model.emb.weight.grad is not None and bool(model.emb.weight.grad.abs().sum() > 0)


def test_fgm_hands_the_clean_gradient_to_an_upstream_encoder() -> None:
    net = _Upstream()
    x, y = torch.randn(8, 6, dtype=D64), torch.randint(0, 3, (8,))
    got = flat_grad(fgm_loss(net.model, net.enc(x), y, eps=0.2, norm="none"), net)
    h = net.enc(x)
    (g,) = torch.autograd.grad(F.cross_entropy(net.model(h), y), h, retain_graph=True)
    ref = F.cross_entropy(net.model(h), y) + F.cross_entropy(net.model(h + 0.2 * g.detach()), y)
    torch.testing.assert_close(got, flat_grad(ref, net))


# --------------------------------------------------------------------------- VAT probe radius and autocast


def _hvp_power_iteration(model: nn.Module, x: Tensor, u0: Tensor, r: int) -> Tensor:
    """Exact float64 reference: r steps of u <- H u / ||H u|| with H = J^T (diag p - p p^T) J, the Hessian of
    KL(p(x) || p(x + e)) at e = 0, per sample (H u from J u and J^T, never the D x D matrix)."""
    m64 = copy.deepcopy(model).double()
    x64 = x.double()
    p = m64(x64).softmax(-1).detach()
    u = u0.double()
    for _ in range(r):
        u = u / u.norm(dim=1, keepdim=True)
        _, ju = torch.func.jvp(m64, (x64,), (u,))  # (B, C): J u per sample (the batch rows are independent)
        lam_ju = p * ju - p * (p * ju).sum(1, keepdim=True)
        _, vjp = torch.func.vjp(m64, x64)
        (u,) = vjp(lam_ju)  # J^T Lambda J u
    return u / u.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("autocast", [False, True])
def test_vat_direction_matches_float64_reference_in_float32_and_bf16(autocast: bool) -> None:
    """784-input MLP, paper default xi=1e-6: before, 0% of the float32 directions (and of the bf16-autocast ones
    even at xi=1e-2) agreed with the exact power iteration; the probe radius is now raised to
    sqrt(eps) * ||x|| and the iteration runs in float32 under autocast."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 64), nn.Tanh(), nn.Linear(64, 10))
    x = torch.rand(64, 784)
    u0 = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))  # the start vat_direction draws
    ref = _hvp_power_iteration(model, x, u0, r=1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        d = vat_direction(model, x, generator=torch.Generator().manual_seed(7))
    assert d.dtype == torch.float32
    cos = F.cosine_similarity(d.double(), ref, dim=1)
    assert float((cos > 0.99).double().mean()) >= 0.95


def test_probe_radius_rule() -> None:
    x32 = torch.full((3, 100), 0.5)
    torch.testing.assert_close(probe_radius(x32, 1e-6).flatten(), torch.full((3,), 5 * 2**-11.5))
    torch.testing.assert_close(probe_radius(x32, 1.0).flatten(), torch.ones(3))  # representable: kept
    x64 = x32.double()
    torch.testing.assert_close(probe_radius(x64, 1e-6).flatten(), torch.full((3,), 1e-6, dtype=D64))
    torch.testing.assert_close(probe_radius(x32, 1e-6, "global"), torch.tensor(5 * 3**0.5 * 2**-11.5))


def test_vat_final_pass_runs_under_autocast() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    x = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = vat_loss(model, x, eps=1.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# --------------------------------------------------------------------------- hyperparameters


_X, _Y = torch.randn(4, 5, dtype=D64), torch.tensor([0, 1, 2, 0])
_BAD = [
    ("eps", lambda m, v: fgm_loss(m, _X, _Y, eps=v)),
    ("eps", lambda m, v: pgd_loss(m, _X, _Y, eps=v)),
    ("alpha", lambda m, v: pgd_loss(m, _X, _Y, eps=0.1, alpha=v)),
    ("eps", lambda m, v: vat_loss(m, _X, eps=v)),
    ("xi", lambda m, v: vat_loss(m, _X, xi=v)),
    ("xi", lambda m, v: vat_direction(m, _X, xi=v)),
    ("eps", lambda m, v: gradient_penalty_loss(m, _X, _Y, eps=v)),
    ("fd_step", lambda m, v: gradient_penalty_loss(m, _X, _Y, method="finite_difference", fd_step=v)),
    ("sigma", lambda m, v: noisy_loss(m, _X, _Y, sigma=v)),
    ("sigma", lambda m, v: noise_consistency_loss(m, _X, sigma=v)),
    ("sigma", lambda m, v: perturb(_X, sigma=v)),
    ("label_smoothing", lambda m, v: noisy_loss(m, _X, _Y, sigma=0.1, label_smoothing=v)),
    ("clamp[1]", lambda m, v: fgm_loss(m, _X, _Y, eps=0.1, clamp=(0.0, v))),
    ("eps", lambda m, v: FGM(eps=v)),
    ("eps", lambda m, v: VAT(eps=v)),
    ("sigma", lambda m, v: NoisyLoss(sigma=v)),
]


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize(("name", "call"), _BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(_BAD)])
def test_non_finite_hyperparameters_are_rejected(name: str, call, value: float) -> None:
    """Before: eps=inf etc. were accepted and gave NaN/inf losses."""
    with pytest.raises(ValueError, match=re.escape(name) + " must be"):
        call(mlp(), value)


def test_integer_and_range_hyperparameters() -> None:
    model = mlp()
    with pytest.raises(TypeError, match="steps must be an integer"):
        pgd_loss(model, _X, _Y, eps=0.1, steps=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n_power must be an integer"):
        vat_loss(model, _X, n_power=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        smoothness_penalty(model, _X, n_samples=0)
    with pytest.raises(ValueError, match="label_smoothing must be < 1"):
        noisy_loss(model, _X, _Y, sigma=0.1, label_smoothing=1.0)
    with pytest.raises(ValueError, match="clamp must satisfy low < high"):
        fgm_loss(model, _X, _Y, eps=0.1, clamp=(1.0, 0.0))
    with pytest.raises(ValueError, match="reduction must be one of"):
        vat_loss(model, _X, reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma must be > 0"):
        NoiseConsistencyLoss(sigma=0.0)


# --------------------------------------------------------------------------- what users pass


class _Keyword(nn.Module):
    """A model with a keyword-only mask argument: model(x, mask=m)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def forward(self, x: Tensor, *, mask: Tensor | None = None) -> Tensor:
        out = self.net(x)
        return out if mask is None else out.masked_fill(~mask, -5.0)


def test_dict_batches_are_passed_as_keyword_arguments() -> None:
    """Before: a dict was a TypeError (the model was called positionally only)."""
    model = _Keyword()
    x, y = torch.randn(6, 5, dtype=D64), torch.randint(0, 3, (6,))
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[:3, 2] = False
    batch = {"x": x, "mask": mask}

    def ref_fgm() -> Tensor:
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xx, mask=mask), y), xx)
        d = 0.2 * g / g.norm(dim=1, keepdim=True)
        return F.cross_entropy(model(x, mask=mask), y) + F.cross_entropy(model(x + d, mask=mask), y)

    want = flat_grad(ref_fgm(), model)
    torch.testing.assert_close(flat_grad(fgm_loss(model, batch, y, eps=0.2), model), want)
    torch.testing.assert_close(flat_grad(fgm_loss(model, batch, y, eps=0.2, site="input:x"), model), want)
    for fn in (
        lambda: pgd_loss(model, batch, y, eps=0.2, steps=2),
        lambda: vat_loss(model, batch, eps=0.5, xi=1e-3),
        lambda: gradient_penalty_loss(model, batch, y),
        lambda: gradient_penalty_loss(model, batch, y, method="finite_difference"),
        lambda: smoothness_penalty(model, batch),
        lambda: noisy_loss(model, batch, y, sigma=0.1, site="weights"),
        lambda: noise_consistency_loss(model, batch, sigma=0.1, site="net.1"),
    ):
        loss = fn()
        assert torch.isfinite(loss)
        loss.backward()
    with pytest.raises(ValueError, match="exactly one floating tensor"):
        fgm_loss(model, {"x": x, "mask": mask, "other": x}, y, eps=0.1)
    with pytest.raises(ValueError, match="use site='embedding'"):
        fgm_loss(nn.Sequential(nn.Embedding(5, 3), nn.Flatten()), torch.tensor([[1], [2]]), y[:2], eps=0.1)


class _NoSyncRecorder(nn.Module):
    """Follows DDP's protocol: records whether each forward ran inside no_sync()."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.in_no_sync, self.passes = inner, False, []

    @contextlib.contextmanager
    def no_sync(self):
        self.in_no_sync = True
        try:
            yield
        finally:
            self.in_no_sync = False

    def forward(self, x: Tensor) -> Tensor:
        self.passes.append(self.in_no_sync)
        return self.inner(x)


@pytest.mark.parametrize(
    ("name", "n_passes"),
    [("fgm", 2), ("fgm_hidden", 2), ("pgd", 4), ("gp_fd", 2), ("gp_fd_hidden", 2), ("vat", 3), ("noisy", 3)],
)
def test_every_extra_pass_but_the_last_runs_in_no_sync(name: str, n_passes: int) -> None:
    model = _NoSyncRecorder(mlp())
    x, y = torch.randn(4, 5, dtype=D64), torch.randint(0, 3, (4,))
    calls = {
        "fgm": lambda: fgm_loss(model, x, y, eps=0.1),
        "fgm_hidden": lambda: fgm_loss(model, x, y, eps=0.1, site="inner.1"),
        "pgd": lambda: pgd_loss(model, x, y, eps=0.1, steps=3),
        "gp_fd": lambda: gradient_penalty_loss(model, x, y, method="finite_difference"),
        "gp_fd_hidden": lambda: gradient_penalty_loss(model, x, y, site="inner.1", method="finite_difference"),
        "vat": lambda: vat_loss(model, x, eps=0.5, xi=1e-3),
        "noisy": lambda: noisy_loss(model, x, y, sigma=0.1, k=3),
    }
    calls[name]().backward()
    # Only the last pass, whose graph loss.backward() goes through, prepares the gradient reduction.
    assert model.passes == [True] * (n_passes - 1) + [False]
