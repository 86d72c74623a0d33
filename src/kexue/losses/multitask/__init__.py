"""Multi-task loss weighting: loss-level schemes and gradient-level methods for custom training loops.

Implements Su Jianlin's three-part series on multi-task learning:

* Part 1, "以损失之名" (https://kexue.fm/archives/8870): the equal/fixed weighted sum, initial-loss and
  prior-loss normalisation, real-time normalisation ``L / (sg(L) + eps)`` (same gradient as ``sum log L``,
  same direction as the geometric mean), the generalised power mean, and gradient-norm normalisation
  ``sum_i g_i / ||g_i||`` over the shared parameters (Eq. 13), the only scheme that is invariant to both
  scaling and shifting a loss.
* Part 2, "行梯度之事" (https://kexue.fm/archives/8896): MGDA's min-norm point of the convex hull of the task
  gradients (Sener & Koltun 2018, arXiv 1810.04650), by Frank-Wolfe, with the closed form for two tasks.
* Part 3, "分主次之序" (https://kexue.fm/archives/8907): primary/auxiliary projection
  ``g0 + relu(-<g0, g1>) / ||g1||^2 g1`` (and its n-task version) and L2 decay as an auxiliary task.

Not from the articles (baselines users expect): uncertainty weighting (Kendall, Gal & Cipolla 2018, arXiv
1705.07115), DWA (Liu, Johns & Davison 2019, arXiv 1803.10704) and GradNorm (Chen et al. 2018, arXiv
1711.02257).

Layout (one concept per module; every public name is re-exported here):

* :mod:`.base`: :class:`MultiTaskStrategy`, :class:`WeightedLoss`, :class:`BackwardResult`;
* :mod:`.loss_level`: the loss-level functional forms and their strategy modules;
* :mod:`.priors`: theoretical initial/prior loss values;
* :mod:`.combine`: pure gradient-combination rules on ``(n, D)`` tensors (scale-safe);
* :mod:`.gradient_level`, :mod:`.gradnorm`: the gradient-level strategies;
* :mod:`.registry`: :data:`STRATEGIES` and :func:`make_strategy`;
* private: ``_inputs`` (validation), ``_grads`` (autograd, ``.grad``, GradScaler), ``_distributed`` (DDP).

Every strategy is an ``nn.Module`` (state such as EMA denominators, initial-loss estimates or learned weights
are buffers/parameters, so they are checkpointed with the model) with one entry point::

    result = strategy.backward(losses, shared_parameters, scaler=None)  # -> BackwardResult

which fills ``.grad`` of every parameter (accumulating into existing gradients, like ``Tensor.backward``) and
returns the same :class:`BackwardResult` dict for every strategy: ``{"loss": 0-d, "weights": (n,)}``, both
detached. Loss-level strategies additionally have ``strategy(losses) -> WeightedLoss(loss, weights)`` for
users who want to call ``.backward()`` themselves. Gradient-level strategies compute one gradient per task
over the *shared* parameters, combine them, and write the result into the shared ``.grad``; every other
parameter the losses reach (the task heads) receives its ordinary gradient.

AMP: pass ``scaler=torch.amp.GradScaler(...)`` and then call ``scaler.step(opt); scaler.update()`` as usual,
for every strategy. The losses go through ``scaler.scale`` (which initialises the scaler's state), task
gradients are unscaled before norms, inner products or Frank-Wolfe see them, and the combined direction is
written back in scaled units; an inf/NaN gradient reaches ``.grad`` so that ``scaler.step`` skips the step.

DDP: loss-level strategies need nothing special (their backward is an ordinary ``.backward()`` through the DDP
wrapper; their statistics, e.g. initial-loss estimates, are all-reduced across ranks so every rank uses the
same weights). Gradient-level strategies take gradients with ``torch.autograd.grad``, which bypasses DDP's
reducer: run the forward through the *unwrapped* module (``ddp.module``) and the strategy all-reduces
(averages) the per-task gradient matrix and the head gradients itself before combining, so norms and Gram
matrices are those of the global batch.

Bad input raises ``TypeError`` (wrong kind or dtype: task losses, gradients and Gram matrices must be floating
point) or ``ValueError`` (shape, size, NaN/inf, out-of-range hyperparameter), naming the argument.
"""

from __future__ import annotations

from .base import BackwardResult, MultiTaskStrategy, WeightedLoss
from .combine import (
    gradient_normalization,
    l2_auxiliary_projection,
    mgda_direction,
    min_norm_coefficients,
    primary_auxiliary_coefficients,
    primary_auxiliary_projection,
)
from .gradient_level import MGDA, GradientNormalization, L2DecayAuxiliary, PrimaryAuxiliaryProjection
from .gradnorm import GradNorm
from .loss_level import (
    DynamicWeightAverage,
    InitialLossWeighting,
    LogSum,
    PowerMean,
    PriorLossWeighting,
    RealTimeWeighting,
    UncertaintyWeighting,
    WeightedSum,
    log_sum,
    normalized_sum,
    power_mean,
    realtime_weighting,
    uncertainty_weighting,
    weighted_sum,
)
from .priors import (
    classification_initial_loss,
    classification_prior_loss,
    regression_initial_loss,
    regression_prior_loss,
)
from .registry import STRATEGIES, make_strategy

__all__ = [
    "MGDA",
    "STRATEGIES",
    "BackwardResult",
    "DynamicWeightAverage",
    "GradNorm",
    "GradientNormalization",
    "InitialLossWeighting",
    "L2DecayAuxiliary",
    "LogSum",
    "MultiTaskStrategy",
    "PowerMean",
    "PrimaryAuxiliaryProjection",
    "PriorLossWeighting",
    "RealTimeWeighting",
    "UncertaintyWeighting",
    "WeightedLoss",
    "WeightedSum",
    "classification_initial_loss",
    "classification_prior_loss",
    "gradient_normalization",
    "l2_auxiliary_projection",
    "log_sum",
    "make_strategy",
    "mgda_direction",
    "min_norm_coefficients",
    "normalized_sum",
    "power_mean",
    "primary_auxiliary_coefficients",
    "primary_auxiliary_projection",
    "realtime_weighting",
    "regression_initial_loss",
    "regression_prior_loss",
    "uncertainty_weighting",
    "weighted_sum",
]
