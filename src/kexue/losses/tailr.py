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

from kexue._validate import (
    check_choice,
    check_float_tensor,
    check_int,
    check_real,
    check_reduction,
    is_compiling,
)

__all__ = ["TaiLrLoss", "tailr_loss", "tailr_weight"]

Reduction = Literal["mean", "sum", "none"]
Form = Literal["weighted", "closed"]


def _check_options(
    gamma: float, min_weight: float, label_smoothing: float, ignore_index: int, reduction: str, form: str
) -> None:
    check_real("gamma", gamma, low=0, high=1)
    check_real("min_weight", min_weight, low=0, high=1)
    check_real("label_smoothing", label_smoothing, low=0, high=1)
    check_int("ignore_index", ignore_index)
    check_reduction(reduction)
    check_choice("form", form, ("weighted", "closed"))
    if form == "closed" and min_weight != 0.0:
        raise ValueError(
            f"form='closed' has no weight floor (the floored rule has no antiderivative); got min_weight="
            f"{min_weight!r}. Use form='weighted' for min_weight > 0."
        )


def _check_inputs(logits: Tensor, target: Tensor, ignore_index: int, *, name: str = "target") -> None:
    """Types and shapes always; values (one device sync) only outside ``torch.compile``. ``name`` is what the
    caller calls the target (``labels`` in the ``Trainer`` hook)."""
    check_float_tensor("logits", logits, min_ndim=2, finite=False)
    if not isinstance(target, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"{name} must hold integer class indices (int64), got dtype {target.dtype}; "
            "probability targets are not supported"
        )
    if logits.shape[1] < 1:
        raise ValueError(f"logits need at least one class (dim 1), got shape {tuple(logits.shape)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"{name} must have shape {expected} for logits of shape {tuple(logits.shape)} "
            f"(class dimension is dim 1, as in F.cross_entropy), got {tuple(target.shape)}"
        )
    if is_compiling():  # a data-dependent branch would break the graph: values are checked eagerly only
        return
    n_classes = logits.shape[1]
    valid = target != ignore_index
    bad_target = valid & ((target < 0) | (target >= n_classes))
    x = logits.detach()
    bad_logits = torch.isnan(x) | (x == math.inf)  # -inf is allowed: a masked class
    flags = torch.stack([bad_target.any(), bad_logits.any()])
    if not bool(flags.any()):  # the one sync of the common path
        return
    if bool(flags[0]):
        first = int(target[bad_target].flatten()[0])
        raise ValueError(
            f"{name} holds class index {first}, expected values in [0, {n_classes - 1}] or ignore_index={ignore_index}"
        )
    raise ValueError("logits contains NaN or +inf values (-inf, a masked class, is allowed)")


def _log_weight(logp: Tensor, gamma: float) -> Tensor:
    """``log p - log(γ + (1-γ) p)`` from ``log p``, without forming ``p`` (no underflow for tiny γ)."""
    if gamma == 0.0:
        return torch.zeros_like(logp)
    if gamma == 1.0:
        return logp
    # log(γ + (1-γ)p) = logaddexp(log γ, log(1-γ) + log p): exact even when p underflows to 0 in exp(log p).
    denom = torch.logaddexp(torch.full_like(logp, math.log(gamma)), logp + math.log1p(-gamma))
    return logp - denom


def _weight(logp: Tensor, gamma: float, min_weight: float) -> Tensor:
    return _log_weight(logp, gamma).exp().clamp(min=min_weight, max=1.0)


def tailr_weight(logp: Tensor, *, gamma: float, min_weight: float = 0.0) -> Tensor:
    """The TaiLr weight ``clamp(p / (γ + (1-γ) p), b, 1)`` from target log-probabilities (not detached).

    https://kexue.fm/archives/9526 (the paper's "original result"): the factor by which TaiLr shrinks the
    cross-entropy gradient of one example (or token).

    Args:
        logp: log-probabilities of the target classes, any shape, values in ``[-inf, 0]``.
        gamma: γ in [0, 1].
        min_weight: the floor ``b`` in [0, 1].

    Returns:
        Weights in ``[min_weight, 1]`` with ``logp``'s shape and dtype.

    Raises:
        TypeError: ``logp`` is not a floating-point tensor; ``gamma``/``min_weight`` not real numbers.
        ValueError: ``gamma`` or ``min_weight`` outside [0, 1]; ``logp`` holds NaN or values above 0 (not a
            log-probability; checked eagerly only).

    Example:
        >>> import torch
        >>> tailr_weight(torch.log(torch.tensor([1.0, 0.5, 1e-9])), gamma=0.5).tolist()  # doctest: +ELLIPSIS
        [1.0, 0.666..., 1.999...e-09]
    """
    g = check_real("gamma", gamma, low=0, high=1)
    b = check_real("min_weight", min_weight, low=0, high=1)
    check_float_tensor("logp", logp, allow_empty=True, finite=False)
    if not is_compiling() and logp.numel() and not bool((logp.detach() <= 0).all()):  # NaN fails <= 0 too
        raise ValueError("logp must hold log-probabilities in [-inf, 0], got NaN or positive values")
    return _weight(logp, g, b)


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
    out_dtype = logits.dtype
    if logits.dtype in (torch.float16, torch.bfloat16):
        # Half-precision logits are computed in float32: in half precision the closed form's log-add-exp rounds
        # to a negative loss for a confident prediction. Under autocast the result stays float32, as
        # F.cross_entropy's (an fp32 op there); outside it, it is cast back to the input dtype.
        if torch.is_autocast_enabled(logits.device.type):
            out_dtype = torch.float32
        logits = logits.float()
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
            w = _weight(logp.detach(), gamma, min_weight)
            # A target logit of -inf (a masked class) has p = 0, so w = 0 when b = 0 and w * log p = 0 * -inf =
            # NaN; the limit of -w(p) log p as p -> 0 is 0 (with b > 0 the loss is +inf, as cross entropy's).
            per = torch.where(w > 0, -(w * logp), torch.zeros_like(logp))

    if label_smoothing > 0.0:
        # Same mixture as F.cross_entropy: (1-ε)·ℓ + ε·mean_c(-log p_c). The smoothing term is NOT
        # re-weighted, as in thu-coai/TaiLr (a code comment there says re-weighting it has "no big impact").
        smooth = -logp_all.sum(dim=1) / n_classes  # (N, ...)
        per = (1.0 - label_smoothing) * per + label_smoothing * smooth

    per = torch.where(keep, per, torch.zeros_like(per))
    if reduction == "none":
        return per.to(out_dtype)
    if reduction == "sum":
        return per.sum().to(out_dtype)
    # mean over non-ignored targets, like F.cross_entropy (NaN when every target is ignored)
    return (per.sum() / keep.sum().to(per.dtype)).to(out_dtype)


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
        positions). Same dtype as ``logits``; under autocast, like ``F.cross_entropy``, half-precision logits are
        computed in float32 and the result is float32.

    Raises:
        TypeError: non-float (integer, bool, complex) logits, non-integer target, non-real γ/b/ε, non-integer
            ``ignore_index``.
        ValueError: γ, b or ε outside [0, 1] or not finite; ``min_weight > 0`` with ``form="closed"``; empty
            logits or no class; target shape not ``(N, d1, ...)``; a target outside ``[0, C)`` other than
            ``ignore_index``, or NaN/``+inf`` logits (``-inf`` marks a masked class; these value checks cost one
            device sync and are skipped under ``torch.compile``); unknown reduction/form.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> logits, target = torch.randn(8, 5), torch.randint(0, 5, (8,))
        >>> torch.allclose(tailr_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target))
        True
        >>> bool(tailr_loss(logits, target, gamma=0.5) <= F.cross_entropy(logits, target))
        True
    """
    _check_options(gamma, min_weight, label_smoothing, ignore_index, reduction, form)
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
        _check_options(gamma, min_weight, label_smoothing, ignore_index, reduction, form)
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
