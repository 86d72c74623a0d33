"""TaiLr: cross entropy that stops trusting low-probability labels.

Su Jianlin, "缓解交叉熵过度自信的一个简明方案" (easing the over-confidence of cross entropy),
https://kexue.fm/archives/9526, presenting Ji et al., "Tailoring Language Generation Models under Total
Variation Distance", ICLR 2023 (arXiv 2302.13344, code github.com/thu-coai/TaiLr).

Cross entropy's gradient is ``-∇p / p``: it grows without bound as the probability ``p`` of the labelled class
goes to 0, so training chases low-probability (often mislabelled) examples. TaiLr replaces ``1/p`` by
``1/(γ + (1-γ) p)``:

* closed form (Su's Eq. 2): ``ℓ_γ = -log(γ + (1-γ) p) / (1-γ)``; γ=0 is cross entropy, γ→1 gives ``1 - p``;
* the paper's rule (the released fairseq criterion): a stop-gradient weighted NLL
  ``ℓ = -[clamp(p / (γ + (1-γ) p), b, 1)]_sg · log p`` with a floor ``b`` on the weight. With ``b = 0`` its
  gradient equals the closed form's (the values differ).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TaiLrLoss", "tailr_loss", "tailr_weight"]

Reduction = Literal["mean", "sum", "none"]
Form = Literal["weighted", "closed"]


def _check_unit(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__} {value!r}")
    if not (0.0 <= float(value) <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def _check_options(gamma: float, min_weight: float, label_smoothing: float, reduction: str, form: str) -> None:
    _check_unit("gamma", gamma)
    _check_unit("min_weight", min_weight)
    _check_unit("label_smoothing", label_smoothing)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if form not in ("weighted", "closed"):
        raise ValueError(f"form must be 'weighted' or 'closed', got {form!r}")
    if form == "closed" and min_weight != 0.0:
        raise ValueError(
            f"form='closed' has no weight floor (the floored rule has no antiderivative); got min_weight="
            f"{min_weight!r}. Use form='weighted' for min_weight > 0."
        )


def _check_inputs(logits: Tensor, target: Tensor, ignore_index: int) -> None:
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"logits and target must be tensors, got {type(logits).__name__} and {type(target).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"target must hold integer class indices (int64), got dtype {target.dtype}; "
            "probability targets are not supported"
        )
    if logits.dim() < 2:
        raise ValueError(f"logits must be (N, C) or (N, C, d1, ...), got shape {tuple(logits.shape)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must have shape {expected} for logits of shape {tuple(logits.shape)} "
            f"(class dimension is dim 1, as in F.cross_entropy), got {tuple(target.shape)}"
        )
    n_classes = logits.shape[1]
    if target.numel() > 0:
        valid = target != ignore_index
        bad = valid & ((target < 0) | (target >= n_classes))
        if bool(bad.any()):
            first = int(target[bad].flatten()[0])
            raise ValueError(
                f"target holds class index {first}, expected values in [0, {n_classes - 1}] "
                f"or ignore_index={ignore_index}"
            )


def _log_weight(logp: Tensor, gamma: float) -> Tensor:
    """``log p - log(γ + (1-γ) p)`` from ``log p``, without forming ``p`` (no underflow for tiny γ)."""
    if gamma == 0.0:
        return torch.zeros_like(logp)
    if gamma == 1.0:
        return logp
    # log(γ + (1-γ)p) = logaddexp(log γ, log(1-γ) + log p): exact even when p underflows to 0 in exp(log p).
    denom = torch.logaddexp(torch.full_like(logp, math.log(gamma)), logp + math.log1p(-gamma))
    return logp - denom


def tailr_weight(logp: Tensor, *, gamma: float, min_weight: float = 0.0) -> Tensor:
    """The TaiLr weight ``clamp(p / (γ + (1-γ) p), b, 1)`` from target log-probabilities (not detached).

    https://kexue.fm/archives/9526 (the paper's "original result"): the factor by which TaiLr shrinks the
    cross-entropy gradient of one example (or token).

    Args:
        logp: log-probabilities of the target classes, any shape.
        gamma: γ in [0, 1].
        min_weight: the floor ``b`` in [0, 1].

    Returns:
        Weights in ``[min_weight, 1]`` with ``logp``'s shape and dtype.

    Raises:
        ValueError: ``gamma`` or ``min_weight`` outside [0, 1].

    Example:
        >>> import torch
        >>> tailr_weight(torch.log(torch.tensor([1.0, 0.5, 1e-9])), gamma=0.5).tolist()  # doctest: +ELLIPSIS
        [1.0, 0.666..., 1.999...e-09]
    """
    _check_unit("gamma", gamma)
    _check_unit("min_weight", min_weight)
    return _log_weight(logp, float(gamma)).exp().clamp(min=float(min_weight), max=1.0)


def _tailr(
    logits: Tensor,
    target: Tensor,
    gamma: float,
    min_weight: float,
    label_smoothing: float,
    ignore_index: int,
    reduction: str,
    form: str,
) -> Tensor:
    """The shared core of :func:`tailr_loss` and :class:`TaiLrLoss` (inputs already validated)."""
    n_classes = logits.shape[1]
    logp_all = F.log_softmax(logits, dim=1)  # (N, C, ...): the one (N, C)-sized buffer
    keep = target != ignore_index  # (N, ...)
    safe = torch.where(keep, target, torch.zeros_like(target))
    logp = logp_all.gather(1, safe.unsqueeze(1)).squeeze(1)  # (N, ...) log p of the target class

    if form == "closed":
        if gamma == 0.0:
            per = -logp
        elif gamma == 1.0:
            per = -torch.expm1(logp)  # the γ→1 limit 1 - p; never divides by 1 - γ = 0
        else:
            per = -torch.logaddexp(torch.full_like(logp, math.log(gamma)), logp + math.log1p(-gamma))
            per = per / (1.0 - gamma)
    else:
        if gamma == 0.0:
            per = -logp  # clamp(1, b, 1) = 1 exactly: plain cross entropy, no extra work
        else:
            # Stop-gradient at the point of use: the weight is a constant, as under torch.no_grad() in the
            # official criterion. Differentiating it would optimise -w(p) log p, a different objective.
            w = tailr_weight(logp.detach(), gamma=gamma, min_weight=min_weight)
            per = -(w * logp)

    if label_smoothing > 0.0:
        # Same mixture as F.cross_entropy: (1-ε)·ℓ + ε·mean_c(-log p_c). The smoothing term is NOT
        # re-weighted, as in thu-coai/TaiLr (a code comment there says re-weighting it has "no big impact").
        smooth = -logp_all.sum(dim=1) / n_classes  # (N, ...)
        per = (1.0 - label_smoothing) * per + label_smoothing * smooth

    per = torch.where(keep, per, torch.zeros_like(per))
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    # mean over non-ignored targets, like F.cross_entropy (NaN when every target is ignored)
    return per.sum() / keep.sum().to(per.dtype)


def tailr_loss(
    logits: Tensor,
    target: Tensor,
    *,
    gamma: float,
    min_weight: float = 0.0,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    form: Form = "weighted",
) -> Tensor:
    """TaiLr loss: cross entropy whose gradient is shrunk on low-probability targets.

    https://kexue.fm/archives/9526, Eq. (2) and the paper's rule; Ji et al., ICLR 2023 (arXiv 2302.13344).
    With ``p`` the softmax probability of the target class:

    * ``form="weighted"`` (default, the released fairseq criterion):
      ``-[clamp(p / (γ + (1-γ) p), b, 1)].detach() * log p``;
    * ``form="closed"``: ``-log(γ + (1-γ) p) / (1-γ)`` computed as
      ``-logaddexp(log γ, log(1-γ) + log p) / (1-γ)`` (stable when p underflows); γ=1 returns the
      limit ``1 - p``.

    γ=0 is exactly :func:`torch.nn.functional.cross_entropy` in both forms. With ``min_weight=0`` both forms
    have the same gradient. With ``label_smoothing=ε`` the loss is ``(1-ε)·tailr + ε·mean_c(-log p_c)`` — the
    smoothing term is not re-weighted, as in the official code.

    Shapes follow ``F.cross_entropy`` with class-index targets: the class dimension is dim 1. For token-level
    language-model logits ``(B, L, V)`` pass ``logits.transpose(1, 2)`` (``(B, V, L)``) with
    ``target (B, L)``, or flatten to ``(B*L, V)`` and ``(B*L,)``. The weight is per position (per token),
    not per sequence.

    Paper hyperparameters (official scripts): synthetic / long text γ=1e-7, b=0.2; IWSLT14 translation γ=0.1,
    b=0.3 with label smoothing 0.1; Gigaword summarisation γ=0.8, b=0.2 with label smoothing 0.1. Su's rule of
    thumb: γ near 0 when training from scratch, larger when fine-tuning.

    Args:
        logits: unnormalised scores ``(N, C)`` or ``(N, C, d1, ...)``, floating point.
        target: class indices ``(N,)`` or ``(N, d1, ...)``, integer, in ``[0, C)`` or ``ignore_index``.
        gamma: γ in [0, 1] (no default: the paper uses 1e-7 to 0.8 depending on the task).
        min_weight: the floor ``b`` in [0, 1] on the weight (``form="weighted"`` only).
        label_smoothing: ε in [0, 1], as in ``F.cross_entropy``.
        ignore_index: target value that contributes neither loss nor gradient (padding).
        reduction: ``"mean"`` (over non-ignored targets), ``"sum"`` or ``"none"``.
        form: ``"weighted"`` or ``"closed"``.

    Returns:
        A scalar for ``"mean"``/``"sum"``; for ``"none"`` a tensor shaped like ``target`` (0 at ignored
        positions). Same dtype as ``logits``.

    Raises:
        TypeError: integer logits, non-integer target.
        ValueError: γ, b or ε outside [0, 1]; ``min_weight > 0`` with ``form="closed"``; target shape not
            ``(N, d1, ...)``; a target outside ``[0, C)`` other than ``ignore_index``; unknown reduction/form.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> logits, target = torch.randn(8, 5), torch.randint(0, 5, (8,))
        >>> torch.allclose(tailr_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target))
        True
        >>> bool(tailr_loss(logits, target, gamma=0.5) <= F.cross_entropy(logits, target))
        True
    """
    _check_options(gamma, min_weight, label_smoothing, reduction, form)
    _check_inputs(logits, target, ignore_index)
    return _tailr(
        logits,
        target,
        float(gamma),
        float(min_weight),
        float(label_smoothing),
        int(ignore_index),
        reduction,
        form,
    )


class TaiLrLoss(nn.Module):
    """Module form of :func:`tailr_loss` (https://kexue.fm/archives/9526; arXiv 2302.13344).

    Args:
        gamma: γ in [0, 1].
        min_weight: the weight floor ``b`` in [0, 1].
        label_smoothing: ε in [0, 1] (the smoothing term is not re-weighted).
        ignore_index: target value to skip.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        form: ``"weighted"`` (paper) or ``"closed"`` (Su's Eq. 2).

    Shapes:
        logits ``(N, C)`` or ``(N, C, d1, ...)``, target ``(N,)`` or ``(N, d1, ...)``; output as
        :func:`tailr_loss`.

    Example:
        >>> import torch
        >>> crit = TaiLrLoss(gamma=0.1, min_weight=0.3, label_smoothing=0.1)  # the paper's IWSLT14 setting
        >>> logits = torch.randn(2, 7, 4, requires_grad=True)  # (B, V, L)
        >>> crit(logits, torch.tensor([[1, 2, 3, -100], [0, 6, -100, -100]])).backward()
    """

    def __init__(
        self,
        *,
        gamma: float,
        min_weight: float = 0.0,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        form: Form = "weighted",
    ) -> None:
        super().__init__()
        _check_options(gamma, min_weight, label_smoothing, reduction, form)
        self.gamma = float(gamma)
        self.min_weight = float(min_weight)
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = int(ignore_index)
        self.reduction: Reduction = reduction
        self.form: Form = form

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check_inputs(logits, target, self.ignore_index)
        return _tailr(
            logits,
            target,
            self.gamma,
            self.min_weight,
            self.label_smoothing,
            self.ignore_index,
            self.reduction,
            self.form,
        )

    def extra_repr(self) -> str:
        return (
            f"gamma={self.gamma}, min_weight={self.min_weight}, label_smoothing={self.label_smoothing}, "
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, form={self.form!r}"
        )
