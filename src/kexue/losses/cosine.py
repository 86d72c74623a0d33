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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._validate import (
    check_float_tensor,
    check_int,
    check_real,
    check_reduction,
    check_same_size,
    is_compiling,
    reduce,
)

__all__ = ["NegativeCosineSimilarity", "NormalizedMSELoss", "negative_cosine_similarity", "normalized_mse"]

Reduction = Literal["mean", "sum", "none"]


def _unit(x: Tensor, *, dim: int = -1, eps: float = 1e-12) -> Tensor:
    """``x / ||x||`` along ``dim``, free of the overflow and underflow of the squared norm.

    ``F.normalize`` squares the entries: in float32 a vector of norm above ~1e19 overflows to ``inf`` (the result
    is 0) and one below ~1e-19 underflows (the ``eps`` floor then shrinks it towards 0), so a cosine of a vector
    with itself comes out 0. Dividing by the vector's largest ``|entry|`` first brings every non-zero vector to a
    norm in ``[1, sqrt(D)]``. That scale is detached: the result does not depend on it, so the gradient through
    the rescaled vector is already exact. ``eps`` floors the rescaled norm, so with ``eps <= 1`` it only maps an
    all-zero vector to 0 (instead of 0/0).

    Shared by the cosine, InfoNCE and FlatNCE losses; inputs are validated by the callers.
    """
    scale = x.detach().abs().amax(dim=dim, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero vector stays 0
    return F.normalize(x / scale, dim=dim, eps=eps)


def _check_options(dim: int, eps: float, reduction: str) -> None:
    check_int("dim", dim)
    # the norm after rescaling is >= 1 for every non-zero vector: an eps above 1 would shrink true cosines
    check_real("eps", eps, low=0, low_inclusive=False, high=1)
    check_reduction(reduction)


def _cosine(prediction: Tensor, target: Tensor, dim: int, eps: float, reduction: str) -> Tensor:
    _check_options(dim, eps, reduction)
    # finite=False: a NaN/inf entry makes its cosine NaN (x / max|x| is NaN there), so the cheap check of the
    # small output in _finite replaces a scan of both inputs
    check_float_tensor("prediction", prediction, min_ndim=1, finite=False)
    check_float_tensor("target", target, min_ndim=1, finite=False)
    check_same_size("prediction", prediction, "target", target)
    if not -prediction.dim() <= dim < prediction.dim():
        raise ValueError(f"dim must be in [{-prediction.dim()}, {prediction.dim() - 1}], got {dim}")
    # normalise first (scale-safe), then take the dot product; an all-zero vector gives cosine 0.
    return (_unit(prediction, dim=dim, eps=eps) * _unit(target, dim=dim, eps=eps)).sum(dim=dim)


def _finite(out: Tensor, prediction: Tensor, target: Tensor) -> Tensor:
    """Raise naming the input with NaN/inf when the loss is not finite (eagerly; skipped under torch.compile)."""
    if is_compiling():
        return out
    if not bool(torch.isfinite(out.detach()).all()):
        check_float_tensor("prediction", prediction)  # raises: "prediction contains NaN or infinite values"
        check_float_tensor("target", target)
    return out


def negative_cosine_similarity(
    prediction: Tensor, target: Tensor, *, dim: int = -1, eps: float = 1e-8, reduction: Reduction = "mean"
) -> Tensor:
    """SimSiam's ``D(p, z) = -cos(p, z)`` (Chen & He 2021, Eq. 1).

    Args:
        prediction: ``(B, D)`` (any shape) predictor output ``p``.
        target: same shape, the target ``z``; detach it yourself for a stop-gradient.
        dim: feature dimension.
        eps: in ``(0, 1]``: floor of each vector's norm after it is divided by its largest ``|entry|`` (which
            makes the norm at least 1), so it only sends an all-zero vector to cosine 0. The normalisation is
            exact for any finite scale (1e-30 or 1e30 in float32).
        reduction: ``"mean"`` | ``"sum"`` over the remaining dimensions, or ``"none"`` (shape without
            ``dim``).

    Returns:
        values in ``[-1, 1]``.

    Raises:
        TypeError: not tensors, or not floating point (integer, bool, complex); ``dim`` not an int; ``eps`` not
            a real number.
        ValueError: shapes differ, empty or 0-d input, NaN/inf entries, ``dim`` out of range, ``eps`` outside
            ``(0, 1]``, unknown reduction.

    Example:
        >>> import torch
        >>> p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> negative_cosine_similarity(p, p.detach())
        tensor(-1.)
    """
    return _finite(reduce(-_cosine(prediction, target, dim, eps, reduction), reduction), prediction, target)


def normalized_mse(
    prediction: Tensor, target: Tensor, *, dim: int = -1, eps: float = 1e-8, reduction: Reduction = "mean"
) -> Tensor:
    """BYOL's ``|| p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z)`` (Grill et al. 2020, Eq. 2).

    Args:
        prediction: ``(B, D)`` (any shape) predictor output.
        target: same shape, the target projection; detach it yourself for a stop-gradient.
        dim: feature dimension.
        eps: in ``(0, 1]``; as in :func:`negative_cosine_similarity` (only an all-zero vector is affected).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Returns:
        values in ``[0, 4]``.

    Raises:
        TypeError / ValueError: as :func:`negative_cosine_similarity`.

    Example:
        >>> import torch
        >>> normalized_mse(torch.tensor([[1.0, 0.0]]), torch.tensor([[-3.0, 0.0]]))
        tensor(4.)
    """
    return _finite(reduce(2 - 2 * _cosine(prediction, target, dim, eps, reduction), reduction), prediction, target)


class NegativeCosineSimilarity(nn.Module):
    """Module form of :func:`negative_cosine_similarity`.

    Example:
        >>> import torch
        >>> NegativeCosineSimilarity()(torch.ones(3, 4), torch.ones(3, 4))
        tensor(-1.)
    """

    def __init__(self, *, dim: int = -1, eps: float = 1e-8, reduction: Reduction = "mean") -> None:
        super().__init__()
        _check_options(dim, eps, reduction)
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
        _check_options(dim, eps, reduction)
        self.dim, self.eps, self.reduction = dim, eps, reduction

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return normalized_mse(prediction, target, dim=self.dim, eps=self.eps, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}, reduction={self.reduction!r}"
