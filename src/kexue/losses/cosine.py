"""Negative-cosine and normalised-MSE regression losses of SimSiam and BYOL.

* SimSiam (Chen & He 2021, https://arxiv.org/abs/2011.10566, Eq. 1):
  ``D(p, z) = -<p / ||p||, z / ||z||>``, in ``[-1, 1]``, minimum -1.
* BYOL (Grill et al. 2020, https://arxiv.org/abs/2006.07733, Eq. 2):
  ``|| p / ||p|| - z / ||z|| ||^2 = 2 - 2 cos(p, z)``, in ``[0, 4]``, minimum 0.

The losses do **not** stop gradients: the caller writes ``target.detach()`` at the point of use (that is the
method's choice, and the SimSiam "no stop-gradient" ablation needs the gradient to flow).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NegativeCosineSimilarity", "NormalizedMSELoss", "negative_cosine_similarity", "normalized_mse"]

Reduction = Literal["mean", "sum", "none"]


def _cosine(prediction: Tensor, target: Tensor, dim: int, eps: float) -> Tensor:
    if not isinstance(prediction, Tensor) or not isinstance(target, Tensor):
        raise TypeError(
            f"prediction and target must be tensors, got {type(prediction).__name__}, {type(target).__name__}"
        )
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape, got {tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    if prediction.dim() == 0:
        raise ValueError("prediction must have at least one dimension (the feature dimension)")
    # normalise first, then take the dot product: F.normalize floors the norm at eps (a zero vector gives 0).
    return (F.normalize(prediction, dim=dim, eps=eps) * F.normalize(target, dim=dim, eps=eps)).sum(dim=dim)


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _reduce(x: Tensor, reduction: str) -> Tensor:
    _check_reduction(reduction)
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    return x


def negative_cosine_similarity(
    prediction: Tensor, target: Tensor, *, dim: int = -1, eps: float = 1e-8, reduction: Reduction = "mean"
) -> Tensor:
    """SimSiam's ``D(p, z) = -cos(p, z)`` (Chen & He 2021, Eq. 1).

    Args:
        prediction: ``(B, D)`` (any shape) predictor output ``p``.
        target: same shape, the target ``z``; detach it yourself for a stop-gradient.
        dim: feature dimension.
        eps: floor of the norms.
        reduction: ``"mean"`` | ``"sum"`` over the remaining dimensions, or ``"none"`` (shape without
            ``dim``).

    Returns:
        values in ``[-1, 1]``.

    Raises:
        ValueError: shapes differ, or unknown reduction. TypeError: not tensors.

    Example:
        >>> import torch
        >>> p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> negative_cosine_similarity(p, p.detach())
        tensor(-1.)
    """
    return _reduce(-_cosine(prediction, target, dim, eps), reduction)


def normalized_mse(
    prediction: Tensor, target: Tensor, *, dim: int = -1, eps: float = 1e-8, reduction: Reduction = "mean"
) -> Tensor:
    """BYOL's ``|| p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z)`` (Grill et al. 2020, Eq. 2).

    Args:
        prediction: ``(B, D)`` (any shape) predictor output.
        target: same shape, the target projection; detach it yourself for a stop-gradient.
        dim: feature dimension.
        eps: floor of the norms.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Returns:
        values in ``[0, 4]``.

    Example:
        >>> import torch
        >>> normalized_mse(torch.tensor([[1.0, 0.0]]), torch.tensor([[-3.0, 0.0]]))
        tensor(4.)
    """
    return _reduce(2 - 2 * _cosine(prediction, target, dim, eps), reduction)


class NegativeCosineSimilarity(nn.Module):
    """Module form of :func:`negative_cosine_similarity`.

    Example:
        >>> import torch
        >>> NegativeCosineSimilarity()(torch.ones(3, 4), torch.ones(3, 4))
        tensor(-1.)
    """

    def __init__(self, *, dim: int = -1, eps: float = 1e-8, reduction: Reduction = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.dim, self.eps, self.reduction = dim, eps, reduction

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return negative_cosine_similarity(prediction, target, dim=self.dim, eps=self.eps, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}, reduction={self.reduction!r}"


class NormalizedMSELoss(nn.Module):
    """Module form of :func:`normalized_mse`.

    Example:
        >>> import torch
        >>> NormalizedMSELoss()(torch.ones(3, 4), torch.ones(3, 4))
        tensor(0.)
    """

    def __init__(self, *, dim: int = -1, eps: float = 1e-8, reduction: Reduction = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.dim, self.eps, self.reduction = dim, eps, reduction

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return normalized_mse(prediction, target, dim=self.dim, eps=self.eps, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}, reduction={self.reduction!r}"
