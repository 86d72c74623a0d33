"""Error paths of every public multi-task function and class: bad input raises ValueError/TypeError naming the
argument (wrong rank, mismatched sizes, empty, int/bool/complex dtypes, NaN/inf, out-of-range hyperparameters)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from _multitask_toy import ToyMTL, toy_data
from kexue.losses import multitask as mt

NAN, INF = math.nan, math.inf
T = torch.tensor


def _two() -> list[Tensor]:
    return [T(1.0), T(2.0)]


# ------------------------------------------------------------------------------------------- task losses

LOSS_FUNCTIONS: dict[str, Callable[[Any], object]] = {
    "weighted_sum": lambda ls: mt.weighted_sum(ls),
    "normalized_sum": lambda ls: mt.normalized_sum(ls, [1.0, 1.0]),
    "realtime_weighting": lambda ls: mt.realtime_weighting(ls),
    "log_sum": lambda ls: mt.log_sum(ls),
    "power_mean": lambda ls: mt.power_mean(ls, gamma=2.0),
    "uncertainty_weighting": lambda ls: mt.uncertainty_weighting(ls, torch.zeros(2)),
    "WeightedSum": lambda ls: mt.WeightedSum(2)(ls),
    "InitialLossWeighting": lambda ls: mt.InitialLossWeighting(2)(ls),
    "PriorLossWeighting": lambda ls: mt.PriorLossWeighting(2, prior=[1.0, 1.0])(ls),
    "RealTimeWeighting": lambda ls: mt.RealTimeWeighting(2, ema=0.9)(ls),
    "LogSum": lambda ls: mt.LogSum(2)(ls),
    "PowerMean": lambda ls: mt.PowerMean(2)(ls),
    "UncertaintyWeighting": lambda ls: mt.UncertaintyWeighting(2)(ls),
    "DynamicWeightAverage": lambda ls: mt.DynamicWeightAverage(2)(ls),
}

BAD_LOSSES: list[tuple[str, object, type[Exception], str]] = [
    ("float", 3.0, TypeError, r"losses must be a sequence or mapping"),
    ("string", "ab", TypeError, r"losses must be a sequence or mapping"),
    ("empty", [], ValueError, r"losses is empty"),
    ("empty_tensor", torch.zeros(0), ValueError, r"losses is empty"),
    ("not_a_tensor", [T(1.0), 2.0], TypeError, r"losses\[1\] must be a torch\.Tensor"),
    ("not_scalar", [T(1.0), torch.ones(3)], ValueError, r"losses\[1\] has shape \(3,\), expected a scalar"),
    ("matrix", torch.ones(2, 2), ValueError, r"must be 1-D"),
    ("int", [T(1.0), T(2)], TypeError, r"losses\[1\] must have a floating-point dtype, got torch.int64"),
    ("bool", [T(1.0), T(True)], TypeError, r"losses\[1\] must have a floating-point dtype, got torch.bool"),
    ("complex", [T(1.0), T(1 + 1j)], TypeError, r"losses\[1\] must have a floating-point dtype"),
    ("int_tensor", T([1, 2]), TypeError, r"losses must have a floating-point dtype"),
    ("nan", [T(1.0), T(NAN)], ValueError, r"losses\[1\] is nan; task losses must be finite"),
    ("inf", [T(INF), T(1.0)], ValueError, r"losses\[0\] is inf; task losses must be finite"),
    ("mapping_entry", {"a": T(1.0), "b": torch.ones(2)}, ValueError, r"losses\['b'\] has shape"),
    ("three_tasks", [T(1.0), T(2.0), T(3.0)], ValueError, r"got 3 task losses, but the strategy was built for 2"),
]


def _bad_loss_cases() -> list[tuple[str, str, object, type[Exception], str]]:
    """(function, losses, exception, message) for every function and bad input that applies to it."""
    out = []
    for fn in sorted(LOSS_FUNCTIONS):
        for name, losses, exc, match in BAD_LOSSES:
            if name == "three_tasks" and fn[0].islower():
                # the functional forms take any number of tasks; their per-task arguments must then match
                if fn == "normalized_sum":
                    match = r"normalizers must have one entry per task \(3\), got 2"
                elif fn == "uncertainty_weighting":
                    match = r"log_vars must have shape \(3,\), got \(2,\)"
                else:
                    continue
            out.append((f"{fn}-{name}", fn, losses, exc, match))
    return out


@pytest.mark.parametrize("case", _bad_loss_cases(), ids=lambda c: c[0])
def test_bad_losses(case: tuple[str, str, object, type[Exception], str]) -> None:
    _, fn, losses, exc, match = case
    with pytest.raises(exc, match=match):
        LOSS_FUNCTIONS[fn](losses)


@pytest.mark.parametrize("name", ["realtime", "log", "power_mean", "dwa", "initial", "gradnorm"])
def test_non_positive_losses_name_the_scheme_and_suggest_a_shift(name: str) -> None:
    s = mt.make_strategy(name, 2, **({"eps": 0.0} if name in ("realtime", "initial") else {}))
    ls = [T(1.0, requires_grad=True), T(-0.5, requires_grad=True)]
    with pytest.raises(ValueError, match=rf"{type(s).__name__} needs task losses > 0 .*losses\[1\]=-0.5.*shift"):
        s.backward(ls, [torch.nn.Parameter(torch.ones(1))])


def test_zero_loss_is_allowed_with_eps_only() -> None:
    with pytest.raises(ValueError, match=r"> 0"):
        mt.realtime_weighting([T(0.0)], eps=0.0)
    assert torch.isfinite(mt.realtime_weighting([T(0.0), T(1.0)], eps=1e-8).loss)
    assert torch.isfinite(mt.log_sum([T(0.0), T(1.0)], eps=1e-3).loss)
    assert torch.isfinite(mt.LogSum(2, eps=1e-3)([T(0.0), T(1.0)]).loss)  # the module passes eps to the check


# ---------------------------------------------------------------------------------- functional hyperparameters

Case = tuple[str, Callable[[], object], type[Exception], str]

FUNCTIONAL: list[Case] = [
    (
        "weights_length",
        lambda: mt.weighted_sum(_two(), [1.0, 2.0, 3.0]),
        ValueError,
        r"weights must have one entry per task \(2\), got 3",
    ),
    ("weights_negative", lambda: mt.weighted_sum(_two(), [1.0, -2.0]), ValueError, r"weights must be >= 0"),
    ("weights_inf", lambda: mt.weighted_sum(_two(), [1.0, INF]), ValueError, r"weights must be finite"),
    ("weights_nan", lambda: mt.weighted_sum(_two(), T([1.0, NAN])), ValueError, r"weights must be finite"),
    ("weights_bool", lambda: mt.weighted_sum(_two(), [True, False]), TypeError, r"weights\[0\] must be a real number"),
    (
        "weights_bool_tensor",
        lambda: mt.weighted_sum(_two(), T([True, False])),
        TypeError,
        r"weights must be real numbers",
    ),
    ("weights_complex", lambda: mt.weighted_sum(_two(), T([1 + 0j, 1j])), TypeError, r"weights must be real numbers"),
    ("weights_string", lambda: mt.weighted_sum(_two(), "ab"), TypeError, r"weights must be a sequence of numbers"),
    ("weights_matrix", lambda: mt.weighted_sum(_two(), torch.ones(1, 2)), ValueError, r"weights must be 1-D"),
    ("normalizers_zero", lambda: mt.normalized_sum(_two(), [1.0, 0.0]), ValueError, r"normalizers must be > 0"),
    ("normalizers_inf", lambda: mt.normalized_sum(_two(), [1.0, INF]), ValueError, r"normalizers must be finite"),
    (
        "normalized_eps_negative",
        lambda: mt.normalized_sum(_two(), [1.0, 1.0], eps=-1.0),
        ValueError,
        r"eps must be >= 0",
    ),
    ("normalized_eps_inf", lambda: mt.normalized_sum(_two(), [1.0, 1.0], eps=INF), ValueError, r"eps must be finite"),
    ("realtime_eps_inf", lambda: mt.realtime_weighting(_two(), eps=INF), ValueError, r"eps must be finite"),
    ("realtime_eps_nan", lambda: mt.realtime_weighting(_two(), eps=NAN), ValueError, r"eps must be finite"),
    ("realtime_eps_string", lambda: mt.realtime_weighting(_two(), eps="0"), TypeError, r"eps must be a real number"),
    ("realtime_eps_bool", lambda: mt.realtime_weighting(_two(), eps=True), TypeError, r"eps must be a real number"),
    (
        "denominators_inf",
        lambda: mt.realtime_weighting(_two(), denominators=[1.0, INF]),
        ValueError,
        r"denominators must be finite",
    ),
    (
        "denominators_negative",
        lambda: mt.realtime_weighting(_two(), denominators=[1.0, -1.0]),
        ValueError,
        r"denominators must be >= 0",
    ),
    (
        "denominators_zero_no_eps",
        lambda: mt.realtime_weighting(_two(), eps=0.0, denominators=[1.0, 0.0]),
        ValueError,
        r"denominators must be > 0",
    ),
    (
        "denominators_length",
        lambda: mt.realtime_weighting(_two(), denominators=[1.0]),
        ValueError,
        r"denominators must have one entry per task \(2\)",
    ),
    ("log_sum_eps_inf", lambda: mt.log_sum(_two(), eps=INF), ValueError, r"eps must be finite"),
    ("gamma_nan", lambda: mt.power_mean(_two(), gamma=NAN), ValueError, r"gamma must not be NaN"),
    ("gamma_string", lambda: mt.power_mean(_two(), gamma="2"), TypeError, r"gamma must be a real number"),
    ("gamma_bool", lambda: mt.power_mean(_two(), gamma=True), TypeError, r"gamma must be a real number"),
    (
        "log_vars_not_tensor",
        lambda: mt.uncertainty_weighting(_two(), [0.0, 0.0]),
        TypeError,
        r"log_vars must be a torch\.Tensor",
    ),
    (
        "log_vars_int",
        lambda: mt.uncertainty_weighting(_two(), torch.zeros(2, dtype=torch.long)),
        TypeError,
        r"log_vars must have a floating-point dtype",
    ),
    (
        "log_vars_shape",
        lambda: mt.uncertainty_weighting(_two(), torch.zeros(3)),
        ValueError,
        r"log_vars must have shape \(2,\), got \(3,\)",
    ),
    (
        "log_vars_matrix",
        lambda: mt.uncertainty_weighting(_two(), torch.zeros(1, 2)),
        ValueError,
        r"log_vars must have 1 dimensions",
    ),
    ("log_vars_nan", lambda: mt.uncertainty_weighting(_two(), T([0.0, NAN])), ValueError, r"log_vars contains NaN"),
]


@pytest.mark.parametrize("case", FUNCTIONAL, ids=lambda c: c[0])
def test_functional_hyperparameters(case: Case) -> None:
    _, fn, exc, match = case
    with pytest.raises(exc, match=match):
        fn()


def test_power_mean_accepts_infinite_gamma() -> None:
    """+-inf is a documented value of gamma (the max/min limits), not an error."""
    torch.testing.assert_close(mt.power_mean(_two(), gamma=INF).loss, T(2.0))
    torch.testing.assert_close(mt.power_mean(_two(), gamma=-INF).loss, T(1.0))


# --------------------------------------------------------------------------------------- constructors


CONSTRUCTORS: list[Case] = [
    ("num_tasks_zero", lambda: mt.WeightedSum(0), ValueError, r"num_tasks must be >= 1, got 0"),
    ("num_tasks_float", lambda: mt.RealTimeWeighting(2.0), TypeError, r"num_tasks must be an integer"),
    ("num_tasks_bool", lambda: mt.MGDA(True), TypeError, r"num_tasks must be an integer"),
    ("num_tasks_string", lambda: mt.GradNorm("3"), TypeError, r"num_tasks must be an integer"),
    ("weighted_sum_inf", lambda: mt.WeightedSum(2, weights=[1.0, INF]), ValueError, r"weights must be finite"),
    (
        "weighted_sum_length",
        lambda: mt.WeightedSum(3, weights=[1.0, 1.0]),
        ValueError,
        r"weights must have one entry per task \(3\)",
    ),
    ("initial_zero", lambda: mt.InitialLossWeighting(2, initial=[1.0, 0.0]), ValueError, r"initial must be > 0"),
    ("initial_inf", lambda: mt.InitialLossWeighting(2, initial=[1.0, INF]), ValueError, r"initial must be finite"),
    ("warmup_zero", lambda: mt.InitialLossWeighting(2, warmup_steps=0), ValueError, r"warmup_steps must be >= 1"),
    (
        "warmup_float",
        lambda: mt.InitialLossWeighting(2, warmup_steps=1.5),
        TypeError,
        r"warmup_steps must be an integer",
    ),
    ("initial_eps_inf", lambda: mt.InitialLossWeighting(2, eps=INF), ValueError, r"eps must be finite"),
    ("prior_zero", lambda: mt.PriorLossWeighting(2, prior=[1.0, 0.0]), ValueError, r"prior must be > 0"),
    ("prior_nan", lambda: mt.PriorLossWeighting(2, prior=[1.0, NAN]), ValueError, r"prior must be finite"),
    (
        "prior_length",
        lambda: mt.PriorLossWeighting(2, prior=[1.0]),
        ValueError,
        r"prior must have one entry per task \(2\)",
    ),
    (
        "min_prior_zero",
        lambda: mt.PriorLossWeighting(2, prior=[1.0, 1.0], min_prior=0.0),
        ValueError,
        r"min_prior must be > 0",
    ),
    (
        "min_prior_inf",
        lambda: mt.PriorLossWeighting(2, prior=[1.0, 1.0], min_prior=INF),
        ValueError,
        r"min_prior must be finite",
    ),
    (
        "prior_eps_negative",
        lambda: mt.PriorLossWeighting(2, prior=[1.0, 1.0], eps=-1.0),
        ValueError,
        r"eps must be >= 0",
    ),
    ("realtime_eps_inf", lambda: mt.RealTimeWeighting(2, eps=INF), ValueError, r"eps must be finite"),
    ("ema_one", lambda: mt.RealTimeWeighting(2, ema=1.0), ValueError, r"ema must be < 1"),
    ("ema_negative", lambda: mt.RealTimeWeighting(2, ema=-0.1), ValueError, r"ema must be >= 0"),
    ("ema_nan", lambda: mt.RealTimeWeighting(2, ema=NAN), ValueError, r"ema must be finite"),
    ("log_eps_inf", lambda: mt.LogSum(2, eps=INF), ValueError, r"eps must be finite"),
    ("power_gamma_nan", lambda: mt.PowerMean(2, gamma=NAN), ValueError, r"gamma must not be NaN"),
    ("power_normalizers_zero", lambda: mt.PowerMean(2, normalizers=[1.0, 0.0]), ValueError, r"normalizers must be > 0"),
    (
        "dwa_temperature_zero",
        lambda: mt.DynamicWeightAverage(2, temperature=0.0),
        ValueError,
        r"temperature must be > 0",
    ),
    (
        "dwa_temperature_inf",
        lambda: mt.DynamicWeightAverage(2, temperature=INF),
        ValueError,
        r"temperature must be finite",
    ),
    ("gn_eps_inf", lambda: mt.GradientNormalization(2, eps=INF), ValueError, r"eps must be finite"),
    (
        "gn_rescale",
        lambda: mt.GradientNormalization(2, rescale="max"),
        ValueError,
        r"rescale must be one of \('none', 'mean_norm'\)",
    ),
    ("gn_batched_int", lambda: mt.GradientNormalization(2, batched=1), TypeError, r"batched must be a bool"),
    ("mgda_max_iter_zero", lambda: mt.MGDA(2, max_iter=0), ValueError, r"max_iter must be >= 1"),
    ("mgda_max_iter_float", lambda: mt.MGDA(2, max_iter=10.0), TypeError, r"max_iter must be an integer"),
    ("mgda_batched_string", lambda: mt.MGDA(2, batched="yes"), TypeError, r"batched must be a bool"),
    ("projection_one_task", lambda: mt.PrimaryAuxiliaryProjection(1), ValueError, r"needs num_tasks >= 2"),
    (
        "projection_primary_high",
        lambda: mt.PrimaryAuxiliaryProjection(3, primary=3),
        ValueError,
        r"primary must be <= 2, got 3",
    ),
    (
        "projection_primary_negative",
        lambda: mt.PrimaryAuxiliaryProjection(3, primary=-1),
        ValueError,
        r"primary must be >= 0",
    ),
    (
        "projection_primary_float",
        lambda: mt.PrimaryAuxiliaryProjection(3, primary=1.0),
        TypeError,
        r"primary must be an integer",
    ),
    ("l2_eps_negative", lambda: mt.L2DecayAuxiliary(2, eps=-1.0), ValueError, r"eps must be >= 0"),
    ("gradnorm_alpha_negative", lambda: mt.GradNorm(2, alpha=-1.0), ValueError, r"alpha must be >= 0"),
    ("gradnorm_alpha_inf", lambda: mt.GradNorm(2, alpha=INF), ValueError, r"alpha must be finite"),
    ("gradnorm_lr_zero", lambda: mt.GradNorm(2, lr=0.0), ValueError, r"lr must be > 0"),
    ("gradnorm_lr_nan", lambda: mt.GradNorm(2, lr=NAN), ValueError, r"lr must be finite"),
    ("gradnorm_layer", lambda: mt.GradNorm(2, layer="first"), ValueError, r"layer must be one of \('last', 'all'\)"),
    (
        "registry_unknown",
        lambda: mt.make_strategy("nope", 2),
        ValueError,
        r"unknown multi-task strategy 'nope'; choose one of",
    ),
    ("registry_fixed", lambda: mt.make_strategy("fixed", 2), ValueError, r"strategy 'fixed' needs weights"),
    ("registry_num_tasks", lambda: mt.make_strategy("equal", 0), ValueError, r"num_tasks must be >= 1"),
    ("registry_kwarg", lambda: mt.make_strategy("mgda", 2, gamma=1.0), TypeError, r"gamma"),
]


@pytest.mark.parametrize("case", CONSTRUCTORS, ids=lambda c: c[0])
def test_constructor_hyperparameters(case: Case) -> None:
    _, fn, exc, match = case
    with pytest.raises(exc, match=match):
        fn()


# ------------------------------------------------------------------------------------ strategy backward


def test_gradient_level_backward_errors() -> None:
    model = ToyMTL()
    x, y = toy_data()
    with pytest.raises(ValueError, match="shared_parameters is empty"):
        mt.MGDA(3).backward(model.losses(x, y), [])
    with pytest.raises(ValueError, match="pass shared_parameters"):
        mt.GradientNormalization(3).backward(model.losses(x, y))
    with pytest.raises(ValueError, match="contains the same tensor twice"):
        mt.MGDA(3).backward(model.losses(x, y), [*model.trunk.parameters(), model.trunk[0].weight])
    with pytest.raises(TypeError, match=r"shared_parameters\[0\] must be a torch\.Tensor"):
        mt.MGDA(3).backward(model.losses(x, y), ["weight"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"shared_parameters\[0\] must be floating point"):
        mt.MGDA(3).backward(model.losses(x, y), [torch.zeros(2, dtype=torch.long)])
    ls = model.losses(x, y)
    with pytest.raises(ValueError, match=r"losses\[1\] does not require grad"):
        mt.PrimaryAuxiliaryProjection(3).backward([ls[0], ls[1].detach(), ls[2]], model.trunk.parameters())
    with pytest.raises(ValueError, match=r"got 2 task losses, but the strategy was built for 3"):
        mt.GradNorm(3).backward(model.losses(x, y)[:2], model.trunk.parameters())
    for strat in (mt.MGDA(3), mt.GradNorm(3), mt.GradientNormalization(3), mt.PrimaryAuxiliaryProjection(3)):
        with pytest.raises(TypeError, match="gradient-level"):
            strat(model.losses(x, y))


def test_initial_loss_weighting_needs_an_estimate() -> None:
    s = mt.InitialLossWeighting(2).eval()
    with pytest.raises(RuntimeError, match="no estimate yet"):
        s(_two())


# -------------------------------------------------------------------------------------- combination rules

G3 = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
GRAM = G3 @ G3.T

COMBINE: list[Case] = [
    (
        "gn_vector",
        lambda: mt.gradient_normalization(torch.ones(3)),
        ValueError,
        r"grads must have 2 dimensions, got shape \(3,\)",
    ),
    ("gn_3d", lambda: mt.gradient_normalization(torch.ones(2, 3, 4)), ValueError, r"grads must have 2 dimensions"),
    ("gn_no_tasks", lambda: mt.gradient_normalization(torch.ones(0, 3)), ValueError, r"grads must not be empty"),
    ("gn_no_dims", lambda: mt.gradient_normalization(torch.ones(3, 0)), ValueError, r"grads must not be empty"),
    ("gn_nan", lambda: mt.gradient_normalization(T([[1.0, NAN]])), ValueError, r"grads contains NaN or infinite"),
    ("gn_inf", lambda: mt.gradient_normalization(T([[1.0, INF]])), ValueError, r"grads contains NaN or infinite"),
    ("gn_list", lambda: mt.gradient_normalization([[1.0, 2.0]]), TypeError, r"grads must be a torch\.Tensor"),
    ("gn_eps", lambda: mt.gradient_normalization(G3, eps=INF), ValueError, r"eps must be finite"),
    ("mgda_vector", lambda: mt.mgda_direction(torch.ones(3)), ValueError, r"grads must have 2 dimensions"),
    ("mgda_empty", lambda: mt.mgda_direction(torch.ones(0, 3)), ValueError, r"grads must not be empty"),
    ("mgda_nan", lambda: mt.mgda_direction(T([[1.0, NAN], [1.0, 1.0]])), ValueError, r"grads contains NaN"),
    ("mgda_max_iter", lambda: mt.mgda_direction(G3, max_iter=0), ValueError, r"max_iter must be >= 1"),
    ("mgda_tol", lambda: mt.mgda_direction(G3, tol=-1.0), ValueError, r"tol must be >= 0"),
    ("mgda_tol_nan", lambda: mt.mgda_direction(G3, tol=NAN), ValueError, r"tol must be finite"),
    (
        "mnc_not_square",
        lambda: mt.min_norm_coefficients(torch.ones(2, 3)),
        ValueError,
        r"gram must be a square \(n, n\) matrix, got shape \(2, 3\)",
    ),
    ("mnc_vector", lambda: mt.min_norm_coefficients(torch.ones(3)), ValueError, r"gram must have 2 dimensions"),
    ("mnc_empty", lambda: mt.min_norm_coefficients(torch.ones(0, 0)), ValueError, r"gram must not be empty"),
    (
        "mnc_inf",
        lambda: mt.min_norm_coefficients(T([[INF, 0.0], [0.0, 1.0]])),
        ValueError,
        r"gram contains NaN or infinite",
    ),
    (
        "mnc_negative_diag",
        lambda: mt.min_norm_coefficients(T([[1.0, 0.0], [0.0, -1.0]])),
        ValueError,
        r"non-negative diagonal\), got gram\[1, 1\]=-1",
    ),
    ("mnc_max_iter", lambda: mt.min_norm_coefficients(GRAM, max_iter=-1), ValueError, r"max_iter must be >= 1"),
    ("mnc_tol_inf", lambda: mt.min_norm_coefficients(GRAM, tol=INF), ValueError, r"tol must be finite"),
    (
        "pac_one",
        lambda: mt.primary_auxiliary_coefficients(torch.ones(1, 1)),
        ValueError,
        r"gram must be a square \(n, n\) matrix with n >= 2",
    ),
    (
        "pac_not_square",
        lambda: mt.primary_auxiliary_coefficients(torch.ones(3, 2)),
        ValueError,
        r"gram must be a square",
    ),
    (
        "pac_nan",
        lambda: mt.primary_auxiliary_coefficients(T([[1.0, NAN], [NAN, 1.0]])),
        ValueError,
        r"gram contains NaN",
    ),
    (
        "pac_sweeps",
        lambda: mt.primary_auxiliary_coefficients(GRAM, max_sweeps=0),
        ValueError,
        r"max_sweeps must be >= 1",
    ),
    (
        "pap_primary_matrix",
        lambda: mt.primary_auxiliary_projection(G3[:2], G3),
        ValueError,
        r"primary must have 1 dimensions",
    ),
    (
        "pap_aux_size",
        lambda: mt.primary_auxiliary_projection(torch.ones(3), torch.ones(2, 4)),
        ValueError,
        r"auxiliary must be \(m, 3\) with m >= 1, got shape \(2, 4\)",
    ),
    (
        "pap_aux_3d",
        lambda: mt.primary_auxiliary_projection(torch.ones(3), torch.ones(1, 2, 3)),
        ValueError,
        r"auxiliary must have 1 or 2 dimensions",
    ),
    (
        "pap_aux_empty",
        lambda: mt.primary_auxiliary_projection(torch.ones(3), torch.ones(0, 3)),
        ValueError,
        r"auxiliary must not be empty",
    ),
    (
        "pap_primary_empty",
        lambda: mt.primary_auxiliary_projection(torch.ones(0), torch.ones(1, 0)),
        ValueError,
        r"primary must not be empty",
    ),
    (
        "pap_dtype",
        lambda: mt.primary_auxiliary_projection(torch.ones(3), torch.ones(1, 3, dtype=torch.float64)),
        TypeError,
        r"primary and auxiliary must have the same dtype",
    ),
    (
        "pap_inf",
        lambda: mt.primary_auxiliary_projection(T([1.0, INF]), torch.ones(1, 2)),
        ValueError,
        r"primary contains NaN or infinite",
    ),
    (
        "l2_shape",
        lambda: mt.l2_auxiliary_projection(torch.ones(3), torch.ones(4)),
        ValueError,
        r"grad and param must have the same shape, got \(3,\) and \(4,\)",
    ),
    (
        "l2_dtype",
        lambda: mt.l2_auxiliary_projection(torch.ones(3), torch.ones(3, dtype=torch.float64)),
        TypeError,
        r"grad and param must have the same dtype",
    ),
    ("l2_nan", lambda: mt.l2_auxiliary_projection(torch.ones(2), T([1.0, NAN])), ValueError, r"param contains NaN"),
    (
        "l2_empty",
        lambda: mt.l2_auxiliary_projection(torch.ones(0), torch.ones(0)),
        ValueError,
        r"grad must not be empty",
    ),
    (
        "l2_eps",
        lambda: mt.l2_auxiliary_projection(torch.ones(2), torch.ones(2), eps=-1e-3),
        ValueError,
        r"eps must be >= 0",
    ),
]


@pytest.mark.parametrize("case", COMBINE, ids=lambda c: c[0])
def test_combination_rules(case: Case) -> None:
    _, fn, exc, match = case
    with pytest.raises(exc, match=match):
        fn()


# ------------------------------------------------------------------------------------------------- priors

PRIORS: list[Case] = [
    ("init_one_class", lambda: mt.classification_initial_loss(1), ValueError, r"num_classes must be >= 2, got 1"),
    ("init_float", lambda: mt.classification_initial_loss(2.0), TypeError, r"num_classes must be an integer"),
    ("init_bool", lambda: mt.classification_initial_loss(True), TypeError, r"num_classes must be an integer"),
    (
        "labels_float",
        lambda: mt.classification_prior_loss(T([0.0, 1.0])),
        TypeError,
        r"labels must have an integer dtype, got torch.float32",
    ),
    (
        "labels_bool",
        lambda: mt.classification_prior_loss(T([True, False])),
        TypeError,
        r"labels must have an integer dtype, got torch.bool",
    ),
    ("labels_list", lambda: mt.classification_prior_loss([0, 1]), TypeError, r"labels must be a torch\.Tensor"),
    (
        "labels_matrix",
        lambda: mt.classification_prior_loss(torch.zeros(2, 2, dtype=torch.long)),
        ValueError,
        r"labels must be a non-empty 1-D tensor, got shape \(2, 2\)",
    ),
    (
        "labels_empty",
        lambda: mt.classification_prior_loss(torch.zeros(0, dtype=torch.long)),
        ValueError,
        r"labels must be a non-empty 1-D tensor",
    ),
    (
        "labels_negative",
        lambda: mt.classification_prior_loss(T([0, -1])),
        ValueError,
        r"labels must be >= 0, got a label -1",
    ),
    (
        "labels_too_large",
        lambda: mt.classification_prior_loss(T([0, 3]), 3),
        ValueError,
        r"labels must be < num_classes=3, got a label 3",
    ),
    ("prior_num_classes", lambda: mt.classification_prior_loss(T([0, 1]), 0), ValueError, r"num_classes must be >= 1"),
    (
        "prior_min_value",
        lambda: mt.classification_prior_loss(T([0, 1]), min_value=0.0),
        ValueError,
        r"min_value must be > 0",
    ),
    (
        "prior_min_value_inf",
        lambda: mt.classification_prior_loss(T([0, 1]), min_value=INF),
        ValueError,
        r"min_value must be finite",
    ),
    (
        "reg_init_int",
        lambda: mt.regression_initial_loss(T([1, 2])),
        TypeError,
        r"targets must have a floating-point dtype",
    ),
    ("reg_init_empty", lambda: mt.regression_initial_loss(torch.zeros(0)), ValueError, r"targets must not be empty"),
    ("reg_init_nan", lambda: mt.regression_initial_loss(T([1.0, NAN])), ValueError, r"targets contains NaN"),
    ("reg_init_list", lambda: mt.regression_initial_loss([1.0]), TypeError, r"targets must be a torch\.Tensor"),
    (
        "reg_prior_one_row",
        lambda: mt.regression_prior_loss(torch.ones(1, 3)),
        ValueError,
        r"targets needs >= 2 rows, got shape \(1, 3\)",
    ),
    (
        "reg_prior_scalar",
        lambda: mt.regression_prior_loss(T(1.0)),
        ValueError,
        r"targets must have at least 1 dimensions",
    ),
    (
        "reg_prior_complex",
        lambda: mt.regression_prior_loss(T([1j, 2j])),
        TypeError,
        r"targets must have a floating-point dtype",
    ),
    ("reg_prior_inf", lambda: mt.regression_prior_loss(T([1.0, INF])), ValueError, r"targets contains NaN or infinite"),
    (
        "reg_prior_min_value",
        lambda: mt.regression_prior_loss(T([1.0, 2.0]), min_value=-1.0),
        ValueError,
        r"min_value must be > 0",
    ),
]


@pytest.mark.parametrize("case", PRIORS, ids=lambda c: c[0])
def test_priors(case: Case) -> None:
    _, fn, exc, match = case
    with pytest.raises(exc, match=match):
        fn()
