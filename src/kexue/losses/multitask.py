"""Multi-task loss weighting: loss-level schemes and gradient-level methods for custom training loops.

Implements Su Jianlin's three-part series on multi-task learning:

* Part 1, "以损失之名" (https://kexue.fm/archives/8870): the equal/fixed weighted sum, initial-loss and
  prior-loss normalisation, real-time normalisation ``L / (sg(L) + eps)`` (same gradient as ``sum log L``,
  same direction as the geometric mean), the generalised power mean, and gradient-norm normalisation ``sum_i
  g_i / ||g_i||`` over the shared parameters (Eq. 13), the only scheme that is invariant to both scaling and
  shifting a loss.
* Part 2, "行梯度之事" (https://kexue.fm/archives/8896): MGDA's min-norm point of the convex hull of the task
  gradients (Sener & Koltun 2018, arXiv 1810.04650), by Frank-Wolfe, with the closed form for two tasks.
* Part 3, "分主次之序" (https://kexue.fm/archives/8907): primary/auxiliary projection
  ``g0 + relu(-<g0, g1>) / ||g1||^2 g1`` (and its n-task version) and L2 decay as an auxiliary task.

Not from the articles (baselines users expect): uncertainty weighting (Kendall, Gal & Cipolla 2018, arXiv
1705.07115), DWA (Liu, Johns & Davison 2019, arXiv 1803.10704) and GradNorm (Chen et al. 2018, arXiv
1711.02257).

Every strategy is an ``nn.Module`` (state such as EMA denominators, initial-loss estimates or learned weights
are buffers/parameters, so they are checkpointed with the model) with one entry point::

    logs = strategy.backward(losses, shared_parameters, scaler=None)

which fills ``.grad`` of every parameter (accumulating into existing gradients, like ``Tensor.backward``) and
returns ``{"weights": (n,) tensor}`` for logging. Loss-level strategies additionally have
``strategy(losses) -> WeightedLoss(loss, weights)`` for users who want to call ``.backward()`` themselves.
Gradient-level strategies compute one gradient per task over the *shared* parameters (the article's theta;
Su confirms in the comments that theta always means the shared parameters), combine them, and write the result
into the shared ``.grad``; every other parameter the losses reach (the task heads) receives its ordinary
gradient. :func:`make_strategy` builds any of them from a name in :data:`STRATEGIES`.

AMP: pass ``scaler=torch.amp.GradScaler(...)``. Losses are multiplied by the current scale before any
backward, task gradients are divided by it before norms, inner products or Frank-Wolfe see them, and the
combined direction is written back multiplied by the scale, so the usual ``scaler.step(opt); scaler.update()``
works unchanged (an inf/NaN gradient propagates into ``.grad`` and the scaler skips the step).

DDP: loss-level strategies need nothing special (their backward is an ordinary ``.backward()`` through the DDP
wrapper; their statistics, e.g. initial-loss estimates, are all-reduced across ranks so every rank uses the
same weights). Gradient-level strategies take gradients with ``torch.autograd.grad``, which bypasses DDP's
reducer: run the forward through the *unwrapped* module (``ddp.module``) and the strategy all-reduces
(averages) the per-task gradient matrix and the head gradients itself before combining, so norms and Gram
matrices are those of the global batch. A test with two gloo ranks checks that half a batch per rank gives the
single-process full-batch gradients.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "MGDA",
    "STRATEGIES",
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

Losses = Sequence[Tensor] | Mapping[str, Tensor] | Tensor


class WeightedLoss(NamedTuple):
    """The scalar to backpropagate and the effective per-task weights (detached, for logging).

    ``weights[i]`` is the factor multiplying ``grad L_i`` in the gradient of ``loss`` (e.g. ``1 / L_i`` for
    real-time normalisation), so it is comparable across schemes.
    """

    loss: Tensor
    weights: Tensor


# ----------------------------------------------------------------------------------------------- validation


def _stack_losses(
    losses: Losses, scheme: str, *, num_tasks: int | None = None, positive: bool = False, eps: float = 0.0
) -> Tensor:
    """Validate task losses and stack them into a differentiable ``(n,)`` tensor."""
    if isinstance(losses, Tensor):
        if losses.dim() != 1:
            raise ValueError(
                f"{scheme}: a tensor of losses must be 1-D (one entry per task), got shape {tuple(losses.shape)}"
            )
        stacked = losses
    else:
        items = list(losses.values()) if isinstance(losses, Mapping) else list(losses)
        names = list(losses.keys()) if isinstance(losses, Mapping) else list(range(len(items)))
        for name, loss in zip(names, items):
            if not isinstance(loss, Tensor):
                raise TypeError(f"{scheme}: losses[{name!r}] must be a torch.Tensor, got {type(loss).__name__}")
            if loss.dim() != 0:
                raise ValueError(
                    f"{scheme}: losses[{name!r}] has shape {tuple(loss.shape)}, "
                    "expected a scalar (0-d) tensor; "
                    "reduce it first (e.g. .mean())"
                )
        if not items:
            raise ValueError(f"{scheme}: losses is empty, expected one scalar loss per task")
        stacked = torch.stack(items)
    if stacked.numel() == 0:
        raise ValueError(f"{scheme}: losses is empty, expected one scalar loss per task")
    if not stacked.is_floating_point():
        raise TypeError(f"{scheme}: losses must be floating point, got {stacked.dtype}")
    if num_tasks is not None and stacked.shape[0] != num_tasks:
        raise ValueError(f"{scheme}: got {stacked.shape[0]} task losses, but the strategy was built for {num_tasks}")
    if positive:
        v = stacked.detach()
        # eps > 0 makes a zero loss legal (its weight is then 1/eps); a negative loss never is.
        bad = (v < 0) | (v == 0) if eps <= 0 else (v < 0)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            need = "> 0" if eps <= 0 else ">= 0"
            raise ValueError(
                f"{scheme} needs task losses {need} (it divides by or takes the log of them), got "
                f"losses[{i}]={float(v[i]):.6g}; shift that loss by a constant "
                "(e.g. loss - lower_bound + 1), "
                "keeping in mind that this scheme is not shift invariant, so the shift changes the weighting"
            )
    return stacked


def _check_n(num_tasks: int) -> int:
    if not isinstance(num_tasks, int) or isinstance(num_tasks, bool) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}")
    return num_tasks


def _check_eps(eps: float) -> float:
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    return float(eps)


def _vector(values: Sequence[float] | Tensor, name: str, n: int | None, *, positive: bool) -> Tensor:
    if isinstance(values, Tensor) and values.is_floating_point():
        t = values.detach().clone().reshape(-1)
    else:
        t = torch.as_tensor(values, dtype=torch.get_default_dtype()).reshape(-1)
    if n is not None and t.numel() != n:
        raise ValueError(f"{name} must have one entry per task ({n}), got {t.numel()}")
    if positive and not bool((t > 0).all()):
        raise ValueError(f"{name} must be > 0, got {t.tolist()}")
    if not positive and not bool((t >= 0).all()):
        raise ValueError(f"{name} must be >= 0, got {t.tolist()}")
    return t


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce_mean_(t: Tensor) -> Tensor:
    """Average ``t`` in place across DDP ranks (no-op in a single process)."""
    world = _world()
    if world > 1:
        dist.all_reduce(t)
        t /= world
    return t


# ------------------------------------------------------------------------------ loss-level: functional forms


def weighted_sum(losses: Losses, weights: Sequence[float] | Tensor | None = None) -> WeightedLoss:
    """Weighted sum ``sum_i alpha_i L_i`` (Part 1, Eq. 1); the default ``alpha_i = 1/n`` is the plain mean.

    Args:
        losses: ``n`` scalar task losses (a sequence, a name -> loss mapping, or an ``(n,)`` tensor).
        weights: ``(n,)`` non-negative weights; ``None`` means ``1/n`` each.

    Returns:
        :class:`WeightedLoss` with the scalar loss and the ``(n,)`` weights.

    Example:
        >>> import torch
        >>> weighted_sum([torch.tensor(2.0), torch.tensor(4.0)]).loss
        tensor(3.)
    """
    L = _stack_losses(losses, "weighted_sum")
    n = L.shape[0]
    w = (
        torch.full((n,), 1.0 / n, dtype=L.dtype, device=L.device)
        if weights is None
        else _vector(weights, "weights", n, positive=False).to(L)
    )
    return WeightedLoss((w * L).sum(), w)


def normalized_sum(losses: Losses, normalizers: Sequence[float] | Tensor, *, eps: float = 0.0) -> WeightedLoss:
    """``sum_i L_i / (c_i + eps)`` with fixed constants ``c_i``: initial-loss or prior-loss normalisation.

    Part 1, Eqs. 2-3 (https://kexue.fm/archives/8870): with ``c_i`` the loss at initialisation (``log K`` for
    a K-way cross-entropy, ``E||y||^2`` for L2 regression) or the loss of a model that only knows the label
    prior (label entropy, label variance), every term is dimensionless, so multiplying a task's loss by
    ``lambda`` (and re-estimating its constant) leaves the total unchanged.

    Args:
        losses: ``n`` scalar task losses.
        normalizers: ``(n,)`` positive constants ``c_i`` (detached).
        eps: added to each constant.

    Example:
        >>> import torch
        >>> normalized_sum([torch.tensor(4.0), torch.tensor(300.0)], [2.0, 100.0]).loss
        tensor(5.)
    """
    L = _stack_losses(losses, "normalized_sum")
    c = _vector(normalizers, "normalizers", L.shape[0], positive=True).to(L)
    w = 1.0 / (c + _check_eps(eps))
    return WeightedLoss((w * L).sum(), w)


def realtime_weighting(
    losses: Losses, *, eps: float = 1e-8, denominators: Sequence[float] | Tensor | None = None
) -> WeightedLoss:
    """Real-time normalisation ``sum_i L_i / (sg(L_i) + eps)`` (Part 1, Eq. 5).

    Its value is (about) ``n`` but its gradient is ``sum_i grad L_i / L_i = grad sum_i log L_i``: the
    direction of the geometric mean of the losses. ``eps`` follows Su's later use of the trick
    (https://kexue.fm/archives/11738); set it to 0 for the exact article formula.

    Args:
        losses: ``n`` scalar task losses, all > 0 (>= 0 when ``eps > 0``).
        eps: added to the stop-gradient denominator.
        denominators: use these ``(n,)`` detached values instead of ``sg(L_i)`` (e.g. an EMA of the losses).

    Raises:
        ValueError: a negative loss (or a zero one with ``eps=0``).

    Example:
        >>> import torch
        >>> x = torch.tensor(3.0, requires_grad=True)
        >>> realtime_weighting([x**2], eps=0.0).loss.backward(); x.grad  # d log(x^2)/dx = 2/x
        tensor(0.6667)
    """
    L = _stack_losses(losses, "realtime_weighting", positive=True, eps=eps)
    d = L.detach() if denominators is None else _vector(denominators, "denominators", L.shape[0], positive=False)
    w = 1.0 / (d.to(L) + _check_eps(eps))
    return WeightedLoss((L * w).sum(), w)


def log_sum(losses: Losses, *, eps: float = 0.0) -> WeightedLoss:
    """``sum_i log(L_i + eps)``: same gradient as real-time normalisation, and ``n log`` of the geometric
    mean.

    Part 1, Eq. 6 (https://kexue.fm/archives/8870). Unlike :func:`realtime_weighting` its value is
    informative.

    Example:
        >>> import math, torch
        >>> round(float(log_sum([torch.tensor(math.e), torch.tensor(1.0)]).loss), 6)
        1.0
    """
    L = _stack_losses(losses, "log_sum", positive=True, eps=eps)
    e = _check_eps(eps)
    return WeightedLoss(torch.log(L + e).sum(), 1.0 / (L.detach() + e))


def power_mean(losses: Losses, *, gamma: float = 1.0) -> WeightedLoss:
    """Generalised (power) mean ``((1/n) sum_i L_i^gamma)^(1/gamma)`` (Part 1, "广义平均").

    ``gamma=1`` is the arithmetic mean, ``gamma -> 0`` the geometric mean (:func:`log_sum`'s direction),
    ``gamma -> +inf`` the max and ``-inf`` the min; the value is non-decreasing in ``gamma``. Larger ``gamma``
    puts more weight on the worst task: the effective weight of ``grad L_i`` is ``(1/n) (L_i / M)^(gamma -
    1)`` with ``M`` the mean itself. Computed in log space (``logsumexp(gamma log L) - log n``) so large
    ``|gamma|`` does not overflow.

    Args:
        losses: ``n`` scalar task losses, all > 0.
        gamma: the exponent; ``0`` and ``+-inf`` are handled exactly.

    Example:
        >>> import torch
        >>> L = [torch.tensor(1.0), torch.tensor(4.0)]
        >>> [round(float(power_mean(L, gamma=g).loss), 4) for g in (float("-inf"), 0.0, 1.0, float("inf"))]
        [1.0, 2.0, 2.5, 4.0]
    """
    L = _stack_losses(losses, "power_mean", positive=True)
    if math.isnan(gamma):
        raise ValueError("gamma must not be NaN")
    n = L.shape[0]
    logL = torch.log(L)
    if gamma == 0:
        log_m = logL.mean()
    elif math.isinf(gamma):
        log_m = logL.max() if gamma > 0 else logL.min()
    else:
        centre = logL.mean()
        d = logL - centre
        if abs(gamma) * float(d.detach().abs().max()) < 1.0:
            # small |gamma|: log mean exp(gamma d) = log1p(mean(expm1(gamma d))) avoids the cancellation of
            # logsumexp - log n, which is catastrophic as gamma -> 0
            log_m = centre + torch.log1p(torch.expm1(gamma * d).mean()) / gamma
        else:
            log_m = centre + (torch.logsumexp(gamma * d, dim=0) - math.log(n)) / gamma
    m = torch.exp(log_m)
    if math.isinf(gamma):
        w = torch.zeros_like(L.detach())
        w[int(torch.argmax(logL.detach()) if gamma > 0 else torch.argmin(logL.detach()))] = 1.0
    else:
        w = torch.exp((gamma - 1.0) * (logL.detach() - log_m.detach())) / n
    return WeightedLoss(m, w)


def uncertainty_weighting(losses: Losses, log_vars: Tensor) -> WeightedLoss:
    """Uncertainty weighting ``sum_i (exp(-s_i) L_i + s_i) / 2`` with learnable ``s_i = log sigma_i^2``.

    **Not from the article**: Kendall, Gal & Cipolla, CVPR 2018 (arXiv 1705.07115), in the common form that
    uses the regression factor 1/2 for every task. At the optimum over ``s_i`` (``exp(s_i) = L_i``) the
    gradient for the network is ``(1/2) grad sum_i log L_i``, i.e. Su's real-time normalisation.

    Args:
        losses: ``n`` scalar task losses.
        log_vars: ``(n,)`` learnable ``s_i``.

    Example:
        >>> import torch
        >>> uncertainty_weighting([torch.tensor(2.0)], torch.zeros(1)).loss
        tensor(1.)
    """
    L = _stack_losses(losses, "uncertainty_weighting")
    if log_vars.shape != L.shape:
        raise ValueError(f"log_vars must have shape {tuple(L.shape)}, got {tuple(log_vars.shape)}")
    s = log_vars.to(L.dtype)
    return WeightedLoss(0.5 * (torch.exp(-s) * L + s).sum(), 0.5 * torch.exp(-s.detach()))


# ------------------------------------------------------------------ theoretical initial / prior loss values


def classification_initial_loss(num_classes: int) -> float:
    """Cross-entropy of a ``K``-way softmax whose logits are all equal (zero at initialisation): ``log K``."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return math.log(num_classes)


def classification_prior_loss(labels: Tensor, num_classes: int | None = None, *, min_value: float = 1e-3) -> float:
    """Cross-entropy of a model that predicts the label frequencies: the label entropy ``-sum p_j log p_j``.

    Clamped below at ``min_value`` because a nearly deterministic label would give a weight ``1/H -> inf``
    (spec pitfall "prior-loss degeneracy").

    Args:
        labels: ``(N,)`` integer class labels.
        num_classes: number of classes (default ``labels.max() + 1``).
    """
    if labels.dim() != 1 or labels.numel() == 0 or labels.is_floating_point():
        raise ValueError(f"labels must be a non-empty 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}")
    p = torch.bincount(labels, minlength=num_classes or 0).double()
    p = p[p > 0] / p.sum()
    return max(float(-(p * p.log()).sum()), min_value)


def regression_initial_loss(targets: Tensor) -> float:
    """MSE of a zero prediction: ``mean(y^2)``, the per-element ``E||y||^2`` (``F.mse_loss``'s mean)."""
    if targets.numel() == 0:
        raise ValueError("targets is empty")
    return float(targets.double().pow(2).mean())


def regression_prior_loss(targets: Tensor, *, min_value: float = 1e-12) -> float:
    """MSE of predicting the label mean: the label variance (per element, matching ``F.mse_loss``'s mean).

    Args:
        targets: ``(N, ...)`` regression targets; the mean is taken over the first dimension.
    """
    if targets.numel() == 0 or targets.shape[0] < 2:
        raise ValueError(f"targets needs >= 2 rows, got shape {tuple(targets.shape)}")
    t = targets.double()
    return max(float((t - t.mean(0)).pow(2).mean()), min_value)


# ----------------------------------------------------------------------------- strategy modules (loss level)


class MultiTaskStrategy(nn.Module):
    """Base class: ``backward(losses, shared_parameters, *, scaler=None) -> {"weights": (n,)}``.

    Subclasses set ``level`` to ``"loss"`` (a weighted scalar; ``forward`` returns :class:`WeightedLoss`) or
    ``"gradient"`` (combines per-task gradients over the shared parameters).
    """

    level: ClassVar[str] = "loss"
    needs_positive: ClassVar[bool] = False

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.num_tasks = _check_n(num_tasks)

    def forward(self, losses: Losses) -> WeightedLoss:  # pragma: no cover - overridden
        raise NotImplementedError

    def backward(
        self,
        losses: Losses,
        shared_parameters: Iterable[Tensor] | None = None,
        *,
        scaler: Any = None,
    ) -> dict[str, Tensor]:
        """Backpropagate the weighted loss into ``.grad`` (scaled by ``scaler`` when given).

        Args:
            losses: ``num_tasks`` scalar task losses.
            shared_parameters: ignored by loss-level strategies (accepted for a uniform call).
            scaler: an optional ``torch.amp.GradScaler``.

        Returns:
            ``{"weights": (n,) effective weights, "loss": the weighted scalar (detached)}``.
        """
        out = self(losses)
        total = scaler.scale(out.loss) if scaler is not None else out.loss
        total.backward()
        return {"weights": out.weights, "loss": out.loss.detach()}

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}"


class WeightedSum(MultiTaskStrategy):
    """Equal (``1/n``) or fixed weights: :func:`weighted_sum` as a module (names ``"equal"``, ``"fixed"``).

    Example:
        >>> import torch
        >>> WeightedSum(2, weights=[1.0, 3.0])([torch.tensor(1.0), torch.tensor(1.0)]).loss
        tensor(4.)
    """

    weights: Tensor

    def __init__(self, num_tasks: int, *, weights: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(num_tasks)
        w = (
            torch.full((num_tasks,), 1.0 / num_tasks)
            if weights is None
            else _vector(weights, "weights", num_tasks, positive=False)
        )
        self.register_buffer("weights", w)

    def forward(self, losses: Losses) -> WeightedLoss:
        L = _stack_losses(losses, "WeightedSum", num_tasks=self.num_tasks)
        w = self.weights.to(L)
        return WeightedLoss((w * L).sum(), w)


class InitialLossWeighting(MultiTaskStrategy):
    """Initial-loss normalisation ``sum_i L_i / L_i^(init)`` (Part 1, "初始状态").

    With ``initial`` given (e.g. :func:`classification_initial_loss`, :func:`regression_initial_loss`) the
    constants are fixed. Otherwise they are estimated as the mean of the detached losses over the first
    ``warmup_steps`` training calls (all-reduced across DDP ranks) and then frozen; during the warm-up the
    running estimate is used. The estimate is a buffer, so it is checkpointed.

    Args:
        num_tasks: number of tasks ``n``.
        initial: ``(n,)`` positive constants, or ``None`` to estimate them.
        warmup_steps: batches to average for the estimate.
        eps: added to each constant.

    Example:
        >>> import torch
        >>> s = InitialLossWeighting(2)
        >>> s([torch.tensor(2.0), torch.tensor(500.0)]).loss  # first batch: each term is L/L = 1
        tensor(2.)
    """

    initial: Tensor
    count: Tensor

    def __init__(
        self,
        num_tasks: int,
        *,
        initial: Sequence[float] | Tensor | None = None,
        warmup_steps: int = 1,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(num_tasks)
        if warmup_steps < 1:
            raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self.eps = _check_eps(eps)
        fixed = initial is not None
        init = _vector(initial, "initial", num_tasks, positive=True) if initial is not None else torch.zeros(num_tasks)
        self.register_buffer("initial", init)
        self.register_buffer("count", torch.tensor(warmup_steps if fixed else 0, dtype=torch.long))

    def forward(self, losses: Losses) -> WeightedLoss:
        L = _stack_losses(losses, "InitialLossWeighting", num_tasks=self.num_tasks, positive=True, eps=self.eps)
        if self.training and int(self.count) < self.warmup_steps:
            with torch.no_grad():
                cur = _all_reduce_mean_(L.detach().clone()).to(self.initial)
                k = int(self.count)
                self.initial.mul_(k / (k + 1)).add_(cur / (k + 1))  # running mean over warm-up batches
                self.count += 1
        if int(self.count) == 0:
            raise RuntimeError("InitialLossWeighting has no estimate yet: call it in training mode first")
        w = 1.0 / (self.initial.to(L) + self.eps)
        return WeightedLoss((w * L).sum(), w)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, warmup_steps={self.warmup_steps}, eps={self.eps}"


class PriorLossWeighting(MultiTaskStrategy):
    """Prior-loss normalisation ``sum_i L_i / L_i^(prior)`` (Part 1, "先验状态").

    ``prior[i]`` is the loss of a model that only learned the label prior: the label entropy for a
    classification (:func:`classification_prior_loss`), the label variance for an L2 regression
    (:func:`regression_prior_loss`). Values below ``min_prior`` are clamped (a near-deterministic label would
    otherwise get an exploding weight).

    Example:
        >>> import torch
        >>> PriorLossWeighting(2, prior=[2.0, 100.0])([torch.tensor(1.0), torch.tensor(50.0)]).loss
        tensor(1.)
    """

    prior: Tensor

    def __init__(
        self, num_tasks: int, *, prior: Sequence[float] | Tensor, min_prior: float = 1e-3, eps: float = 0.0
    ) -> None:
        super().__init__(num_tasks)
        p = _vector(prior, "prior", num_tasks, positive=True).clamp_min(min_prior)
        self.register_buffer("prior", p)
        self.eps = _check_eps(eps)

    def forward(self, losses: Losses) -> WeightedLoss:
        L = _stack_losses(losses, "PriorLossWeighting", num_tasks=self.num_tasks)
        w = 1.0 / (self.prior.to(L) + self.eps)
        return WeightedLoss((w * L).sum(), w)


class RealTimeWeighting(MultiTaskStrategy):
    """Real-time normalisation ``sum_i L_i / (sg(L_i) + eps)``, optionally with an EMA denominator.

    Part 1, Eq. 5 (https://kexue.fm/archives/8870). ``ema=None`` is the article's formula. ``ema=beta``
    replaces ``sg(L_i)`` by an exponential moving average of the detached losses (ours, not in the article: it
    lowers the variance of the per-batch weight ``1/L_i``); the average is all-reduced across DDP ranks.

    Example:
        >>> import torch
        >>> RealTimeWeighting(2, eps=0.0)([torch.tensor(3.0), torch.tensor(7.0)]).loss  # the constant n
        tensor(2.)
    """

    average: Tensor
    count: Tensor

    needs_positive = True

    def __init__(self, num_tasks: int, *, eps: float = 1e-8, ema: float | None = None) -> None:
        super().__init__(num_tasks)
        if ema is not None and not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1) or None, got {ema}")
        self.eps = _check_eps(eps)
        self.ema = ema
        self.register_buffer("average", torch.zeros(num_tasks))
        self.register_buffer("count", torch.tensor(0, dtype=torch.long))

    def forward(self, losses: Losses) -> WeightedLoss:
        L = _stack_losses(losses, "RealTimeWeighting", num_tasks=self.num_tasks, positive=True, eps=self.eps)
        if self.ema is None:
            return realtime_weighting(L, eps=self.eps)
        if self.training:
            with torch.no_grad():
                cur = _all_reduce_mean_(L.detach().clone()).to(self.average)
                if int(self.count) == 0:
                    self.average.copy_(cur)
                else:
                    self.average.mul_(self.ema).add_((1.0 - self.ema) * cur)
                self.count += 1
        return realtime_weighting(L, eps=self.eps, denominators=self.average)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, eps={self.eps}, ema={self.ema}"


class LogSum(MultiTaskStrategy):
    """``sum_i log(L_i + eps)`` as a module (:func:`log_sum`)."""

    needs_positive = True

    def __init__(self, num_tasks: int, *, eps: float = 0.0) -> None:
        super().__init__(num_tasks)
        self.eps = _check_eps(eps)

    def forward(self, losses: Losses) -> WeightedLoss:
        return log_sum(_stack_losses(losses, "LogSum", num_tasks=self.num_tasks, positive=True), eps=self.eps)


class PowerMean(MultiTaskStrategy):
    """Generalised mean of the (optionally normalised) losses, :func:`power_mean` as a module.

    Args:
        num_tasks: number of tasks.
        gamma: the exponent (1 = arithmetic, 0 = geometric, +inf = worst task).
        normalizers: optional ``(n,)`` positive constants; the mean is then taken over ``L_i / c_i`` (e.g. the
            prior losses), which makes the losses dimensionless first. Without it the power mean of losses of
            different scale is dominated by the largest for ``gamma > 0`` (only ``gamma = 0`` is scale
            invariant).
    """

    normalizers: Tensor

    needs_positive = True

    def __init__(
        self, num_tasks: int, *, gamma: float = 1.0, normalizers: Sequence[float] | Tensor | None = None
    ) -> None:
        super().__init__(num_tasks)
        self.gamma = float(gamma)
        c = (
            torch.ones(num_tasks)
            if normalizers is None
            else _vector(normalizers, "normalizers", num_tasks, positive=True)
        )
        self.register_buffer("normalizers", c)

    def forward(self, losses: Losses) -> WeightedLoss:
        L = _stack_losses(losses, "PowerMean", num_tasks=self.num_tasks, positive=True)
        c = self.normalizers.to(L)
        out = power_mean(L / c, gamma=self.gamma)
        return WeightedLoss(out.loss, out.weights / c)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, gamma={self.gamma}"


class UncertaintyWeighting(MultiTaskStrategy):
    """Kendall et al. uncertainty weighting with learnable ``log_vars`` (**not from the article**).

    Add the module's parameters to the optimizer (``log_vars``, initialised to 0). See
    :func:`uncertainty_weighting`.
    """

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)
        self.log_vars = nn.Parameter(torch.zeros(num_tasks))

    def forward(self, losses: Losses) -> WeightedLoss:
        L = _stack_losses(losses, "UncertaintyWeighting", num_tasks=self.num_tasks)
        return uncertainty_weighting(L, self.log_vars)


class DynamicWeightAverage(MultiTaskStrategy):
    """DWA: ``w_i = n softmax_i(r_i / T)`` with ``r_i = Lbar_i(t-1) / Lbar_i(t-2)`` (**not from the
    article**).

    Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019 (arXiv 1803.10704), with
    their ``T = 2``. ``Lbar`` are epoch means of the detached losses seen by ``forward`` in training mode;
    call :meth:`end_epoch` at each epoch boundary. Weights are 1 for the first two epochs.
    """

    weights: Tensor
    running: Tensor
    seen: Tensor
    history: Tensor
    epochs: Tensor

    needs_positive = True

    def __init__(self, num_tasks: int, *, temperature: float = 2.0) -> None:
        super().__init__(num_tasks)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.register_buffer("weights", torch.ones(num_tasks))
        self.register_buffer("running", torch.zeros(num_tasks))
        self.register_buffer("seen", torch.tensor(0, dtype=torch.long))
        self.register_buffer("history", torch.zeros(2, num_tasks))  # epoch means at t-2, t-1
        self.register_buffer("epochs", torch.tensor(0, dtype=torch.long))

    def forward(self, losses: Losses) -> WeightedLoss:
        L = _stack_losses(losses, "DynamicWeightAverage", num_tasks=self.num_tasks, positive=True)
        if self.training:
            with torch.no_grad():
                self.running.add_(L.detach().to(self.running))
                self.seen += 1
        w = self.weights.to(L)
        return WeightedLoss((w * L).sum(), w)

    @torch.no_grad()
    def end_epoch(self) -> None:
        """Close an epoch: record its mean losses and recompute the weights."""
        if int(self.seen) == 0:
            return
        mean = _all_reduce_mean_(self.running / self.seen)
        self.history[0].copy_(self.history[1])
        self.history[1].copy_(mean)
        self.running.zero_()
        self.seen.zero_()
        self.epochs += 1
        if int(self.epochs) >= 2:
            r = self.history[1] / self.history[0].clamp_min(1e-12)
            self.weights.copy_(self.num_tasks * torch.softmax(r / self.temperature, dim=0))

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, temperature={self.temperature}"


# --------------------------------------------------------------------- gradient level: pure combination rules


def _check_grads(grads: Tensor, name: str = "grads") -> Tensor:
    if grads.dim() != 2 or grads.shape[0] < 1 or grads.shape[1] < 1:
        raise ValueError(f"{name} must be a (num_tasks, dim) matrix, got shape {tuple(grads.shape)}")
    return grads


def gradient_normalization(grads: Tensor, *, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """Article Eq. 13: ``u = sum_i g_i / (||g_i|| + eps)`` over the shared parameters.

    Invariant to multiplying any loss by a positive constant and to adding a constant to it (Part 1,
    "理想目标"). For two tasks ``u`` has a non-negative inner product with both gradients (Part 2).

    Args:
        grads: ``(n, D)`` task gradients (one flattened row per task).
        eps: added to each norm.

    Returns:
        ``(u, weights)``: the ``(D,)`` direction and the ``(n,)`` coefficients ``1 / (||g_i|| + eps)``.

    Example:
        >>> import torch
        >>> gradient_normalization(torch.tensor([[3.0, 0.0], [0.0, 0.5]]))[0]
        tensor([1., 1.])
    """
    G = _check_grads(grads)
    w = 1.0 / (torch.linalg.vector_norm(G, dim=1) + _check_eps(eps))
    return w @ G, w


def _two_task_gamma(g11: float, g12: float, g22: float) -> float:
    """Weight of g1 in the min-norm point of segment [g1, g2]: clip(<g2 - g1, g2> / ||g1 - g2||^2, 0, 1)."""
    denom = g11 + g22 - 2.0 * g12
    if denom <= 0.0:  # g1 == g2: any point is the min-norm point
        return 0.5
    return min(max((g22 - g12) / denom, 0.0), 1.0)


def min_norm_coefficients(gram: Tensor, *, max_iter: int = 250, tol: float = 1e-10) -> Tensor:
    """MGDA: ``alpha = argmin_{alpha in simplex} ||sum_i alpha_i g_i||^2`` from the Gram matrix ``<g_i,
    g_j>``.

    Part 2 (https://kexue.fm/archives/8896), Sener & Koltun 2018 (arXiv 1810.04650): two tasks use the closed
    form ``gamma = clip(<g2 - g1, g2> / ||g1 - g2||^2, 0, 1)`` (the foot of the triangle's altitude); more
    tasks use Frank-Wolfe from the uniform point, with ``tau = argmin_i <g_i, u>`` and the exact line search
    towards ``g_tau`` (itself the two-task problem), plus away steps (Lacoste-Julien & Jaggi 2015) so that it
    converges linearly rather than at O(1/k). Runs in float64 on the CPU (the Gram matrix is ``n x n``).

    Args:
        gram: ``(n, n)`` Gram matrix of the task gradients.
        max_iter: Frank-Wolfe iterations.
        tol: stop when the Frank-Wolfe duality gap ``alpha^T M alpha - min_i (M alpha)_i`` falls below
            ``tol * max(diag M)``.

    Returns:
        ``(n,)`` non-negative coefficients summing to 1 (dtype/device of ``gram``).

    Example:
        >>> import torch
        >>> min_norm_coefficients(torch.tensor([[1.0, 0.0], [0.0, 4.0]]))  # 4/5, 1/5
        tensor([0.8000, 0.2000])
    """
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] < 1:
        raise ValueError(f"gram must be a square (n, n) matrix, got shape {tuple(gram.shape)}")
    M = gram.detach().double().cpu().numpy()
    n = M.shape[0]
    if n == 1:
        return torch.ones(1, dtype=gram.dtype, device=gram.device)
    if n == 2:
        g = _two_task_gamma(float(M[0, 0]), float(M[0, 1]), float(M[1, 1]))
        return torch.tensor([g, 1.0 - g], dtype=gram.dtype, device=gram.device)
    alpha = np.full(n, 1.0 / n)
    stop = tol * max(float(M.diagonal().max()), 1e-300)
    for _ in range(max_iter):
        Ma = M @ alpha
        uu = float(alpha @ Ma)
        s = int(np.argmin(Ma))
        if uu - float(Ma[s]) <= stop:  # Frank-Wolfe duality gap: <g_i, u> >= ||u||^2 - gap for every i
            break
        active = np.flatnonzero(alpha > 0)
        v = int(active[np.argmax(Ma[active])])
        if uu - float(Ma[s]) >= float(Ma[v]) - uu:
            # toward step to vertex g_s: min over t in [0, 1] of ||(1 - t) u + t g_s||^2 (two-task problem)
            t = 1.0 - _two_task_gamma(uu, float(Ma[s]), float(M[s, s]))
            alpha *= 1.0 - t
            alpha[s] += t
        else:
            # away step from g_v (Lacoste-Julien & Jaggi 2015): linear convergence on the simplex, where plain
            # Frank-Wolfe zig-zags at O(1/k) whenever the min-norm point lies on a face
            t_max = alpha[v] / (1.0 - alpha[v]) if alpha[v] < 1.0 else 1e300
            curv = uu - 2.0 * float(Ma[v]) + float(M[v, v])
            t = t_max if curv <= 0 else min((float(Ma[v]) - uu) / curv, t_max)
            alpha *= 1.0 + t
            alpha[v] -= t
            if t >= t_max:
                alpha[v] = 0.0
        alpha = np.maximum(alpha, 0.0)
        alpha /= alpha.sum()
    return torch.as_tensor(alpha, dtype=gram.dtype, device=gram.device)


def mgda_direction(grads: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
    """MGDA update ``u = sum_i alpha_i g_i`` with :func:`min_norm_coefficients`; ``<g_i, u> >= ||u||^2 >= 0``.

    Args:
        grads: ``(n, D)`` task gradients.
        **kwargs: forwarded to :func:`min_norm_coefficients`.

    Returns:
        ``(u, alpha)``.

    Example:
        >>> import torch
        >>> mgda_direction(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))[0]
        tensor([0.5000, 0.5000])
    """
    G = _check_grads(grads)
    alpha = min_norm_coefficients(G @ G.T, **kwargs)
    return alpha @ G, alpha


def primary_auxiliary_coefficients(gram: Tensor, *, max_sweeps: int = 200, tol: float = 1e-10) -> Tensor:
    """``lambda = argmin_{lambda >= 0} ||g_0 + sum_i lambda_i g_i||^2`` from the Gram matrix of ``[g_0,
    g_1..]``.

    Part 3 (https://kexue.fm/archives/8907). One auxiliary task has the closed form
    ``lambda = relu(-<g_0, g_1>) / ||g_1||^2``; more use cyclic coordinate descent, each step re-solving the
    one-dimensional problem of one coefficient exactly (Su's loop visits the most violated one first; the
    fixed point, the KKT point of this convex problem, is the same).

    Returns:
        ``(m,)`` non-negative coefficients for the ``m = n - 1`` auxiliary gradients.
    """
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] < 2:
        raise ValueError(f"gram must be (n, n) with n >= 2 (primary + auxiliaries), got {tuple(gram.shape)}")
    M = gram.detach().double().cpu().tolist()  # n x n floats: the loop below is scalar work
    m = len(M) - 1
    lam = [0.0] * m
    scale = max(max(M[i][i] for i in range(m + 1)), 1e-300)
    for _ in range(max_sweeps if m > 1 else 1):
        moved = 0.0
        for i in range(m):
            aii = M[i + 1][i + 1]
            if aii <= 0.0:
                continue
            # <g_i, u> with u = g_0 + sum_j lambda_j g_j; then the exact 1-D minimiser over lambda_i >= 0
            inner = M[i + 1][0] + sum(M[i + 1][j + 1] * lam[j] for j in range(m))
            new = max(lam[i] - inner / aii, 0.0)
            moved = max(moved, abs(new - lam[i]) * math.sqrt(aii))
            lam[i] = new
        if moved**2 <= tol * scale:
            break
    return torch.tensor(lam, dtype=gram.dtype, device=gram.device)


def primary_auxiliary_projection(primary: Tensor, auxiliary: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
    """``u = g_0 + sum_i lambda_i g_i`` with ``<u, g_i> >= 0`` for every auxiliary gradient (Part 3).

    With one auxiliary gradient this is ``g_0 + relu(-<g_0, g_1>) / ||g_1||^2 g_1``: ``g_0`` is left alone
    unless it conflicts with ``g_1``, in which case its component along ``-g_1`` is removed (PCGrad's
    projection).

    Args:
        primary: ``(D,)`` gradient of the main task.
        auxiliary: ``(m, D)`` gradients of the auxiliary tasks (or ``(D,)`` for one).

    Returns:
        ``(u, lambda)``.

    Example:
        >>> import torch
        >>> primary_auxiliary_projection(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0]))[0]
        tensor([1., 0.])
    """
    if primary.dim() != 1:
        raise ValueError(f"primary must be a (D,) vector, got shape {tuple(primary.shape)}")
    aux = auxiliary.unsqueeze(0) if auxiliary.dim() == 1 else auxiliary
    if aux.dim() != 2 or aux.shape[1] != primary.shape[0] or aux.shape[0] < 1:
        raise ValueError(f"auxiliary must be (m, {primary.shape[0]}) with m >= 1, got shape {tuple(auxiliary.shape)}")
    G = torch.cat([primary.unsqueeze(0), aux])
    lam = primary_auxiliary_coefficients(G @ G.T, **kwargs)
    return primary + lam @ aux, lam


def l2_auxiliary_projection(grad: Tensor, param: Tensor, *, eps: float = 1e-12) -> Tensor:
    """L2 decay as an auxiliary task (Part 3): ``g + relu(-<g, theta>) / ||theta||^2 theta``.

    The auxiliary loss is ``||theta||^2 / 2`` (gradient ``theta``); the returned direction never increases it
    to first order, with no decay coefficient to tune. (The article's displayed formula drops the trailing
    ``theta``, a typo.)

    Args:
        grad: gradient, any shape.
        param: parameters, same shape.

    Example:
        >>> import torch
        >>> l2_auxiliary_projection(torch.tensor([-1.0, 1.0]), torch.tensor([1.0, 0.0]))
        tensor([0., 1.])
    """
    if grad.shape != param.shape:
        raise ValueError(f"grad and param must have the same shape, got {tuple(grad.shape)} and {tuple(param.shape)}")
    p = param.detach()
    coef = torch.relu(-(grad * p).sum()) / ((p * p).sum() + eps)
    return grad + coef * p


# ------------------------------------------------------------------------ gradient level: autograd plumbing


def _shared_list(shared_parameters: Iterable[Tensor] | None, scheme: str) -> list[Tensor]:
    if shared_parameters is None:
        raise ValueError(f"{scheme} is a gradient-level method: pass shared_parameters (the shared trunk)")
    params = [p for p in shared_parameters if p.requires_grad]
    if not params:
        raise ValueError(f"{scheme}: shared_parameters is empty (or none requires grad); pass the trunk's parameters")
    if len({id(p) for p in params}) != len(params):
        raise ValueError(f"{scheme}: shared_parameters contains the same tensor twice")
    return params


def _leaf_tensors(roots: Sequence[Tensor], exclude: set[int]) -> list[Tensor]:
    """Leaf tensors requiring grad that the graph of ``roots`` reaches, minus ``exclude``."""
    seen: set[Any] = set()
    out: list[Tensor] = []
    stack = [r.grad_fn for r in roots if r.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)  # AccumulateGrad node
        if isinstance(var, Tensor) and id(var) not in exclude:
            exclude.add(id(var))
            out.append(var)
        stack.extend(nf for nf, _ in fn.next_functions if nf is not None)
    return out


def _scale_of(scaler: Any) -> float:
    if scaler is None or not getattr(scaler, "is_enabled", lambda: True)():
        return 1.0
    return float(scaler.get_scale())


def _loss_items(losses: Losses, stacked: Tensor) -> list[Tensor]:
    """The individual scalar losses as given (not ``stacked[i]``).

    Differentiating ``stacked[i]`` would send zero gradients through every other task's head (the backward of
    ``torch.stack`` feeds all its inputs); the original tensors keep each per-task pass to its own graph.
    """
    if isinstance(losses, Tensor):
        return list(stacked.unbind(0))
    return list(losses.values()) if isinstance(losses, Mapping) else list(losses)


def _task_gradients(
    losses: Tensor,
    shared: list[Tensor],
    scale: float,
    head_coef: Tensor | None,
    *,
    batched: bool = False,
    items: Sequence[Tensor] | None = None,
) -> tuple[Tensor, list[Tensor], list[Tensor | None]]:
    """Per-task gradients over ``shared`` (unscaled, ``(n, D)``) and the (scaled) gradients of the other
    leaves.

    ``batched=False``: one backward pass per task. ``batched=True``: one ``vmap``-ed backward pass
    (``is_grads_batched``) with the rows of the identity as output gradients, falling back to the loop when an
    operation has no batching rule. The other leaves (task heads) get ``sum_i c_i grad L_i`` in scaled units,
    with ``c_i = head_coef[i]`` (1 by default).
    """
    n = losses.shape[0]
    others = _leaf_tensors([losses], {id(p) for p in shared})
    inputs = shared + others
    k = len(shared)
    D = sum(p.numel() for p in shared)
    G = torch.empty(n, D, dtype=losses.dtype, device=losses.device)
    head: list[Tensor | None] = [None] * len(others)
    coef = [1.0] * n if head_coef is None else [float(c) for c in head_coef]
    done = False
    if batched and n > 1:
        eye = torch.eye(n, dtype=losses.dtype, device=losses.device) * scale
        try:
            # retain_graph so that the per-task loop can still run if vmap fails half-way
            gs = torch.autograd.grad(
                losses, inputs, grad_outputs=eye, is_grads_batched=True, retain_graph=True, allow_unused=True
            )
        except RuntimeError:
            gs = None
        if gs is not None:
            off = 0
            for g, p in zip(gs[:k], shared):
                G[:, off : off + p.numel()] = 0.0 if g is None else g.reshape(n, -1)
                off += p.numel()
            c = torch.tensor(coef, dtype=losses.dtype, device=losses.device)
            for j, g in enumerate(gs[k:]):
                if g is not None:
                    head[j] = torch.tensordot(c.to(g.dtype), g, dims=1)
            done = True
    if not done:
        for i in range(n):
            li = losses[i] if items is None else items[i]
            li = li * scale if scale != 1.0 else li
            gs = torch.autograd.grad(li, inputs, retain_graph=i < n - 1, allow_unused=True)
            off = 0
            for g, p in zip(gs[:k], shared):
                G[i, off : off + p.numel()] = 0.0 if g is None else g.reshape(-1)
                off += p.numel()
            for j, g in enumerate(gs[k:]):
                if g is not None:
                    g = g * coef[i] if coef[i] != 1.0 else g
                    head[j] = g if head[j] is None else head[j] + g  # type: ignore[operator]
    if scale != 1.0:
        G = G / scale
    if _world() > 1:
        _all_reduce_mean_(G)
        for h in head:
            if h is not None:
                _all_reduce_mean_(h)
    return G, others, head


def _accumulate(params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    for p, g in zip(params, grads):
        if g is None:
            continue
        g = g.detach().to(p.dtype)
        p.grad = g.clone() if p.grad is None else p.grad + g


def _write_flat(params: Sequence[Tensor], flat: Tensor) -> None:
    _accumulate(params, [c.view_as(p) for c, p in zip(torch.split(flat, [p.numel() for p in params]), params)])


class _GradientLevel(MultiTaskStrategy):
    """Shared plumbing of the gradient-level methods: per-task gradients, combination, ``.grad`` writing."""

    level = "gradient"
    batched: bool = False

    def forward(self, losses: Losses) -> WeightedLoss:
        raise TypeError(
            f"{type(self).__name__} is a gradient-level method: call .backward(losses, shared_parameters) instead"
        )

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _head_coef(self, n: int) -> Tensor | None:
        return None

    def backward(
        self,
        losses: Losses,
        shared_parameters: Iterable[Tensor] | None = None,
        *,
        scaler: Any = None,
    ) -> dict[str, Tensor]:
        """Combine the task gradients over ``shared_parameters`` and accumulate them into ``.grad``.

        Args:
            losses: ``num_tasks`` scalar task losses (one graph; it is freed afterwards).
            shared_parameters: the parameters every task uses (the trunk). Every other parameter the losses
                reach gets its ordinary gradient ``sum_i grad L_i`` (task heads only see their own loss).
            scaler: optional ``torch.amp.GradScaler`` (losses scaled, gradients unscaled before combining, the
                result written in scaled units for ``scaler.step``).

        Returns:
            ``{"weights": (n,) coefficients of the task gradients in the combined direction}``.

        The per-task gradients come from one backward pass per task, or, when the strategy was built with
        ``batched=True``, from a single ``vmap``-ed pass (``torch.autograd.grad(...,
        is_grads_batched=True)``), falling back to the loop for operations without a batching rule.
        """
        name = type(self).__name__
        L = _stack_losses(losses, name, num_tasks=self.num_tasks, positive=self.needs_positive)
        shared = _shared_list(shared_parameters, name)
        scale = _scale_of(scaler)
        G, others, head = _task_gradients(
            L,
            shared,
            scale,
            self._head_coef(L.shape[0]),
            batched=getattr(self, "batched", False),
            items=_loss_items(losses, L),
        )
        if bool(torch.isfinite(G).all()):
            u, w = self.combine(G, L.detach())
        else:  # AMP overflow: pass the non-finite values on so GradScaler skips the step
            u, w = G.sum(0), torch.full((G.shape[0],), float("nan"), dtype=G.dtype, device=G.device)
        _write_flat(shared, u * scale if scale != 1.0 else u)
        _accumulate(others, head)
        return {"weights": w.detach()}


class GradientNormalization(_GradientLevel):
    """Gradient-norm normalisation ``sum_i g_i / ||g_i||`` over the shared parameters (Part 1, Eq. 13).

    Invariant to both scaling and shifting any task loss. The direction's norm is about ``sqrt(n)`` whatever
    the losses' scale; with ``rescale="mean_norm"`` it is multiplied by the mean task-gradient norm (a
    suggestion from the article's comments, for SGD; with Adam it hardly matters), which gives up the scale
    invariance.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> _ = GradientNormalization(2).backward([10 * w[0] ** 2, w[1] + 5], [w]); w.grad
        tensor([1., 1.])
    """

    def __init__(self, num_tasks: int, *, eps: float = 1e-12, rescale: str = "none", batched: bool = False) -> None:
        super().__init__(num_tasks)
        self.batched = batched
        if rescale not in ("none", "mean_norm"):
            raise ValueError(f"rescale must be 'none' or 'mean_norm', got {rescale!r}")
        self.eps = _check_eps(eps)
        self.rescale = rescale

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
        u, w = gradient_normalization(grads, eps=self.eps)
        if self.rescale == "mean_norm":
            k = torch.linalg.vector_norm(grads, dim=1).mean()
            u, w = u * k, w * k
        return u, w


class MGDA(_GradientLevel):
    """MGDA min-norm direction over the shared parameters (Part 2; Sener & Koltun 2018), see
    :func:`mgda_direction`.

    Task heads keep their own gradients (as in the paper). Not scale invariant: the min-norm point leans
    towards the task with the smallest gradient.
    """

    def __init__(self, num_tasks: int, *, max_iter: int = 250, batched: bool = False) -> None:
        super().__init__(num_tasks)
        self.batched = batched
        self.max_iter = max_iter

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
        return mgda_direction(grads, max_iter=self.max_iter)


class PrimaryAuxiliaryProjection(_GradientLevel):
    """Task ``primary`` is the main task, the others auxiliary tasks that must not increase (Part 3).

    The shared direction is ``g_0 + sum_i lambda_i g_i`` with the smallest ``lambda >= 0`` making
    ``<u, g_i> >= 0`` (:func:`primary_auxiliary_projection`).
    """

    def __init__(self, num_tasks: int, *, primary: int = 0, batched: bool = False) -> None:
        super().__init__(num_tasks)
        self.batched = batched
        if num_tasks < 2:
            raise ValueError(f"PrimaryAuxiliaryProjection needs >= 2 tasks, got {num_tasks}")
        if not 0 <= primary < num_tasks:
            raise ValueError(f"primary must be in [0, {num_tasks}), got {primary}")
        self.primary = primary

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
        idx = [self.primary] + [i for i in range(grads.shape[0]) if i != self.primary]
        u, lam = primary_auxiliary_projection(grads[self.primary], grads[idx[1:]])
        w = torch.ones(grads.shape[0], dtype=grads.dtype, device=grads.device)
        w[idx[1:]] = lam.to(w)
        return u, w


class L2DecayAuxiliary(MultiTaskStrategy):
    """Sum of the task losses, then L2 decay as an auxiliary task on the shared parameters (Part 3,
    application a).

    After ``sum_i L_i`` is backpropagated, the gradient ``g`` of the shared parameters (flattened together) is
    replaced by ``g + relu(-<g, theta>) / ||theta||^2 theta`` (:func:`l2_auxiliary_projection`), so the update
    never increases ``||theta||^2`` to first order. Linear in ``g``, so it works on scaled AMP gradients as
    is.
    """

    level = "gradient"

    def __init__(self, num_tasks: int, *, eps: float = 1e-12) -> None:
        super().__init__(num_tasks)
        self.eps = _check_eps(eps)

    def forward(self, losses: Losses) -> WeightedLoss:
        L = _stack_losses(losses, "L2DecayAuxiliary", num_tasks=self.num_tasks)
        return WeightedLoss(L.sum(), torch.ones_like(L.detach()))

    def backward(
        self, losses: Losses, shared_parameters: Iterable[Tensor] | None = None, *, scaler: Any = None
    ) -> dict[str, Tensor]:
        shared = _shared_list(shared_parameters, "L2DecayAuxiliary")
        before = [p.grad for p in shared]
        for p in shared:
            p.grad = None
        out = super().backward(losses, scaler=scaler)
        g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in shared])
        theta = torch.cat([p.detach().reshape(-1) for p in shared])
        u = l2_auxiliary_projection(g, theta, eps=self.eps)
        for p, b in zip(shared, before):
            p.grad = b
        _write_flat(shared, u)
        out["l2_coef"] = (torch.relu(-(g * theta).sum()) / ((theta * theta).sum() + self.eps)).detach()
        return out


class GradNorm(_GradientLevel):
    """GradNorm (Chen et al. 2018, arXiv 1711.02257), **not from the article** (Su: "cumbersome and
    redundant").

    Learned weights ``w_i`` (init 1, renormalised to sum to ``n``) make the weighted gradient norms
    ``G_i = w_i ||grad_W L_i||`` track ``mean(G) * r_i^alpha``, with ``r_i`` the relative inverse training
    rate ``(L_i / L_i(0)) / mean_j(L_j / L_j(0))``. ``W`` is the last shared layer (the last shared parameter
    with ``dim >= 2``) as in the paper when ``layer="last"``, or all shared parameters (Su's theta) with
    ``layer="all"``. The network gets ``grad sum_i w_i L_i`` (one full backward after one cheap backward per
    task to ``W``); the weights take one Adam step (``lr``) on ``L_grad = sum_i |G_i - target_i|`` with the
    target held constant, whose gradient is ``sign(G_i - target_i) ||grad_W L_i||`` in closed form. ``L_i(0)``
    is the first batch's loss.
    """

    task_weights: Tensor
    initial: Tensor
    steps: Tensor
    adam_m: Tensor
    adam_v: Tensor

    def __init__(self, num_tasks: int, *, alpha: float = 1.5, lr: float = 0.025, layer: str = "last") -> None:
        super().__init__(num_tasks)
        if layer not in ("last", "all"):
            raise ValueError(f"layer must be 'last' or 'all', got {layer!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.alpha, self.lr, self.layer = float(alpha), float(lr), layer
        self.register_buffer("task_weights", torch.ones(num_tasks))
        self.register_buffer("initial", torch.zeros(num_tasks))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))
        self.register_buffer("adam_m", torch.zeros(num_tasks))
        self.register_buffer("adam_v", torch.zeros(num_tasks))

    def backward(
        self, losses: Losses, shared_parameters: Iterable[Tensor] | None = None, *, scaler: Any = None
    ) -> dict[str, Tensor]:
        L = _stack_losses(losses, "GradNorm", num_tasks=self.num_tasks, positive=True)
        items = _loss_items(losses, L)
        shared = _shared_list(shared_parameters, "GradNorm")
        if self.layer == "last":
            mats = [p for p in shared if p.dim() >= 2]
            W = [mats[-1] if mats else shared[-1]]
        else:
            W = shared
        scale = _scale_of(scaler)
        n = L.shape[0]
        norms = []
        for i in range(n):
            gs = torch.autograd.grad(items[i] * scale, W, retain_graph=True, allow_unused=True)
            sq = torch.zeros((), dtype=torch.float64, device=L.device)
            for g in gs:
                if g is not None:
                    sq = sq + ((g.double() / scale) ** 2).sum()
            norms.append(sq.sqrt())
        nrm = _all_reduce_mean_(torch.stack(norms).to(self.task_weights))
        w = self.task_weights.clone()
        total = (w.to(L) * L).sum()
        (total * scale if scale != 1.0 else total).backward()
        with torch.no_grad():
            cur = _all_reduce_mean_(L.detach().clone()).to(self.task_weights)
            if int(self.steps) == 0:
                self.initial.copy_(cur)
            if bool(torch.isfinite(nrm).all()):
                Gw = w * nrm
                ratio = cur / self.initial.clamp_min(1e-12)
                r = ratio / ratio.mean()
                target = Gw.mean() * r**self.alpha
                grad = torch.sign(Gw - target) * nrm
                t = int(self.steps) + 1
                self.adam_m.mul_(0.9).add_(0.1 * grad)
                self.adam_v.mul_(0.999).add_(0.001 * grad * grad)
                mhat = self.adam_m / (1 - 0.9**t)
                vhat = self.adam_v / (1 - 0.999**t)
                new = (w - self.lr * mhat / (vhat.sqrt() + 1e-8)).clamp_min(1e-4)
                self.task_weights.copy_(new * n / new.sum())
            self.steps += 1
        return {"weights": w, "loss": total.detach()}

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, alpha={self.alpha}, lr={self.lr}, layer={self.layer!r}"


# ------------------------------------------------------------------------------------------------- registry

STRATEGIES: dict[str, type[MultiTaskStrategy]] = {
    "equal": WeightedSum,
    "fixed": WeightedSum,
    "initial": InitialLossWeighting,
    "prior": PriorLossWeighting,
    "realtime": RealTimeWeighting,
    "log": LogSum,
    "power_mean": PowerMean,
    "uncertainty": UncertaintyWeighting,
    "dwa": DynamicWeightAverage,
    "gradient_normalization": GradientNormalization,
    "gradnorm": GradNorm,
    "mgda": MGDA,
    "projection": PrimaryAuxiliaryProjection,
    "l2_auxiliary": L2DecayAuxiliary,
}
"""Strategy name -> class; every class takes ``num_tasks`` then keyword-only hyperparameters."""


def make_strategy(name: str, num_tasks: int, **kwargs: Any) -> MultiTaskStrategy:
    """Build a strategy from its name in :data:`STRATEGIES`.

    Args:
        name: e.g. ``"realtime"``, ``"gradient_normalization"``, ``"mgda"``.
        num_tasks: number of task losses it will receive.
        **kwargs: the class's hyperparameters (``"fixed"`` needs ``weights``, ``"prior"`` needs ``prior``).

    Example:
        >>> make_strategy("power_mean", 3, gamma=2.0)
        PowerMean(num_tasks=3, gamma=2.0)
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown multi-task strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    if name == "fixed" and "weights" not in kwargs:
        raise ValueError("strategy 'fixed' needs weights=[...] (one per task)")
    return STRATEGIES[name](num_tasks, **kwargs)
