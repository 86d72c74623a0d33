"""The strategy interface: :class:`MultiTaskStrategy`, its :class:`BackwardResult` and :class:`WeightedLoss`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, NamedTuple, TypedDict

from torch import Tensor, nn

from ._grads import ScalerLike, check_scaler
from ._inputs import Losses, check_num_tasks

__all__ = ["BackwardResult", "MultiTaskStrategy", "WeightedLoss"]


class WeightedLoss(NamedTuple):
    """The scalar to backpropagate and the effective per-task weights (detached, for logging).

    ``weights[i]`` is the factor multiplying ``grad L_i`` in the gradient of ``loss`` (e.g. ``1 / L_i`` for
    real-time normalisation), so it is comparable across schemes.
    """

    loss: Tensor
    weights: Tensor


class BackwardResult(TypedDict):
    """What :meth:`MultiTaskStrategy.backward` returns, for every strategy (both keys always present, detached).

    ``weights`` (``(n,)``): the coefficient of each task gradient ``grad L_i`` in the update written into the
    shared parameters' ``.grad`` (``1 / ||g_i||`` for gradient normalisation, the simplex point for MGDA,
    ``[1, lambda...]`` for the primary/auxiliary projection, the learned weights for GradNorm, the loss-level
    weights otherwise). NaN on an AMP step whose gradients overflowed (``scaler.step`` skips it).

    ``loss`` (0-d): for loss-level strategies the weighted scalar that was backpropagated (unscaled); for
    gradient-level ones ``sum_i weights_i L_i``, a scalar whose gradient over the shared parameters is the
    written direction. Log the raw task losses too: the real-time scheme's ``loss`` is the constant ``n``.
    """

    loss: Tensor
    weights: Tensor


class MultiTaskStrategy(nn.Module):
    """Base class of every strategy: ``backward(losses, shared_parameters, *, scaler=None) -> BackwardResult``.

    Subclasses set ``level`` to ``"loss"`` (a weighted scalar; ``forward`` returns :class:`WeightedLoss`) or
    ``"gradient"`` (combines per-task gradients over the shared parameters; ``forward`` raises).

    Args:
        num_tasks: number of task losses ``n`` (an int >= 1).
    """

    level: ClassVar[str] = "loss"
    needs_positive: ClassVar[bool] = False

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.num_tasks = check_num_tasks(num_tasks)

    def forward(self, losses: Losses) -> WeightedLoss:  # pragma: no cover - overridden
        raise NotImplementedError

    def backward(
        self,
        losses: Losses,
        shared_parameters: Iterable[Tensor] | None = None,
        *,
        scaler: ScalerLike | None = None,
    ) -> BackwardResult:
        """Backpropagate the weighted loss into ``.grad`` (accumulating, like ``Tensor.backward``).

        Args:
            losses: ``num_tasks`` finite scalar task losses.
            shared_parameters: ignored by loss-level strategies (accepted for a uniform call).
            scaler: an optional ``torch.amp.GradScaler``; the weighted loss goes through ``scaler.scale``, so
                ``scaler.step(opt); scaler.update()`` follow as usual.

        Returns:
            :class:`BackwardResult`: the (unscaled) weighted loss and the ``(n,)`` weights, detached.

        Raises:
            TypeError, ValueError: invalid losses (see :func:`weighted_sum`) or ``scaler``.
        """
        check_scaler(scaler)
        out = self(losses)
        total = scaler.scale(out.loss) if scaler is not None else out.loss
        total.backward()
        return BackwardResult(loss=out.loss.detach(), weights=out.weights.detach())

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}"
