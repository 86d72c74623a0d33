"""Calibration metrics: expected calibration error and reliability-diagram data.

Guo et al., "On Calibration of Modern Neural Networks", ICML 2017 (arXiv 1706.04599), Section 2: predictions
are grouped into ``n_bins`` equal-width bins of confidence (the max softmax probability); ECE is the
count-weighted mean gap ``|accuracy(bin) - confidence(bin)|``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ReliabilityDiagram", "expected_calibration_error", "reliability_diagram"]


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Per-bin statistics of a reliability diagram (bins of equal width on [0, 1]).

    Attributes:
        edges: bin edges ``(n_bins + 1,)``.
        confidence: mean confidence per bin ``(n_bins,)`` (NaN for empty bins).
        accuracy: accuracy per bin ``(n_bins,)`` (NaN for empty bins).
        count: examples per bin ``(n_bins,)`` int64.
        ece: expected calibration error.
    """

    edges: Tensor
    confidence: Tensor
    accuracy: Tensor
    count: Tensor
    ece: float


def reliability_diagram(logits: Tensor, target: Tensor, *, n_bins: int = 15) -> ReliabilityDiagram:
    """Bin predictions by confidence and return per-bin accuracy, confidence, counts and the ECE.

    Args:
        logits: ``(N, C)`` unnormalised scores.
        target: ``(N,)`` class indices.
        n_bins: number of equal-width confidence bins (15 as in Guo et al.).

    Returns:
        :class:`ReliabilityDiagram` (tensors on CPU, float64).

    Raises:
        ValueError: bad shapes, ``N == 0`` or ``n_bins < 1``.

    Example:
        >>> import torch
        >>> d = reliability_diagram(torch.tensor([[9.0, 0.0], [0.0, 9.0]]), torch.tensor([0, 0]), n_bins=10)
        >>> round(d.ece, 3), d.count.tolist()[-1]
        (0.5, 2)
    """
    if logits.dim() != 2 or target.shape != (logits.shape[0],):
        raise ValueError(f"logits must be (N, C) and target (N,), got {tuple(logits.shape)} and {tuple(target.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("need at least one prediction")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    probs = torch.softmax(logits.detach().double().cpu(), dim=1)
    conf, pred = probs.max(dim=1)
    correct = (pred == target.cpu()).double()
    # bin i holds confidences in (edges[i], edges[i+1]]; confidence 0 cannot occur after a softmax
    idx = (conf * n_bins).ceil().long().clamp(1, n_bins) - 1
    count = torch.bincount(idx, minlength=n_bins)
    conf_sum = torch.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(idx, weights=correct, minlength=n_bins)
    denom = count.double()
    mean_conf = conf_sum / denom  # NaN in empty bins
    mean_acc = acc_sum / denom
    ece = float(((acc_sum - conf_sum).abs()).sum() / conf.numel())
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    return ReliabilityDiagram(edges, mean_conf, mean_acc, count, ece)


def expected_calibration_error(logits: Tensor, target: Tensor, *, n_bins: int = 15) -> float:
    """Expected calibration error of ``softmax(logits)`` (Guo et al. 2017, Eq. 3).

    Args:
        logits: ``(N, C)`` unnormalised scores.
        target: ``(N,)`` class indices.
        n_bins: equal-width confidence bins.

    Returns:
        ECE in [0, 1].

    Example:
        >>> import torch
        >>> expected_calibration_error(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]))  # conf = acc = 0.5
        0.0
    """
    return reliability_diagram(logits, target, n_bins=n_bins).ece
