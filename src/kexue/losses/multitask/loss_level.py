"""Loss-level weightings: a scalar ``sum_i w_i L_i`` (or a mean of the losses) to backpropagate as usual.

Each scheme is a functional form returning :class:`WeightedLoss` and an ``nn.Module`` strategy (state such as
EMA denominators or initial-loss estimates lives in buffers, so it is checkpointed with the model). From Part 1
of Su Jianlin's series, "以损失之名" (https://kexue.fm/archives/8870): the weighted sum (Eq. 1), initial-loss
and prior-loss normalisation (Eqs. 2-3), real-time normalisation (Eq. 5) and its log form (Eq. 6), and the
generalised power mean. Not from the article (baselines users expect): uncertainty weighting (Kendall, Gal &
Cipolla 2018, arXiv 1705.07115) and DWA (Liu, Johns & Davison 2019, arXiv 1803.10704).

Every function takes ``losses``: ``n`` finite scalar task losses as a sequence, a ``name -> loss`` mapping or an
``(n,)`` tensor, floating point. A non-scalar entry, an empty list, an integer/bool/complex loss or a NaN/inf
loss raises (``ValueError``/``TypeError`` naming the entry); the schemes that divide by a loss or take its log
also reject non-positive losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from kexue._validate import check_float_tensor, check_int, check_real

from ._distributed import all_reduce_mean_
from ._inputs import Losses, check_eps, check_gamma, constant_vector, stack_losses
from .base import MultiTaskStrategy, WeightedLoss

__all__ = [
    "DynamicWeightAverage",
    "InitialLossWeighting",
    "LogSum",
    "PowerMean",
    "PriorLossWeighting",
    "RealTimeWeighting",
    "UncertaintyWeighting",
    "WeightedSum",
    "log_sum",
    "normalized_sum",
    "power_mean",
    "realtime_weighting",
    "uncertainty_weighting",
    "weighted_sum",
]

Constants = Sequence[float] | Tensor


# ------------------------------------------------------------------------------------------ functional forms


def weighted_sum(losses: Losses, weights: Constants | None = None) -> WeightedLoss:
    """Weighted sum ``sum_i alpha_i L_i`` (Part 1, Eq. 1); the default ``alpha_i = 1/n`` is the plain mean.

    Args:
        losses: ``n`` scalar task losses (a sequence, a name -> loss mapping, or an ``(n,)`` tensor).
        weights: ``(n,)`` finite non-negative weights; ``None`` means ``1/n`` each.

    Returns:
        :class:`WeightedLoss` with the scalar loss and the ``(n,)`` weights.

    Raises:
        TypeError: a loss that is not a floating-point tensor; weights that are not real numbers.
        ValueError: empty or non-scalar or non-finite losses; weights of the wrong length, negative or
            non-finite.

    Example:
        >>> import torch
        >>> weighted_sum([torch.tensor(2.0), torch.tensor(4.0)]).loss
        tensor(3.)
    """
    L = stack_losses(losses, "weighted_sum")
    n = L.shape[0]
    w = (
        torch.full((n,), 1.0 / n, dtype=L.dtype, device=L.device)
        if weights is None
        else constant_vector(weights, "weights", n, positive=False).to(L)
    )
    return WeightedLoss((w * L).sum(), w)


def normalized_sum(losses: Losses, normalizers: Constants, *, eps: float = 0.0) -> WeightedLoss:
    """``sum_i L_i / (c_i + eps)`` with fixed constants ``c_i``: initial-loss or prior-loss normalisation.

    Part 1, Eqs. 2-3 (https://kexue.fm/archives/8870): with ``c_i`` the loss at initialisation (``log K`` for
    a K-way cross-entropy, ``E||y||^2`` for L2 regression) or the loss of a model that only knows the label
    prior (label entropy, label variance), every term is dimensionless, so multiplying a task's loss by
    ``lambda`` (and re-estimating its constant) leaves the total unchanged.

    Args:
        losses: ``n`` scalar task losses.
        normalizers: ``(n,)`` finite positive constants ``c_i`` (detached).
        eps: added to each constant (finite, >= 0).

    Returns:
        :class:`WeightedLoss` with weights ``1 / (c_i + eps)``.

    Raises:
        TypeError, ValueError: invalid losses (see :func:`weighted_sum`), normalisers or ``eps``.

    Example:
        >>> import torch
        >>> normalized_sum([torch.tensor(4.0), torch.tensor(300.0)], [2.0, 100.0]).loss
        tensor(5.)
    """
    L = stack_losses(losses, "normalized_sum")
    c = constant_vector(normalizers, "normalizers", L.shape[0], positive=True).to(L)
    w = 1.0 / (c + check_eps(eps))
    return WeightedLoss((w * L).sum(), w)


def realtime_weighting(losses: Losses, *, eps: float = 1e-8, denominators: Constants | None = None) -> WeightedLoss:
    """Real-time normalisation ``sum_i L_i / (sg(L_i) + eps)`` (Part 1, Eq. 5).

    Its value is (about) ``n`` but its gradient is ``sum_i grad L_i / L_i = grad sum_i log L_i``: the
    direction of the geometric mean of the losses. ``eps`` follows Su's later use of the trick
    (https://kexue.fm/archives/11738); set it to 0 for the exact article formula. The stop-gradient is the
    ``.detach()`` of the denominator.

    Args:
        losses: ``n`` scalar task losses, all > 0 (>= 0 when ``eps > 0``).
        eps: added to the stop-gradient denominator (finite, >= 0).
        denominators: use these ``(n,)`` finite non-negative values instead of ``sg(L_i)`` (e.g. an EMA of the
            losses); with ``eps = 0`` they must be > 0.

    Returns:
        :class:`WeightedLoss` with weights ``1 / (sg(L_i) + eps)``.

    Raises:
        TypeError, ValueError: invalid losses, a negative loss (or a zero one with ``eps=0``), invalid ``eps``
            or denominators.

    Example:
        >>> import torch
        >>> x = torch.tensor(3.0, requires_grad=True)
        >>> realtime_weighting([x**2], eps=0.0).loss.backward(); x.grad  # d log(x^2)/dx = 2/x
        tensor(0.6667)
    """
    e = check_eps(eps)
    L = stack_losses(losses, "realtime_weighting", positive=True, eps=e)
    if denominators is None:
        d = L.detach()
    else:
        d = constant_vector(denominators, "denominators", L.shape[0], positive=e == 0.0).to(L)
    w = 1.0 / (d + e)
    return WeightedLoss((L * w).sum(), w)


def log_sum(losses: Losses, *, eps: float = 0.0) -> WeightedLoss:
    """``sum_i log(L_i + eps)``: same gradient as real-time normalisation, and ``n log`` of the geometric mean.

    Part 1, Eq. 6 (https://kexue.fm/archives/8870). Unlike :func:`realtime_weighting` its value is
    informative.

    Args:
        losses: ``n`` scalar task losses, all > 0 (>= 0 when ``eps > 0``).
        eps: added inside the log (finite, >= 0).

    Returns:
        :class:`WeightedLoss` with weights ``1 / (L_i + eps)``.

    Raises:
        TypeError, ValueError: invalid or non-positive losses, invalid ``eps``.

    Example:
        >>> import math, torch
        >>> round(float(log_sum([torch.tensor(math.e), torch.tensor(1.0)]).loss), 6)
        1.0
    """
    e = check_eps(eps)
    L = stack_losses(losses, "log_sum", positive=True, eps=e)
    return WeightedLoss(torch.log(L + e).sum(), 1.0 / (L.detach() + e))


def power_mean(losses: Losses, *, gamma: float = 1.0) -> WeightedLoss:
    """Generalised (power) mean ``((1/n) sum_i L_i^gamma)^(1/gamma)`` (Part 1, "广义平均").

    ``gamma=1`` is the arithmetic mean, ``gamma -> 0`` the geometric mean (:func:`log_sum`'s direction),
    ``gamma -> +inf`` the max and ``-inf`` the min; the value is non-decreasing in ``gamma``. Larger ``gamma``
    puts more weight on the worst task: the effective weight of ``grad L_i`` is ``(1/n) (L_i / M)^(gamma - 1)``
    with ``M`` the mean itself. Computed in log space (``logsumexp(gamma log L) - log n``) so large ``|gamma|``
    does not overflow.

    Args:
        losses: ``n`` scalar task losses, all > 0.
        gamma: the exponent, a real number; ``0`` and ``+-inf`` are handled exactly (NaN is rejected).

    Returns:
        :class:`WeightedLoss`: the mean and the weights (the gradient of the mean w.r.t. each loss).

    Raises:
        TypeError, ValueError: invalid or non-positive losses, a NaN or non-real ``gamma``.

    Example:
        >>> import torch
        >>> L = [torch.tensor(1.0), torch.tensor(4.0)]
        >>> [round(float(power_mean(L, gamma=g).loss), 4) for g in (float("-inf"), 0.0, 1.0, float("inf"))]
        [1.0, 2.0, 2.5, 4.0]
    """
    g = check_gamma(gamma)
    L = stack_losses(losses, "power_mean", positive=True)
    n = L.shape[0]
    logL = torch.log(L)
    if g == 0:
        log_m = logL.mean()
    elif math.isinf(g):
        log_m = logL.max() if g > 0 else logL.min()
    else:
        centre = logL.mean()
        d = logL - centre
        if abs(g) * float(d.detach().abs().max()) < 1.0:
            # small |gamma|: log mean exp(gamma d) = log1p(mean(expm1(gamma d))) avoids the cancellation of
            # logsumexp - log n, which is catastrophic as gamma -> 0
            log_m = centre + torch.log1p(torch.expm1(g * d).mean()) / g
        else:
            log_m = centre + (torch.logsumexp(g * d, dim=0) - math.log(n)) / g
    m = torch.exp(log_m)
    if math.isinf(g):
        w = torch.zeros_like(L.detach())
        w[int(torch.argmax(logL.detach()) if g > 0 else torch.argmin(logL.detach()))] = 1.0
    else:
        w = torch.exp((g - 1.0) * (logL.detach() - log_m.detach())) / n
    return WeightedLoss(m, w)


def uncertainty_weighting(losses: Losses, log_vars: Tensor) -> WeightedLoss:
    """Uncertainty weighting ``sum_i (exp(-s_i) L_i + s_i) / 2`` with learnable ``s_i = log sigma_i^2``.

    **Not from the article**: Kendall, Gal & Cipolla, CVPR 2018 (arXiv 1705.07115), in the common form that
    uses the regression factor 1/2 for every task. At the optimum over ``s_i`` (``exp(s_i) = L_i``) the
    gradient for the network is ``(1/2) grad sum_i log L_i``, i.e. Su's real-time normalisation.

    Args:
        losses: ``n`` scalar task losses.
        log_vars: ``(n,)`` learnable ``s_i`` (floating point, finite).

    Returns:
        :class:`WeightedLoss` with weights ``exp(-s_i) / 2``.

    Raises:
        TypeError, ValueError: invalid losses; ``log_vars`` not a finite floating ``(n,)`` tensor.

    Example:
        >>> import torch
        >>> uncertainty_weighting([torch.tensor(2.0)], torch.zeros(1)).loss
        tensor(1.)
    """
    L = stack_losses(losses, "uncertainty_weighting")
    check_float_tensor("log_vars", log_vars, ndim=1)
    if log_vars.shape != L.shape:
        raise ValueError(f"log_vars must have shape {tuple(L.shape)}, got {tuple(log_vars.shape)}")
    s = log_vars.to(L.dtype)
    return WeightedLoss(0.5 * (torch.exp(-s) * L + s).sum(), 0.5 * torch.exp(-s.detach()))


# ---------------------------------------------------------------------------------------- strategy modules


class WeightedSum(MultiTaskStrategy):
    """Equal (``1/n``) or fixed weights: :func:`weighted_sum` as a module (names ``"equal"``, ``"fixed"``).

    Args:
        num_tasks: number of tasks ``n``.
        weights: ``(n,)`` finite non-negative weights, or ``None`` for ``1/n``.

    Example:
        >>> import torch
        >>> WeightedSum(2, weights=[1.0, 3.0])([torch.tensor(1.0), torch.tensor(1.0)]).loss
        tensor(4.)
    """

    weights: Tensor

    def __init__(self, num_tasks: int, *, weights: Constants | None = None) -> None:
        super().__init__(num_tasks)
        w = (
            torch.full((self.num_tasks,), 1.0 / self.num_tasks)
            if weights is None
            else constant_vector(weights, "weights", self.num_tasks, positive=False)
        )
        self.register_buffer("weights", w)

    def forward(self, losses: Losses) -> WeightedLoss:
        L = stack_losses(losses, "WeightedSum", num_tasks=self.num_tasks)
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
        initial: ``(n,)`` finite positive constants, or ``None`` to estimate them.
        warmup_steps: batches to average for the estimate (an int >= 1).
        eps: added to each constant (finite, >= 0).

    Example:
        >>> import torch
        >>> s = InitialLossWeighting(2)
        >>> s([torch.tensor(2.0), torch.tensor(500.0)]).loss  # first batch: each term is L/L = 1
        tensor(2.)
    """

    initial: Tensor
    count: Tensor

    needs_positive = True

    def __init__(
        self,
        num_tasks: int,
        *,
        initial: Constants | None = None,
        warmup_steps: int = 1,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(num_tasks)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, low=1)
        self.eps = check_eps(eps)
        fixed = initial is not None
        init = (
            constant_vector(initial, "initial", self.num_tasks, positive=True)
            if initial is not None
            else torch.zeros(self.num_tasks)
        )
        self.register_buffer("initial", init)
        self.register_buffer("count", torch.tensor(self.warmup_steps if fixed else 0, dtype=torch.long))

    def forward(self, losses: Losses) -> WeightedLoss:
        L = stack_losses(losses, "InitialLossWeighting", num_tasks=self.num_tasks, positive=True, eps=self.eps)
        if self.training and int(self.count) < self.warmup_steps:
            with torch.no_grad():
                cur = all_reduce_mean_(L.detach().clone()).to(self.initial)
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

    Args:
        num_tasks: number of tasks ``n``.
        prior: ``(n,)`` finite positive prior losses.
        min_prior: lower clamp of the priors (finite, > 0).
        eps: added to each prior (finite, >= 0).

    Example:
        >>> import torch
        >>> PriorLossWeighting(2, prior=[2.0, 100.0])([torch.tensor(1.0), torch.tensor(50.0)]).loss
        tensor(1.)
    """

    prior: Tensor

    def __init__(self, num_tasks: int, *, prior: Constants, min_prior: float = 1e-3, eps: float = 0.0) -> None:
        super().__init__(num_tasks)
        self.min_prior = check_real("min_prior", min_prior, low=0.0, low_inclusive=False)
        p = constant_vector(prior, "prior", self.num_tasks, positive=True).clamp_min(self.min_prior)
        self.register_buffer("prior", p)
        self.eps = check_eps(eps)

    def forward(self, losses: Losses) -> WeightedLoss:
        L = stack_losses(losses, "PriorLossWeighting", num_tasks=self.num_tasks)
        w = 1.0 / (self.prior.to(L) + self.eps)
        return WeightedLoss((w * L).sum(), w)


class RealTimeWeighting(MultiTaskStrategy):
    """Real-time normalisation ``sum_i L_i / (sg(L_i) + eps)``, optionally with an EMA denominator.

    Part 1, Eq. 5 (https://kexue.fm/archives/8870). ``ema=None`` is the article's formula. ``ema=beta``
    replaces ``sg(L_i)`` by an exponential moving average of the detached losses (ours, not in the article: it
    lowers the variance of the per-batch weight ``1/L_i``); the average is all-reduced across DDP ranks.

    Args:
        num_tasks: number of tasks ``n``.
        eps: added to the denominator (finite, >= 0).
        ema: ``None`` or the EMA factor in ``[0, 1)``.

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
        self.eps = check_eps(eps)
        self.ema = None if ema is None else check_real("ema", ema, low=0.0, high=1.0, high_inclusive=False)
        self.register_buffer("average", torch.zeros(self.num_tasks))
        self.register_buffer("count", torch.tensor(0, dtype=torch.long))

    def forward(self, losses: Losses) -> WeightedLoss:
        L = stack_losses(losses, "RealTimeWeighting", num_tasks=self.num_tasks, positive=True, eps=self.eps)
        if self.ema is None:
            return realtime_weighting(L, eps=self.eps)
        if self.training:
            with torch.no_grad():
                cur = all_reduce_mean_(L.detach().clone()).to(self.average)
                if int(self.count) == 0:
                    self.average.copy_(cur)
                else:
                    self.average.mul_(self.ema).add_((1.0 - self.ema) * cur)
                self.count += 1
        return realtime_weighting(L, eps=self.eps, denominators=self.average)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, eps={self.eps}, ema={self.ema}"


class LogSum(MultiTaskStrategy):
    """``sum_i log(L_i + eps)`` as a module (:func:`log_sum`).

    Args:
        num_tasks: number of tasks ``n``.
        eps: added inside the log (finite, >= 0).
    """

    needs_positive = True

    def __init__(self, num_tasks: int, *, eps: float = 0.0) -> None:
        super().__init__(num_tasks)
        self.eps = check_eps(eps)

    def forward(self, losses: Losses) -> WeightedLoss:
        L = stack_losses(losses, "LogSum", num_tasks=self.num_tasks, positive=True, eps=self.eps)
        return log_sum(L, eps=self.eps)


class PowerMean(MultiTaskStrategy):
    """Generalised mean of the (optionally normalised) losses, :func:`power_mean` as a module.

    Args:
        num_tasks: number of tasks.
        gamma: the exponent (1 = arithmetic, 0 = geometric, +inf = worst task); not NaN.
        normalizers: optional ``(n,)`` finite positive constants; the mean is then taken over ``L_i / c_i``
            (e.g. the prior losses), which makes the losses dimensionless first. Without it the power mean of
            losses of different scale is dominated by the largest for ``gamma > 0`` (only ``gamma = 0`` is scale
            invariant).
    """

    normalizers: Tensor

    needs_positive = True

    def __init__(self, num_tasks: int, *, gamma: float = 1.0, normalizers: Constants | None = None) -> None:
        super().__init__(num_tasks)
        self.gamma = check_gamma(gamma)
        c = (
            torch.ones(self.num_tasks)
            if normalizers is None
            else constant_vector(normalizers, "normalizers", self.num_tasks, positive=True)
        )
        self.register_buffer("normalizers", c)

    def forward(self, losses: Losses) -> WeightedLoss:
        L = stack_losses(losses, "PowerMean", num_tasks=self.num_tasks, positive=True)
        c = self.normalizers.to(L)
        out = power_mean(L / c, gamma=self.gamma)
        return WeightedLoss(out.loss, out.weights / c)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, gamma={self.gamma}"


class UncertaintyWeighting(MultiTaskStrategy):
    """Kendall et al. uncertainty weighting with learnable ``log_vars`` (**not from the article**).

    Add the module's parameters to the optimizer (``log_vars``, initialised to 0). See
    :func:`uncertainty_weighting`.

    Args:
        num_tasks: number of tasks ``n``.
    """

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)
        self.log_vars = torch.nn.Parameter(torch.zeros(self.num_tasks))

    def forward(self, losses: Losses) -> WeightedLoss:
        L = stack_losses(losses, "UncertaintyWeighting", num_tasks=self.num_tasks)
        return uncertainty_weighting(L, self.log_vars)


class DynamicWeightAverage(MultiTaskStrategy):
    """DWA: ``w_i = n softmax_i(r_i / T)`` with ``r_i = Lbar_i(t-1) / Lbar_i(t-2)`` (**not from the article**).

    Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019 (arXiv 1803.10704), with
    their ``T = 2``. ``Lbar`` are epoch means of the detached losses seen by ``forward`` in training mode;
    call :meth:`end_epoch` at each epoch boundary. Weights are 1 for the first two epochs.

    Args:
        num_tasks: number of tasks ``n``.
        temperature: the softmax temperature ``T`` (finite, > 0).
    """

    weights: Tensor
    running: Tensor
    seen: Tensor
    history: Tensor
    epochs: Tensor

    needs_positive = True

    def __init__(self, num_tasks: int, *, temperature: float = 2.0) -> None:
        super().__init__(num_tasks)
        self.temperature = check_real("temperature", temperature, low=0.0, low_inclusive=False)
        n = self.num_tasks
        self.register_buffer("weights", torch.ones(n))
        self.register_buffer("running", torch.zeros(n))
        self.register_buffer("seen", torch.tensor(0, dtype=torch.long))
        self.register_buffer("history", torch.zeros(2, n))  # epoch means at t-2, t-1
        self.register_buffer("epochs", torch.tensor(0, dtype=torch.long))

    def forward(self, losses: Losses) -> WeightedLoss:
        L = stack_losses(losses, "DynamicWeightAverage", num_tasks=self.num_tasks, positive=True)
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
        mean = all_reduce_mean_(self.running / self.seen)
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
