"""Gradient-level strategies: combine per-task gradients over the shared parameters and write ``.grad``.

Each takes one gradient per task over the *shared* parameters (the article's theta; Su confirms in the comments
that theta always means the shared parameters), combines them with a rule of :mod:`.combine`, and accumulates
the result into the shared ``.grad``; every other parameter the losses reach (the task heads) receives its
ordinary gradient ``sum_i grad L_i``. :class:`GradNorm` (in :mod:`.gradnorm`) shares the interface.

AMP: pass ``scaler=torch.amp.GradScaler(...)``. Each task loss goes through ``scaler.scale`` (so the scaler's
state exists and ``scaler.step`` works), the task gradients are unscaled before any norm, inner product or
solver sees them, and the combined direction is written back multiplied by the scale: ``scaler.step(opt);
scaler.update()`` then behave exactly as after ``scaler.scale(loss).backward()``. When a task gradient
overflows (inf/NaN), the non-finite values are written into ``.grad`` and ``scaler.step`` skips the step and
lowers the scale; without a scaler a non-finite task gradient raises ``ValueError`` instead of reaching the
optimizer.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from kexue._validate import check_choice, check_int

from ._grads import (
    ScalerLike,
    accumulate,
    check_requires_grad,
    check_scaler,
    current_scale,
    scale_loss,
    scaler_enabled,
    shared_list,
    task_gradients,
    write_flat,
)
from ._inputs import Losses, check_eps, check_flag, loss_items, stack_losses
from .base import BackwardResult, MultiTaskStrategy, WeightedLoss
from .combine import _l2_coefficient, gradient_normalization, mgda_direction, primary_auxiliary_projection

__all__ = ["MGDA", "GradientNormalization", "L2DecayAuxiliary", "PrimaryAuxiliaryProjection"]


def non_finite_error(scheme: str, what: str) -> ValueError:
    """The error for non-finite gradients without a GradScaler to skip the step."""
    return ValueError(
        f"{scheme}: {what} contain NaN or infinite values; under AMP pass scaler=GradScaler(...) so that "
        "scaler.step skips such a step, otherwise check the model and the losses"
    )


class _GradientLevel(MultiTaskStrategy):
    """Shared plumbing of the gradient-level methods: per-task gradients, combination, ``.grad`` writing."""

    level = "gradient"
    batched: bool = False

    def forward(self, losses: Losses) -> WeightedLoss:
        raise TypeError(
            f"{type(self).__name__} is a gradient-level method: call .backward(losses, shared_parameters) instead"
        )

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        """Combine the ``(n, D)`` unscaled task gradients into ``(direction (D,), weights (n,))``."""
        raise NotImplementedError

    def backward(
        self,
        losses: Losses,
        shared_parameters: Iterable[Tensor] | None = None,
        *,
        scaler: ScalerLike | None = None,
    ) -> BackwardResult:
        """Combine the task gradients over ``shared_parameters`` and accumulate them into ``.grad``.

        The per-task gradients come from one backward pass per task, or, when the strategy was built with
        ``batched=True``, from a single ``vmap``-ed pass (``torch.autograd.grad(..., is_grads_batched=True)``),
        falling back to the loop for operations without a batching rule.

        Args:
            losses: ``num_tasks`` finite scalar task losses, each requiring grad (one graph; it is freed
                afterwards).
            shared_parameters: the parameters every task uses (the trunk). Every other parameter the losses
                reach gets its ordinary gradient ``sum_i grad L_i`` (task heads only see their own loss).
            scaler: optional ``torch.amp.GradScaler``: losses scaled through it, gradients unscaled before
                combining, the result written in scaled units for ``scaler.step``.

        Returns:
            :class:`BackwardResult`: ``weights`` the ``(n,)`` coefficients of the task gradients in the written
            direction (NaN on an overflowing AMP step), ``loss`` the detached ``sum_i weights_i L_i``.

        Raises:
            TypeError, ValueError: invalid losses, shared parameters or scaler; a loss that does not require
                grad; non-finite task gradients without an enabled scaler.
        """
        name = type(self).__name__
        check_scaler(scaler)
        L = stack_losses(losses, name, num_tasks=self.num_tasks, positive=self.needs_positive)
        items = loss_items(losses)
        check_requires_grad(items, name)
        shared = shared_list(shared_parameters, name)
        G, others, head, scale = task_gradients(L, items, shared, scaler, None, batched=getattr(self, "batched", False))
        if bool(torch.isfinite(G).all()):
            u, w = self.combine(G, L.detach())
        elif scaler_enabled(scaler):
            # AMP overflow: pass the non-finite values on so that scaler.step skips the step and backs off
            u, w = G.sum(0), torch.full((G.shape[0],), float("nan"), dtype=G.dtype, device=G.device)
        else:
            raise non_finite_error(name, "the task gradients over shared_parameters")
        write_flat(shared, u * scale if scale != 1.0 else u)
        accumulate(others, head)
        w = w.detach()
        return BackwardResult(loss=(w.to(L.dtype) * L.detach()).sum(), weights=w)


class GradientNormalization(_GradientLevel):
    """Gradient-norm normalisation ``sum_i g_i / ||g_i||`` over the shared parameters (Part 1, Eq. 13).

    Invariant to both scaling and shifting any task loss (scale-safe: a task whose gradient is ``1e20`` or
    ``1e-30`` still counts fully, see :func:`gradient_normalization`). The direction's norm is about
    ``sqrt(n)`` whatever the losses' scale; with ``rescale="mean_norm"`` it is multiplied by the mean
    task-gradient norm (a suggestion from the article's comments, for SGD; with Adam it hardly matters), which
    gives up the scale invariance.

    Args:
        num_tasks: number of tasks ``n``.
        eps: added to each gradient norm (finite, >= 0); the default 0 is the article's formula (a zero task
            gradient contributes nothing).
        rescale: ``"none"`` or ``"mean_norm"``.
        batched: one ``vmap``-ed backward for all task gradients.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> _ = GradientNormalization(2).backward([10 * w[0] ** 2, w[1] + 5], [w]); w.grad
        tensor([1., 1.])
    """

    def __init__(self, num_tasks: int, *, eps: float = 0.0, rescale: str = "none", batched: bool = False) -> None:
        super().__init__(num_tasks)
        self.batched = check_flag("batched", batched)
        self.rescale = check_choice("rescale", rescale, ("none", "mean_norm"))
        self.eps = check_eps(eps)

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
        u, w = gradient_normalization(grads, eps=self.eps)
        if self.rescale == "mean_norm":
            # mean ||g_i||, scale-safe: max-abs-normalised rows, scales kept in float64
            s = grads.abs().amax(dim=1).double()
            s = torch.where(s > 0, s, torch.ones_like(s))
            k = (s * torch.linalg.vector_norm(grads / s.to(grads.dtype).unsqueeze(1), dim=1).double()).mean()
            u, w = u * k.to(u.dtype), w * k.to(w.dtype)
        return u, w

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, eps={self.eps}, rescale={self.rescale!r}, batched={self.batched}"


class MGDA(_GradientLevel):
    """MGDA min-norm direction over the shared parameters (Part 2; Sener & Koltun 2018), see
    :func:`mgda_direction`.

    Task heads keep their own gradients (as in the paper). Not scale invariant: the min-norm point leans
    towards the task with the smallest gradient.

    Args:
        num_tasks: number of tasks ``n``.
        max_iter: Frank-Wolfe iterations (an int >= 1).
        batched: one ``vmap``-ed backward for all task gradients.
    """

    def __init__(self, num_tasks: int, *, max_iter: int = 250, batched: bool = False) -> None:
        super().__init__(num_tasks)
        self.batched = check_flag("batched", batched)
        self.max_iter = check_int("max_iter", max_iter, low=1)

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
        return mgda_direction(grads, max_iter=self.max_iter)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, max_iter={self.max_iter}, batched={self.batched}"


class PrimaryAuxiliaryProjection(_GradientLevel):
    """Task ``primary`` is the main task, the others auxiliary tasks that must not increase (Part 3).

    The shared direction is ``g_0 + sum_i lambda_i g_i`` with the smallest ``lambda >= 0`` making
    ``<u, g_i> >= 0`` (:func:`primary_auxiliary_projection`).

    Args:
        num_tasks: number of tasks ``n >= 2``.
        primary: index of the main task in ``[0, n)``.
        batched: one ``vmap``-ed backward for all task gradients.
    """

    def __init__(self, num_tasks: int, *, primary: int = 0, batched: bool = False) -> None:
        super().__init__(num_tasks)
        self.batched = check_flag("batched", batched)
        if self.num_tasks < 2:
            raise ValueError(f"PrimaryAuxiliaryProjection needs num_tasks >= 2, got {num_tasks}")
        self.primary = check_int("primary", primary, low=0, high=self.num_tasks - 1)

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
        aux = [i for i in range(grads.shape[0]) if i != self.primary]
        u, lam = primary_auxiliary_projection(grads[self.primary], grads[aux])
        w = torch.ones(grads.shape[0], dtype=grads.dtype, device=grads.device)
        w[aux] = lam.to(w)
        return u, w

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, primary={self.primary}, batched={self.batched}"


class L2DecayAuxiliary(MultiTaskStrategy):
    """Sum of the task losses, then L2 decay as an auxiliary task on the shared parameters (Part 3, application a).

    After ``sum_i L_i`` is backpropagated, the gradient ``g`` of the shared parameters (flattened together) is
    replaced by ``g + relu(-<g, theta>) / ||theta||^2 theta`` (:func:`l2_auxiliary_projection`), so the update
    never increases ``||theta||^2`` to first order. Linear in ``g``, so it works on scaled AMP gradients as is.
    The coefficient of ``theta`` of the last call (unscaled) is kept in :attr:`l2_coef` for logging.

    Args:
        num_tasks: number of tasks ``n``.
        eps: added to ``||theta||^2`` (finite, >= 0; the default 0 is the article's formula).
    """

    level = "gradient"

    def __init__(self, num_tasks: int, *, eps: float = 0.0) -> None:
        super().__init__(num_tasks)
        self.eps = check_eps(eps)
        self.l2_coef: Tensor | None = None

    def forward(self, losses: Losses) -> WeightedLoss:
        L = stack_losses(losses, "L2DecayAuxiliary", num_tasks=self.num_tasks)
        return WeightedLoss(L.sum(), torch.ones_like(L.detach()))

    def backward(
        self,
        losses: Losses,
        shared_parameters: Iterable[Tensor] | None = None,
        *,
        scaler: ScalerLike | None = None,
    ) -> BackwardResult:
        """Backpropagate ``sum_i L_i`` and project the shared gradient (see the class docstring).

        Args:
            losses: ``num_tasks`` finite scalar task losses.
            shared_parameters: the parameters whose ``||theta||^2`` must not increase (the trunk).
            scaler: optional ``torch.amp.GradScaler``.

        Returns:
            :class:`BackwardResult` with the summed loss and weights of 1.

        Raises:
            TypeError, ValueError: invalid losses, shared parameters or scaler; a non-finite shared gradient
                without an enabled scaler.
        """
        check_scaler(scaler)
        shared = shared_list(shared_parameters, "L2DecayAuxiliary")
        before = [p.grad for p in shared]
        for p in shared:
            p.grad = None
        try:
            out = self(losses)
            scale_loss(scaler, out.loss).backward()
        finally:
            fresh = [p.grad for p in shared]
            for p, b in zip(shared, before):
                p.grad = b
        g = torch.cat([(f if f is not None else torch.zeros_like(p)).reshape(-1) for f, p in zip(fresh, shared)])
        theta = torch.cat([p.detach().reshape(-1) for p in shared]).to(g.dtype)
        if bool(torch.isfinite(g).all()):
            coef, sp = _l2_coefficient(g, theta, self.eps)
            u = g + (coef * sp).to(g.dtype) * (theta / sp.to(g.dtype))
            self.l2_coef = (coef / current_scale(scaler)).detach()  # g is in scaled units under AMP
        elif scaler_enabled(scaler):
            u = g  # overflow: scaler.step sees the non-finite values and skips the step
            self.l2_coef = torch.full((), float("nan"), dtype=torch.float64)
        else:
            raise non_finite_error("L2DecayAuxiliary", "the gradients of shared_parameters")
        write_flat(shared, u)
        return BackwardResult(loss=out.loss.detach(), weights=out.weights.detach())

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, eps={self.eps}"
