"""Multi-task weighting: the theorems of kexue.fm/archives/8870, 8896 and 8907 as tests, plus plumbing."""

from __future__ import annotations

import doctest
import importlib
import itertools
import math
import pkgutil
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

import kexue.losses
from _multitask_toy import ToyMTL, flat, strategy_kwargs, toy_data
from kexue.losses import multitask as mt

# ----------------------------------------------------------------------------------------------- fixtures


def _data(n_tasks: int = 3) -> tuple[Tensor, Tensor]:
    return toy_data(n_tasks)


_flat = flat


def _grads(
    name: str, transform: object, kwargs: dict | None = None, *, seed: int = 0
) -> tuple[list[Tensor], list[Tensor]]:
    """Shared and head gradients after one strategy backward on transformed losses."""
    model = ToyMTL(seed=seed)
    x, y = _data()
    losses = transform(model.losses(x, y))  # type: ignore[operator]
    strat = mt.make_strategy(name, 3, **(kwargs or {})).double()
    strat.backward(losses, model.trunk.parameters())
    return [p.grad.clone() for p in model.trunk.parameters()], [p.grad.clone() for p in model.heads.parameters()]


LAM = 1234.5
SHIFT = 3.0


def _scale(ls: list[Tensor]) -> list[Tensor]:
    return [ls[0], LAM * ls[1], ls[2]]


def _shift(ls: list[Tensor]) -> list[Tensor]:
    return [ls[0], ls[1] + SHIFT, ls[2]]


def _ident(ls: list[Tensor]) -> list[Tensor]:
    return ls


def _prior(transform: object) -> dict:
    """Prior constants of the (transformed) losses: a stand-in re-estimated on the transformed loss."""
    base = [0.7, 1.3, 2.1]
    if transform is _scale:
        base[1] *= LAM
    if transform is _shift:
        base[1] += SHIFT
    return {"prior": torch.tensor(base, dtype=torch.float64)}


# ------------------------------------------------------------------------------------ scale invariance


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("initial", {"eps": 0.0}),
        ("prior", None),
        ("realtime", {"eps": 0.0}),
        ("log", None),
        ("gradient_normalization", {"eps": 0.0}),
    ],
)
def test_scale_invariance(name: str, kwargs: dict | None) -> None:
    """Part 1: multiplying one task loss by lambda leaves the shared update unchanged."""
    kw_a = _prior(_ident) if name == "prior" else kwargs
    kw_b = _prior(_scale) if name == "prior" else kwargs
    sa, ha = _grads(name, _ident, kw_a)
    sb, hb = _grads(name, _scale, kw_b)
    torch.testing.assert_close(_flat(sa), _flat(sb), rtol=1e-9, atol=1e-12)
    if name != "gradient_normalization":  # loss-level schemes leave the heads unchanged too
        torch.testing.assert_close(_flat(ha), _flat(hb), rtol=1e-9, atol=1e-12)


def test_geometric_mean_is_scale_invariant_in_direction_only() -> None:
    """Part 1: the geometric mean (gamma = 0) keeps its direction; its length scales by lambda^(1/n)."""
    sa, _ = _grads("power_mean", _ident, {"gamma": 0.0})
    sb, _ = _grads("power_mean", _scale, {"gamma": 0.0})
    torch.testing.assert_close(_flat(sb), LAM ** (1 / 3) * _flat(sa), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("name", "kwargs"), [("equal", None), ("mgda", None), ("power_mean", {"gamma": 1.0})])
def test_not_scale_invariant(name: str, kwargs: dict | None) -> None:
    """Control: the plain sum, MGDA and the gamma != 0 power mean do change when a loss is rescaled."""
    sa, _ = _grads(name, _ident, kwargs)
    sb, _ = _grads(name, _scale, kwargs)
    assert not torch.allclose(_flat(sa), _flat(sb), rtol=1e-3)


# ------------------------------------------------------------------------------------ shift invariance


def test_gradient_normalization_is_shift_invariant() -> None:
    """Part 1, Eq. 13: adding a constant to a loss changes nothing (the gradients are the same)."""
    sa, ha = _grads("gradient_normalization", _ident)
    sb, hb = _grads("gradient_normalization", _shift)
    torch.testing.assert_close(_flat(sa), _flat(sb), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(_flat(ha), _flat(hb), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["initial", "prior", "realtime", "log"])
def test_loss_level_schemes_are_not_shift_invariant(name: str) -> None:
    """Part 1, "平移不变": the loss-level normalisations change their update when a constant is added."""
    sa, _ = _grads(name, _ident, _prior(_ident) if name == "prior" else None)
    sb, _ = _grads(name, _shift, _prior(_shift) if name == "prior" else None)
    cos = torch.nn.functional.cosine_similarity(_flat(sa), _flat(sb), dim=0)
    assert not torch.allclose(_flat(sa), _flat(sb), rtol=1e-3)
    assert cos < 1 - 1e-6  # the direction changes, not only the length


# ---------------------------------------------------------------------- real-time == grad sum log L


def test_realtime_equals_log_sum_gradient_and_geometric_mean_direction() -> None:
    """Part 1, Eqs. 5-6: grad sum L/sg(L) == grad sum log L, parallel to grad of the geometric mean."""
    x, y = _data()
    grads = []
    for fn in (
        lambda ls: mt.realtime_weighting(ls, eps=0.0).loss,
        lambda ls: torch.log(torch.stack(ls)).sum(),
        lambda ls: torch.stack(ls).prod() ** (1.0 / len(ls)),
    ):
        model = ToyMTL()
        fn(model.losses(x, y)).backward()
        grads.append(_flat([p.grad for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)
    cos = torch.nn.functional.cosine_similarity(grads[0], grads[2], dim=0)
    torch.testing.assert_close(cos, torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-10)


def test_realtime_value_is_n_and_ema_denominator() -> None:
    ls = [torch.tensor(2.0), torch.tensor(30.0)]
    torch.testing.assert_close(mt.RealTimeWeighting(2, eps=0.0)(ls).loss, torch.tensor(2.0))
    s = mt.RealTimeWeighting(2, eps=0.0, ema=0.5)
    s(ls)
    out = s([torch.tensor(4.0), torch.tensor(10.0)])
    torch.testing.assert_close(s.average, torch.tensor([3.0, 20.0]))
    torch.testing.assert_close(out.weights, torch.tensor([1 / 3.0, 1 / 20.0]))


# -------------------------------------------------------------------------------------------- power mean


@given(
    st.lists(st.floats(0.01, 100.0), min_size=2, max_size=6),
    st.lists(st.floats(-8.0, 8.0), min_size=2, max_size=6),
)
def test_power_mean_monotone_in_gamma(values: list[float], gammas: list[float]) -> None:
    """Part 1, "广义平均": L(gamma) is non-decreasing in gamma and lies between min and max."""
    L = torch.tensor(values, dtype=torch.float64)
    out = [float(mt.power_mean(L, gamma=g).loss) for g in sorted(gammas)]
    for a, b in itertools.pairwise(out):
        assert a <= b * (1 + 1e-12) + 1e-12
    assert min(values) * (1 - 1e-9) <= out[0]
    assert out[-1] <= max(values) * (1 + 1e-9)


def test_power_mean_special_cases_and_limits() -> None:
    L = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64)
    pm = lambda g: mt.power_mean(L, gamma=g).loss  # noqa: E731
    torch.testing.assert_close(pm(1.0), L.mean())
    torch.testing.assert_close(pm(0.0), L.prod() ** (1 / 3))
    torch.testing.assert_close(pm(-1.0), 3 / (1 / L).sum())
    torch.testing.assert_close(pm(float("inf")), L.max())
    torch.testing.assert_close(pm(float("-inf")), L.min())
    torch.testing.assert_close(pm(400.0), L.max(), rtol=5e-3, atol=0)  # limit gamma -> +inf, no overflow
    torch.testing.assert_close(pm(-400.0), L.min(), rtol=5e-3, atol=0)
    torch.testing.assert_close(pm(1e-7), pm(0.0), rtol=1e-6, atol=0)  # continuity at 0


@pytest.mark.parametrize("gamma", [-2.0, 0.0, 0.5, 1.0, 3.0])
def test_power_mean_weights_are_its_gradient(gamma: float) -> None:
    L = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64, requires_grad=True)
    out = mt.power_mean(L, gamma=gamma)
    (g,) = torch.autograd.grad(out.loss, L)
    torch.testing.assert_close(out.weights, g)
    assert torch.autograd.gradcheck(lambda t: mt.power_mean(t, gamma=gamma).loss, (L,))


def _gradcheck_cases() -> list[tuple[str, object, int]]:
    """(id, function of the (3,) losses [and log_vars], number of inputs) for every differentiable loss-level
    weighting, functional and module."""
    c = [1.0, 2.0, 3.0]
    return [
        ("weighted_sum", lambda t: mt.weighted_sum(t, [0.2, 0.3, 0.5]).loss, 1),
        ("normalized_sum", lambda t: mt.normalized_sum(t, c, eps=0.1).loss, 1),
        # real-time normalisation has the value n whatever the losses; with fixed denominators it is a plain
        # weighted sum, whose gradient is checked here (test_realtime_equals_log_sum_gradient checks the rest)
        ("realtime_fixed_denominators", lambda t: mt.realtime_weighting(t, denominators=c).loss, 1),
        ("log_sum", lambda t: mt.log_sum(t, eps=0.01).loss, 1),
        ("power_mean_0", lambda t: mt.power_mean(t, gamma=0.0).loss, 1),
        ("power_mean_2", lambda t: mt.power_mean(t, gamma=2.0).loss, 1),
        ("power_mean_-3", lambda t: mt.power_mean(t, gamma=-3.0).loss, 1),
        ("power_mean_inf", lambda t: mt.power_mean(t, gamma=math.inf).loss, 1),
        ("uncertainty_weighting", lambda t, u: mt.uncertainty_weighting(t, u).loss, 2),
        ("WeightedSum", lambda t: mt.WeightedSum(3, weights=c).double()(t).loss, 1),
        ("InitialLossWeighting", lambda t: mt.InitialLossWeighting(3, initial=c).double()(t).loss, 1),
        ("PriorLossWeighting", lambda t: mt.PriorLossWeighting(3, prior=c).double()(t).loss, 1),
        ("LogSum", lambda t: mt.LogSum(3).double()(t).loss, 1),
        ("PowerMean", lambda t: mt.PowerMean(3, gamma=1.5, normalizers=c).double()(t).loss, 1),
        ("DynamicWeightAverage", lambda t: mt.DynamicWeightAverage(3).double()(t).loss, 1),
    ]


@pytest.mark.parametrize("case", _gradcheck_cases(), ids=lambda c: c[0])
def test_gradcheck_loss_level(case: tuple[str, object, int]) -> None:
    """float64 gradcheck of every differentiable loss-level weighting (functional and module)."""
    _, fn, k = case
    L = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64, requires_grad=True)
    s = torch.tensor([0.1, -0.3, 0.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (L, s)[:k])  # type: ignore[arg-type]


def test_gradcheck_uncertainty_module_log_vars() -> None:
    """The module's learnable log-variances (through torch.func.functional_call) and the losses together."""
    strat = mt.UncertaintyWeighting(3).double()
    L = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64, requires_grad=True)
    s0 = torch.tensor([0.1, -0.3, 0.2], dtype=torch.float64, requires_grad=True)

    def f(t: Tensor, s: Tensor) -> Tensor:
        return torch.func.functional_call(strat, {"log_vars": s}, (t,)).loss

    assert torch.autograd.gradcheck(f, (L, s0))


# -------------------------------------------------------------------------------------------- Kendall


def test_uncertainty_weighting_at_optimum_is_half_log_loss_gradient() -> None:
    """[ours] At the optimum exp(s_i) = L_i the network gradient is (1/2) grad sum log L_i."""
    x, y = _data()
    model = ToyMTL()
    ls = model.losses(x, y)
    strat = mt.UncertaintyWeighting(3).double()
    # optimise s alone to convergence (the losses are fixed numbers here)
    opt = torch.optim.Adam(strat.parameters(), lr=0.1)
    fixed = [loss.detach() for loss in ls]
    for _ in range(400):
        opt.zero_grad()
        strat(fixed).loss.backward()
        opt.step()
    torch.testing.assert_close(strat.log_vars.detach(), torch.log(torch.stack(fixed)), rtol=0, atol=1e-3)
    with torch.no_grad():
        strat.log_vars.copy_(torch.log(torch.stack(fixed)))  # the exact stationary point
    (g_s,) = torch.autograd.grad(strat(fixed).loss, [strat.log_vars])
    torch.testing.assert_close(g_s, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
    g_kendall = torch.autograd.grad(strat(ls).loss, list(model.parameters()), retain_graph=True)
    g_log = torch.autograd.grad(0.5 * torch.log(torch.stack(ls)).sum(), list(model.parameters()))
    torch.testing.assert_close(_flat(list(g_kendall)), _flat(list(g_log)), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------- MGDA


@given(st.integers(2, 6), st.integers(2, 30), st.integers(0, 10_000))
def test_mgda_solution_is_non_conflicting(n: int, d: int, seed: int) -> None:
    """Part 2: the min-norm point u satisfies <g_i, u> >= ||u||^2 >= 0 for every task."""
    G = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u, alpha = mt.mgda_direction(G, max_iter=5000)
    assert (alpha >= 0).all()
    torch.testing.assert_close(alpha.sum(), torch.tensor(1.0, dtype=torch.float64))
    scale = float((G * G).sum(1).max())
    assert ((G @ u) >= (u @ u) - 1e-6 * scale).all()


@given(st.integers(2, 20), st.integers(0, 10_000))
def test_mgda_two_task_closed_form(d: int, seed: int) -> None:
    """Part 2: two tasks use gamma = clip(<g2-g1,g2>/||g1-g2||^2, 0, 1); it is the min over a fine grid, and
    Frank-Wolfe on three tasks with a duplicated gradient finds the same point."""
    g1, g2 = torch.randn(2, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u, alpha = mt.mgda_direction(torch.stack([g1, g2]))
    gamma = float(torch.clamp((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0, 1))
    torch.testing.assert_close(alpha, torch.tensor([gamma, 1 - gamma], dtype=torch.float64))
    t = torch.linspace(0, 1, 20001, dtype=torch.float64)
    grid = ((t[:, None] * g1 + (1 - t[:, None]) * g2) ** 2).sum(1).min()
    assert float(u @ u) <= float(grid) + 1e-12
    u3, _ = mt.mgda_direction(torch.stack([g1, g2, g1]), max_iter=20000, tol=1e-14)
    torch.testing.assert_close(u3 @ u3, u @ u, rtol=1e-4, atol=1e-10)


def test_mgda_frank_wolfe_matches_su_averaging_iteration() -> None:
    """Part 2: Su's smooth-min iteration u <- (k u + g_tau)/(k+1) reaches the same min-norm point (slowly)."""
    G = torch.randn(4, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    u, _ = mt.mgda_direction(G, max_iter=10000, tol=1e-14)
    v = G[0].clone()
    for k in range(1, 20_000):
        tau = int(torch.argmin(G @ v))
        v = (k * v + G[tau]) / (k + 1)
    assert float((u - v).norm()) < 1e-2 * float(G.norm(dim=1).max())


def test_normalized_sum_is_pareto_consistent_for_two_tasks() -> None:
    """Part 2: for n = 2, g1/||g1|| + g2/||g2|| has a non-negative inner product with both gradients."""
    G = torch.randn(500, 2, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for pair in G:
        u, _ = mt.gradient_normalization(pair)
        assert ((pair @ u) >= -1e-12).all()


def test_mgda_ub_proof_counterexample() -> None:
    """Part 2: Su's counterexample to MGDA-UB's Appendix A (x^T y >= 0 <=> x^T M y >= 0 for SPD M is false),
    and a concrete case where the MGDA-UB direction, found on the representation gradients, conflicts with a
    task
    in parameter space even though the Jacobian is full rank."""
    x, y = torch.tensor([1.0, -2.0]), torch.tensor([1.0, 1.0])
    M = torch.diag(torch.tensor([3.0, 1.0]))
    assert float(x @ y) < 0 <= float(x @ M @ y)
    J = torch.diag(torch.tensor([3.0, 1.0]).sqrt()).double()  # dH/dtheta, full rank, J J^T = M
    H = torch.tensor([[1.0, 0.0], [-3.0, -1.0]], dtype=torch.float64)  # grad of L_i wrt the representation
    u_h, _alpha = mt.mgda_direction(H)  # MGDA-UB: min-norm on the representation gradients
    assert ((H @ u_h) >= -1e-12).all()  # non-conflicting in H space ...
    g_theta = H @ J  # true parameter gradients g_i = J^T h_i
    update = u_h @ J  # the parameter update MGDA-UB actually takes: grad_theta of sum alpha_i L_i
    assert float((g_theta @ update).min()) < 0  # ... but task 2 gets worse to first order
    u_true, _ = mt.mgda_direction(g_theta)  # the real MGDA on theta is non-conflicting
    assert ((g_theta @ u_true) >= -1e-12).all()


# ---------------------------------------------------------------------------------------- projection


@given(st.integers(1, 4), st.integers(2, 20), st.integers(0, 10_000))
def test_projection_never_increases_auxiliaries_to_first_order(m: int, d: int, seed: int) -> None:
    """Part 3: u = g0 + sum lambda_i g_i has <u, g_i> >= 0; KKT: lambda_i > 0 only where <u, g_i> = 0."""
    G = torch.randn(m + 1, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u, lam = mt.primary_auxiliary_projection(G[0], G[1:], max_sweeps=5000, tol=1e-20)
    scale = float((G * G).sum(1).max())
    inner = G[1:] @ u
    assert (lam >= 0).all()
    assert (inner >= -1e-6 * scale).all()
    assert (inner[lam > 1e-9].abs() <= 1e-6 * scale).all()


def test_projection_closed_form_one_auxiliary() -> None:
    g0, g1 = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 1.0])
    u, _lam = mt.primary_auxiliary_projection(g0, g1)
    expect = g0 + torch.relu(-(g0 @ g1)) / (g1 @ g1) * g1
    torch.testing.assert_close(u, expect)
    torch.testing.assert_close(u @ g1, torch.tensor(0.0), atol=1e-6, rtol=0)
    u2, lam2 = mt.primary_auxiliary_projection(g0, -g1)  # no conflict: g0 untouched
    torch.testing.assert_close(u2, g0)
    assert float(lam2) == 0.0


def test_projection_strategy_on_toy_quadratics() -> None:
    """Part 3 on a model: the written shared gradient never increases any auxiliary loss to first order."""
    model = ToyMTL()
    x, y = _data()
    ls = model.losses(x, y)
    shared = list(model.trunk.parameters())
    g_aux = [_flat(list(torch.autograd.grad(ls[i], shared, retain_graph=True))) for i in (1, 2)]
    g0 = _flat(list(torch.autograd.grad(ls[0], shared, retain_graph=True)))
    mt.PrimaryAuxiliaryProjection(3).backward(ls, shared)
    u = _flat([p.grad for p in shared])
    for g in g_aux:
        assert float(g @ u) >= -1e-10
    assert float(g0 @ u) > 0  # still a descent direction for the main task here


def test_l2_auxiliary_projection() -> None:
    """Part 3 (a): the L2 decay direction never increases ||theta||^2; non-conflicting grads are kept."""
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        grad, theta = torch.randn(2, 7, generator=g, dtype=torch.float64)
        u = mt.l2_auxiliary_projection(grad, theta)
        assert float(u @ theta) >= -1e-10 * float(grad.norm() * theta.norm())
        if float(grad @ theta) >= 0:
            torch.testing.assert_close(u, grad)
    model = ToyMTL()
    x, y = _data()
    shared = list(model.trunk.parameters())
    strat = mt.L2DecayAuxiliary(3)
    g_sum = _flat(list(torch.autograd.grad(sum(model.losses(x, y)), shared)))
    strat.backward(model.losses(x, y), shared)
    theta = _flat([p.detach() for p in shared])
    assert float(_flat([p.grad for p in shared]) @ theta) >= -1e-10
    assert strat.l2_coef is not None
    expect = torch.relu(-(g_sum @ theta)) / (theta @ theta)
    torch.testing.assert_close(strat.l2_coef, expect)
    torch.testing.assert_close(_flat([p.grad for p in shared]), g_sum + expect * theta)


# ----------------------------------------------------------------------------------- gradient plumbing


def test_gradient_level_heads_get_their_own_gradients() -> None:
    model = ToyMTL()
    x, y = _data()
    ls = model.losses(x, y)
    expected = [torch.autograd.grad(ls[i], list(model.heads[i].parameters()), retain_graph=True) for i in range(3)]
    G = torch.stack(
        [_flat(list(torch.autograd.grad(ls[i], list(model.trunk.parameters()), retain_graph=True))) for i in range(3)]
    )
    logs = mt.GradientNormalization(3, eps=0.0).backward(ls, model.trunk.parameters())
    for i in range(3):
        torch.testing.assert_close(_flat([p.grad for p in model.heads[i].parameters()]), _flat(list(expected[i])))
    u_ref = (G / G.norm(dim=1, keepdim=True)).sum(0)
    torch.testing.assert_close(_flat([p.grad for p in model.trunk.parameters()]), u_ref)
    torch.testing.assert_close(logs["weights"], 1 / G.norm(dim=1))


@pytest.mark.parametrize("name", ["gradient_normalization", "mgda", "projection"])
def test_batched_task_gradients_match_the_loop(name: str) -> None:
    x, y = _data()
    ref, bat = ToyMTL(), ToyMTL()
    mt.make_strategy(name, 3).backward(ref.losses(x, y), ref.trunk.parameters())
    mt.make_strategy(name, 3, batched=True).backward(bat.losses(x, y), bat.trunk.parameters())
    torch.testing.assert_close(_flat([p.grad for p in bat.parameters()]), _flat([p.grad for p in ref.parameters()]))


def test_gradient_level_accumulates_into_existing_grads() -> None:
    model = ToyMTL()
    x, y = _data()
    mt.MGDA(3).backward(model.losses(x, y), model.trunk.parameters())
    first = _flat([p.grad for p in model.parameters()]).clone()
    mt.MGDA(3).backward(model.losses(x, y), model.trunk.parameters())
    torch.testing.assert_close(_flat([p.grad for p in model.parameters()]), 2 * first)


@pytest.mark.parametrize("name", sorted(mt.STRATEGIES))
def test_every_registered_strategy_trains_the_toy_model(name: str) -> None:
    model = ToyMTL()
    strat = mt.make_strategy(name, 3, **strategy_kwargs(name)).double()
    x, y = _data()
    opt = torch.optim.Adam(list(model.parameters()) + list(strat.parameters()), lr=1e-2)
    first = None
    for step in range(60):
        opt.zero_grad()
        ls = model.losses(x, y)
        total = float(sum(ls).detach())
        first = total if first is None else first
        logs = strat.backward(ls, model.trunk.parameters())
        assert logs["weights"].shape == (3,)
        for p in model.parameters():
            assert p.grad is not None
            assert torch.isfinite(p.grad).all()
        opt.step()
        if isinstance(strat, mt.DynamicWeightAverage) and step % 10 == 9:
            strat.end_epoch()
    assert float(sum(model.losses(x, y)).detach()) < first


def test_dwa_weights_follow_the_loss_ratio() -> None:
    s = mt.DynamicWeightAverage(2, temperature=2.0)
    for epoch_losses in ([4.0, 4.0], [2.0, 4.0]):
        s([torch.tensor(v) for v in epoch_losses])
        s.end_epoch()
    r = torch.tensor([2.0 / 4.0, 4.0 / 4.0])
    torch.testing.assert_close(s.weights, 2 * torch.softmax(r / 2.0, 0))


def test_gradnorm_weights_stay_normalised_and_favour_the_slow_task() -> None:
    model = ToyMTL()
    strat = mt.GradNorm(3, lr=0.05)
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    for _ in range(20):
        opt.zero_grad()
        ls = model.losses(x, y)
        ls = [ls[0], ls[1], 100 * ls[2]]
        strat.backward(ls, model.trunk.parameters())
        opt.step()
    torch.testing.assert_close(strat.task_weights.sum(), torch.tensor(3.0))
    assert (strat.task_weights > 0).all()
    assert int(torch.argmin(strat.task_weights)) == 2  # the task with the huge gradient is turned down


def test_initial_loss_estimate_and_theory() -> None:
    s = mt.InitialLossWeighting(2, warmup_steps=2)
    s([torch.tensor(2.0), torch.tensor(10.0)])
    s([torch.tensor(4.0), torch.tensor(30.0)])
    s([torch.tensor(100.0), torch.tensor(100.0)])  # after warm-up: frozen
    torch.testing.assert_close(s.initial, torch.tensor([3.0, 20.0]))
    assert mt.classification_initial_loss(10) == pytest.approx(math.log(10))
    logits = torch.zeros(50, 10)
    yk = torch.randint(0, 10, (50,))
    assert mt.classification_initial_loss(10) == pytest.approx(float(nn.functional.cross_entropy(logits, yk)))
    t = torch.randn(100, 3) + 1
    assert mt.regression_initial_loss(t) == pytest.approx(float(nn.functional.mse_loss(torch.zeros_like(t), t)))
    assert mt.regression_prior_loss(t) == pytest.approx(
        float(nn.functional.mse_loss(t.mean(0).expand_as(t), t)), rel=1e-6
    )
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2])
    p = torch.tensor([2, 4, 2]) / 8.0
    assert mt.classification_prior_loss(labels) == pytest.approx(float(-(p * p.log()).sum()), rel=1e-6)
    assert mt.classification_prior_loss(torch.zeros(5, dtype=torch.long)) == 1e-3  # clamped degenerate prior


def _ddp_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = ToyMTL()
        x, y = _data()
        half = x.shape[0] // world
        sl = slice(rank * half, (rank + 1) * half)
        mt.GradientNormalization(3).backward(model.losses(x[sl], y[sl]), model.trunk.parameters())
        if rank == 0:
            torch.save([p.grad for p in model.parameters()], out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: ~40 s on a loaded 2-core machine
def test_gradient_level_all_reduces_task_gradients_under_ddp(tmp_path: Path) -> None:
    """Two gloo ranks with half a batch each give the single-process full-batch result (norms of the global
    per-task gradients, not of each rank's)."""
    import torch.multiprocessing as tmp

    out = tmp_path / "grads.pt"
    tmp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    model = ToyMTL()
    x, y = _data()
    mt.GradientNormalization(3).backward(model.losses(x, y), model.trunk.parameters())
    got = torch.load(out)
    torch.testing.assert_close(_flat(got), _flat([p.grad for p in model.parameters()]))


# ---------------------------------------------------------------------------------------- result and layout


@pytest.mark.parametrize("name", sorted(mt.STRATEGIES))
def test_backward_returns_one_shape_for_every_strategy(name: str) -> None:
    """Every strategy's backward returns the BackwardResult dict: exactly "loss" (0-d) and "weights" (n,),
    detached; for linear rules the loss is sum_i w_i L_i (its shared gradient is the written direction)."""
    model = ToyMTL()
    x, y = _data()
    ls = model.losses(x, y)
    out = mt.make_strategy(name, 3, **strategy_kwargs(name)).double().backward(ls, model.trunk.parameters())
    assert set(out) == {"loss", "weights"}
    assert out["loss"].shape == ()
    assert out["weights"].shape == (3,)
    assert not out["loss"].requires_grad
    assert not out["weights"].requires_grad
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["weights"]).all()
    if mt.STRATEGIES[name].level == "gradient" and name not in ("l2_auxiliary", "gradnorm"):
        L = torch.stack([loss.detach() for loss in ls])
        torch.testing.assert_close(out["loss"], (out["weights"] * L).sum())


def test_every_public_name_is_importable_from_the_package() -> None:
    expected = {
        "MGDA", "STRATEGIES", "BackwardResult", "DynamicWeightAverage", "GradNorm", "GradientNormalization",
        "InitialLossWeighting", "L2DecayAuxiliary", "LogSum", "MultiTaskStrategy", "PowerMean",
        "PrimaryAuxiliaryProjection", "PriorLossWeighting", "RealTimeWeighting", "UncertaintyWeighting",
        "WeightedLoss", "WeightedSum", "classification_initial_loss", "classification_prior_loss",
        "gradient_normalization", "l2_auxiliary_projection", "log_sum", "make_strategy", "mgda_direction",
        "min_norm_coefficients", "normalized_sum", "power_mean", "primary_auxiliary_coefficients",
        "primary_auxiliary_projection", "realtime_weighting", "regression_initial_loss", "regression_prior_loss",
        "uncertainty_weighting", "weighted_sum",
    }  # fmt: skip
    assert set(mt.__all__) == expected
    for name in expected:
        assert getattr(mt, name) is not None
    assert kexue.losses.multitask is mt


def _package_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(mt.__path__, prefix=mt.__name__ + "."))


@pytest.mark.parametrize("module", _package_modules())
def test_docstring_examples(module: str) -> None:
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, extraglobs={"torch": torch})
    assert result.failed == 0
