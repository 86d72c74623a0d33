"""Theoretical initial and prior loss values: the constants of initial-/prior-loss normalisation.

Part 1 of Su Jianlin's series (https://kexue.fm/archives/8870), "初始状态" and "先验状态": a K-way softmax whose
logits start near 0 has cross-entropy ``log K``; an L2 regression predicting 0 has loss ``E||y||^2``; a model
that only learned the label prior has the label entropy (classification) or the label variance (regression).
The values are Python floats (constants, no gradient), computed in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kexue._validate import check_float_tensor, check_int, check_real

__all__ = [
    "classification_initial_loss",
    "classification_prior_loss",
    "regression_initial_loss",
    "regression_prior_loss",
]


def classification_initial_loss(num_classes: int) -> float:
    """Cross-entropy of a ``K``-way softmax whose logits are all equal (zero at initialisation): ``log K``.

    Args:
        num_classes: ``K``, an int >= 2.

    Returns:
        ``log K``.

    Raises:
        TypeError: ``num_classes`` is not an int.
        ValueError: ``num_classes < 2``.

    Example:
        >>> round(classification_initial_loss(10), 4)
        2.3026
    """
    return math.log(check_int("num_classes", num_classes, low=2))


def classification_prior_loss(labels: Tensor, num_classes: int | None = None, *, min_value: float = 1e-3) -> float:
    """Cross-entropy of a model that predicts the label frequencies: the label entropy ``-sum p_j log p_j``.

    Clamped below at ``min_value`` because a nearly deterministic label would give a weight ``1/H -> inf``
    (spec pitfall "prior-loss degeneracy").

    Args:
        labels: ``(N,)`` non-negative integer class labels, ``N >= 1``.
        num_classes: number of classes (default ``labels.max() + 1``); every label must be below it.
        min_value: the lower clamp (finite, > 0).

    Returns:
        ``max(H, min_value)`` in nats.

    Raises:
        TypeError: ``labels`` is not an integer tensor (bool included), ``num_classes`` not an int.
        ValueError: ``labels`` not 1-D or empty, a negative label or one ``>= num_classes``, a bad ``min_value``.

    Example:
        >>> import torch
        >>> round(classification_prior_loss(torch.tensor([0, 1, 0, 1])), 4)  # log 2
        0.6931
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
    if labels.dim() != 1 or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty 1-D tensor, got shape {tuple(labels.shape)}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0:
        raise ValueError(f"labels must be >= 0, got a label {lo}")
    k = 0
    if num_classes is not None:
        k = check_int("num_classes", num_classes, low=1)
        if hi >= k:
            raise ValueError(f"labels must be < num_classes={k}, got a label {hi}")
    m = check_real("min_value", min_value, low=0.0, low_inclusive=False)
    p = torch.bincount(labels.long(), minlength=k).double()
    p = p[p > 0] / p.sum()
    return max(float(-(p * p.log()).sum()), m)


def regression_initial_loss(targets: Tensor) -> float:
    """MSE of a zero prediction: ``mean(y^2)``, the per-element ``E||y||^2`` (``F.mse_loss``'s mean).

    Args:
        targets: ``(N, ...)`` finite floating-point regression targets, non-empty.

    Returns:
        ``mean(y^2)``, computed in float64.

    Raises:
        TypeError: ``targets`` is not a floating-point tensor.
        ValueError: ``targets`` is empty or non-finite.

    Example:
        >>> import torch
        >>> regression_initial_loss(torch.tensor([1.0, -3.0]))
        5.0
    """
    check_float_tensor("targets", targets)
    return float(targets.detach().double().pow(2).mean())


def regression_prior_loss(targets: Tensor, *, min_value: float = 1e-12) -> float:
    """MSE of predicting the label mean: the label variance (per element, matching ``F.mse_loss``'s mean).

    Args:
        targets: ``(N, ...)`` finite floating-point regression targets; the mean is taken over the first
            dimension, which needs ``N >= 2``.
        min_value: the lower clamp (finite, > 0): a constant target would give an infinite weight.

    Returns:
        ``max(var, min_value)``, computed in float64.

    Raises:
        TypeError: ``targets`` is not a floating-point tensor.
        ValueError: fewer than 2 rows, non-finite targets, a bad ``min_value``.

    Example:
        >>> import torch
        >>> regression_prior_loss(torch.tensor([1.0, 3.0]))
        1.0
    """
    check_float_tensor("targets", targets, min_ndim=1)
    if targets.shape[0] < 2:
        raise ValueError(f"targets needs >= 2 rows, got shape {tuple(targets.shape)}")
    m = check_real("min_value", min_value, low=0.0, low_inclusive=False)
    t = targets.detach().double()
    return max(float((t - t.mean(0)).pow(2).mean()), m)
