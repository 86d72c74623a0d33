"""Cross entropy and TaiLr from hidden states, in token chunks: the ``(N, V)`` logits are never stored.

TaiLr: Su Jianlin, https://kexue.fm/archives/9526; Ji et al., ICLR 2023 (arXiv 2302.13344). The loss is exactly
:func:`kexue.losses.tailr_loss` applied to ``hidden @ weight.T + bias``; only the way it is computed differs.

A language model's output layer turns ``N`` hidden states ``(N, H)`` into ``(N, V)`` logits. With a large
vocabulary those logits dwarf everything else in the loss: 8,192 tokens with V = 65,536 are 2 GiB in float32, and
autograd keeps the log-softmax for backward and allocates its gradient next to it. Here the tokens are processed
``chunk_size`` at a time: for each chunk the logits are formed, the loss *and* the gradient with respect to the
chunk's logits are computed on the spot (in place, in one ``(chunk, V)`` buffer), and that gradient is immediately
multiplied into the gradients of ``hidden``, ``weight`` and ``bias``. Autograd then only stores those three
gradients, which it would allocate anyway. The same three matrix products as the unchunked path, so no time is
lost; only ``O(chunk × V)`` memory is live at once.

Per token, with logits ``z``, softmax ``p``, target ``t``, TaiLr coefficient ``c`` (the detached weight, 1 for
cross entropy) and label smoothing ``ε``::

    loss = (1-ε)·main(log p_t) + ε·(logsumexp(z) - mean(z))
    dloss/dz = ((1-ε)·c + ε)·p - (1-ε)·c·onehot(t) - ε/V

``c`` is ``clamp(p_t / (γ + (1-γ) p_t), b, 1)`` for the paper's weighted rule and the unclamped ratio for Su's
closed form (same gradient when ``b = 0``, see :mod:`kexue.losses.tailr`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from kexue._validate import check_choice, check_float_tensor, check_int, is_compiling

from .tailr import _check_options, _log_weight, _weight

__all__ = ["ChunkedTaiLrLoss", "chunked_cross_entropy", "chunked_tailr_loss"]

Reduction = Literal["mean", "sum", "none"]
Form = Literal["weighted", "closed"]
_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class _Config:
    gamma: float
    min_weight: float
    label_smoothing: float
    form: str
    chunk_size: int
    mm_dtype: torch.dtype  # dtype of the matrix products (the autocast dtype under autocast)
    work_dtype: torch.dtype  # dtype of the softmax and the loss: at least float32


# --------------------------------------------------------------------------------------------- validation


def _check_num_items(num_items_in_batch: Any, reduction: str) -> float | None:
    """The denominator of a ``"mean"`` given by the caller (Hugging Face's ``num_items_in_batch``)."""
    if num_items_in_batch is None:
        return None
    if reduction != "mean":
        raise ValueError(
            f"num_items_in_batch sets the denominator of reduction='mean'; got reduction={reduction!r} "
            f"with num_items_in_batch={num_items_in_batch!r}"
        )
    value: Any = num_items_in_batch
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(
                f"num_items_in_batch must be a number or a one-element real tensor, got a tensor of shape "
                f"{tuple(value.shape)} and dtype {value.dtype}"
            )
        value = value.detach().reshape(()).item()  # one sync: the count is a Python number from here on
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"num_items_in_batch must be a positive number, got {num_items_in_batch!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"num_items_in_batch must be a finite number > 0, got {v}")
    return v


def _check_inputs(hidden: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None, autocast: bool) -> None:
    """Types and shapes (no device sync)."""
    check_float_tensor("hidden", hidden, ndim=(2, 3), finite=False)
    check_float_tensor("weight", weight, ndim=2, finite=False)
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"weight must have shape (V, {hidden.shape[-1]}) to match hidden's last dimension (H = "
            f"{hidden.shape[-1]}), got {tuple(weight.shape)}"
        )
    if bias is not None:
        check_float_tensor("bias", bias, ndim=1, finite=False)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must have shape ({weight.shape[0]},) to match weight, got {tuple(bias.shape)}")
    if not autocast and weight.dtype != hidden.dtype:
        raise TypeError(
            f"hidden and weight must have the same dtype (as for hidden @ weight.T), got {hidden.dtype} and "
            f"{weight.dtype}; cast one, or run under torch.autocast"
        )
    for name, x in (("weight", weight), ("bias", bias), ("target", target)):
        if isinstance(x, Tensor) and x.device != hidden.device:
            raise ValueError(f"{name} is on {x.device} but hidden is on {hidden.device}")
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices (int64), got dtype {target.dtype}")
    if tuple(target.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"target must have shape {tuple(hidden.shape[:-1])} for hidden of shape {tuple(hidden.shape)} "
            f"(one class index per hidden state), got {tuple(target.shape)}"
        )


def _count_and_check_target(target: Tensor, keep: Tensor, n_classes: int, ignore_index: int) -> int:
    """Number of non-ignored targets, and a range check of the others: one device sync for both."""
    bad = keep & ((target < 0) | (target >= n_classes))
    n_keep, n_bad = (int(v) for v in torch.stack([keep.sum(), bad.sum()]).tolist())
    if n_bad and not is_compiling():
        first = int(target[bad][0])
        raise ValueError(
            f"target holds class index {first}, expected values in [0, {n_classes - 1}] or ignore_index={ignore_index}"
        )
    return n_keep


def _check_finite(out: Tensor, inputs: dict[str, Tensor | None]) -> Tensor:
    """Raise if the loss is NaN or infinite, naming the input that carries a NaN/inf (eager only).

    With finite inputs every token's loss is finite unless a logit overflows, so one check of the small output
    replaces a scan of the ``(V, H)`` weight on the common path; the inputs are scanned only to word the error.
    """
    if is_compiling() or bool(torch.isfinite(out.detach()).all()):
        return out
    for name, x in inputs.items():
        if x is not None:
            check_float_tensor(name, x)  # raises, naming the input with NaN/inf
    raise ValueError(f"the loss is not finite although every input is: the logits overflowed in {out.dtype}")


# --------------------------------------------------------------------------------------------- core


def _per_token(logp: Tensor, cfg: _Config) -> tuple[Tensor, Tensor]:
    """TaiLr value per token and its coefficient ``c = -dloss/dlog p`` (the detached weight), from ``log p_t``.

    The formulas of :func:`kexue.losses.tailr._tailr`, one token at a time.
    """
    gamma = cfg.gamma
    if gamma == 0.0:  # cross entropy in both forms: c = 1 exactly
        return -logp, torch.ones_like(logp)
    if cfg.form == "closed":
        if gamma == 1.0:
            per = -torch.expm1(logp)  # the γ→1 limit 1 - p
        else:
            per = -torch.logaddexp(torch.full_like(logp, math.log(gamma)), logp + math.log1p(-gamma)) / (1.0 - gamma)
        return per, _log_weight(logp, gamma).exp()  # d/dlog p of Eq. (2) is -p / (γ + (1-γ)p), never above 1
    # weighted rule: the weight is a constant (stop-gradient at the point of use, as in tailr.py)
    w = _weight(logp, gamma, cfg.min_weight)
    # w = 0 (p underflowed): the limit of -w log p is 0, not 0 * -inf. Tested as w == 0, not w > 0, so that a NaN
    # (from NaN inputs) reaches the output check instead of turning into a zero loss.
    return torch.where(w == 0, torch.zeros_like(logp), -(w * logp)), w


def _chunk(
    h: Tensor, t: Tensor, weight: Tensor, bias: Tensor | None, cfg: _Config, row_scale: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """Per-token losses ``(C,)`` of one chunk and, given ``row_scale`` ``(C,)``, ``row_scale · dloss/dz`` ``(C, V)``.

    The one ``(C, V)`` buffer holds the logits, then ``exp(z - max)``, then the softmax, then the gradient: every
    step is in place, so a chunk costs ``C × V`` elements of memory (two when the products run in half precision).
    """
    if cfg.mm_dtype == cfg.work_dtype and bias is not None:
        z = torch.addmm(bias, h, weight.T)  # (C, V)
    else:
        z = torch.mm(h, weight.T).to(cfg.work_dtype)  # half products: softmax in float32, as F.cross_entropy
        if bias is not None:
            z.add_(bias.to(cfg.work_dtype))
    n_classes = z.shape[1]
    eps = cfg.label_smoothing
    z_t = z.gather(1, t.unsqueeze(1)).squeeze(1)  # (C,) target logits
    z_mean = z.mean(dim=1) if eps > 0 else None  # for the smoothing term mean_c(-log p_c) = lse - mean(z)
    m = z.amax(dim=1, keepdim=True)
    z.sub_(m).exp_()  # (C, V): exp(z - max), in place
    s = z.sum(dim=1, keepdim=True)
    lse = (m + s.log()).squeeze(1)  # (C,)
    logp = z_t - lse  # (C,) log p_t
    per, coef = _per_token(logp, cfg)
    if z_mean is not None:
        per = (1.0 - eps) * per + eps * (lse - z_mean)  # the smoothing term is not re-weighted (as tailr.py)
    if row_scale is None:
        return per, None
    z.div_(s)  # (C, V) softmax p
    on_target = (1.0 - eps) * coef * row_scale  # (C,)
    z.mul_(((1.0 - eps) * coef * row_scale + eps * row_scale).unsqueeze(1))
    z.scatter_add_(1, t.unsqueeze(1), -on_target.unsqueeze(1))
    if eps > 0:
        z.sub_((eps / n_classes * row_scale).unsqueeze(1))
    return per, z


def _run(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    cfg: _Config,
    row_scale: Tensor | None,
    need: tuple[bool, bool, bool],
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Loop over token chunks: per-token losses and, for the inputs flagged in ``need``, their gradients.

    ``row_scale`` ``(n,)`` multiplies each token's loss in the gradient (the upstream gradient, or ``1 / count``).
    """
    n = hidden.shape[0]
    grads = row_scale is not None and any(need)
    # gradients summed over chunks are accumulated in at least float32, also when the products are half
    acc = cfg.work_dtype
    dh = torch.empty_like(hidden) if grads and need[0] else None
    dw = torch.zeros(weight.shape, dtype=acc, device=weight.device) if grads and need[1] else None
    db = torch.zeros(weight.shape[0], dtype=acc, device=weight.device) if grads and need[2] else None
    per_all = torch.empty(n, dtype=cfg.work_dtype, device=hidden.device)
    for c0 in range(0, n, cfg.chunk_size):
        c1 = min(c0 + cfg.chunk_size, n)
        h = hidden[c0:c1]  # (C, H)
        scale = row_scale[c0:c1] if grads and row_scale is not None else None
        per, g = _chunk(h, target[c0:c1], weight, bias, cfg, scale)
        per_all[c0:c1] = per
        if g is None:
            continue
        if db is not None:
            db.add_(g.sum(dim=0))
        g = g.to(cfg.mm_dtype)  # the products run in the dtype of the forward products
        if dh is not None:
            torch.mm(g, weight, out=dh[c0:c1])  # (C, H)
        if dw is not None:
            if dw.dtype == g.dtype:
                dw.addmm_(g.T, h)  # (V, H), no temporary
            else:
                dw.add_(torch.mm(g.T, h))
    return per_all, dh, dw, db


def _cast(x: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if x is None else x.to(dtype)


class _FusedChunked(torch.autograd.Function):
    """Scalar reductions: the gradients are computed in forward, chunk by chunk, and scaled in backward.

    The first backward multiplies the stored gradients by the upstream scalar in place and hands them over (no
    second ``(V, H)`` buffer). A further backward through the same graph (``retain_graph=True``, gradcheck)
    recomputes them from the saved inputs with the same operations, so it gives the same bits.
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        target: Tensor,
        cfg: _Config,
        count: float,
        need: tuple[bool, bool, bool],
    ) -> Tensor:
        grads = _FusedChunked._grads(hidden, weight, bias, target, cfg, count, need)
        per, ctx.grads = grads[0], grads[1:]
        ctx.save_for_backward(hidden, weight, bias, target)
        ctx.cfg, ctx.count, ctx.need = cfg, count, need
        total = per.sum()
        return total / count if count != 1.0 else total  # count 0 (all ignored, mean): NaN, as F.cross_entropy

    @staticmethod
    def _grads(  # per-token losses and the gradients of (sum of losses) / count
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        target: Tensor,
        cfg: _Config,
        count: float,
        need: tuple[bool, bool, bool],
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
        scale = torch.full(
            (hidden.shape[0],), 1.0 / count if count else 0.0, dtype=cfg.work_dtype, device=hidden.device
        )
        per, dh, dw, db = _run(hidden, weight, bias, target, cfg, scale if any(need) else None, need)
        return per, dh, _cast(dw, weight.dtype), None if db is None or bias is None else db.to(bias.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grads, ctx.grads = ctx.grads, None  # drop our reference: autograd can then adopt them as .grad
        if grads is None:  # a second backward through a retained graph
            hidden, weight, bias, target = ctx.saved_tensors
            grads = _FusedChunked._grads(hidden, weight, bias, target, ctx.cfg, ctx.count, ctx.need)[1:]
        out = [None if g is None else g.mul_(grad_out.to(g.dtype)) for g in grads]
        return out[0], out[1], out[2], None, None, None, None


class _RecomputeChunked(torch.autograd.Function):
    """``reduction="none"``: forward keeps only the inputs; backward recomputes each chunk's logits."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        target: Tensor,
        cfg: _Config,
        need: tuple[bool, bool, bool],
    ) -> Tensor:
        per, _, _, _ = _run(hidden, weight, bias, target, cfg, None, need)
        ctx.save_for_backward(hidden, weight, bias, target)
        ctx.cfg, ctx.need = cfg, need
        return per

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        hidden, weight, bias, target = ctx.saved_tensors
        scale = grad_out.to(ctx.cfg.work_dtype)
        _, dh, dw, db = _run(hidden, weight, bias, target, ctx.cfg, scale, ctx.need)
        db_out = None if db is None or bias is None else db.to(bias.dtype)
        return dh, _cast(dw, weight.dtype), db_out, None, None, None


def _chunked(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    bias: Tensor | None,
    *,
    gamma: float,
    min_weight: float,
    label_smoothing: float,
    ignore_index: int,
    reduction: str,
    form: str,
    chunk_size: int,
    num_items_in_batch: Any,
) -> Tensor:
    """The shared, validating core of :func:`chunked_tailr_loss` and :class:`ChunkedTaiLrLoss`."""
    _check_options(gamma, min_weight, label_smoothing, ignore_index, reduction, form)
    check_int("chunk_size", chunk_size, low=1)
    count_override = _check_num_items(num_items_in_batch, reduction)
    device_type = hidden.device.type if isinstance(hidden, Tensor) else "cpu"
    autocast = torch.is_autocast_enabled(device_type)
    _check_inputs(hidden, weight, target, bias, autocast)

    # dtypes as hidden @ weight.T under autocast: products in the autocast dtype (float64 is never cast),
    # softmax and loss in at least float32 (F.cross_entropy is a float32 op under autocast)
    mm_dtype = torch.get_autocast_dtype(device_type) if autocast and hidden.dtype != torch.float64 else hidden.dtype
    work_dtype = torch.float32 if mm_dtype in _HALF else mm_dtype
    out_dtype = work_dtype if autocast else hidden.dtype
    cfg = _Config(float(gamma), float(min_weight), float(label_smoothing), form, int(chunk_size), mm_dtype, work_dtype)

    h2 = hidden.reshape(-1, hidden.shape[-1])  # (N, H)
    t = target.reshape(-1)  # (N,)
    n = t.shape[0]
    keep = t != ignore_index
    n_keep = _count_and_check_target(t, keep, weight.shape[0], ignore_index)
    if n_keep < n:  # ignored tokens cost nothing: only the kept rows are multiplied
        idx = keep.nonzero().squeeze(1)
        h2, t = h2.index_select(0, idx), t.index_select(0, idx)
    h2, w, b = h2.to(mm_dtype), weight.to(mm_dtype), _cast(bias, mm_dtype)
    t = t.long()
    grad_on = torch.is_grad_enabled()
    need = (
        grad_on and h2.requires_grad,
        grad_on and w.requires_grad,
        grad_on and b is not None and b.requires_grad,
    )
    inputs = {"hidden": hidden, "weight": weight, "bias": bias}
    if reduction == "none":
        per = _RecomputeChunked.apply(h2.contiguous(), w.contiguous(), b, t, cfg, need)
        if n_keep < n:
            per = per.new_zeros(n).index_copy(0, idx, per)  # ignored positions read 0, as tailr_loss
        out = per.reshape(target.shape).to(out_dtype)
        return _check_finite(out, inputs)
    count = 1.0 if reduction == "sum" else (count_override if count_override is not None else float(n_keep))
    loss: Tensor = _FusedChunked.apply(h2.contiguous(), w.contiguous(), b, t, cfg, count, need)
    if count == 0.0:  # mean over no target: NaN by definition, not an error
        return loss.to(out_dtype)
    return _check_finite(loss.to(out_dtype), inputs)


# --------------------------------------------------------------------------------------------- public


def chunked_tailr_loss(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    gamma: float,
    bias: Tensor | None = None,
    chunk_size: int = 1024,
    min_weight: float = 0.0,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    num_items_in_batch: Tensor | float | None = None,
    form: Form = "weighted",
) -> Tensor:
    """TaiLr (γ = 0: cross entropy) of a linear output layer, from hidden states, without storing the logits.

    https://kexue.fm/archives/9526 (Eq. 2 and the paper's rule); arXiv 2302.13344. Equals
    ``tailr_loss(hidden @ weight.T + bias, target, ...)`` of :func:`kexue.losses.tailr_loss` in value and in the
    gradients of ``hidden``, ``weight`` and ``bias``, including the stop-gradient on the TaiLr weight, while only
    ``chunk_size × V`` logits exist at a time. For the scalar reductions the gradients are computed during
    forward (no extra matrix product: the time of the unchunked path), for ``"none"`` backward recomputes each
    chunk's logits (one extra product).

    Args:
        hidden: ``(N, H)`` or ``(B, L, H)`` hidden states that feed the output layer (for a causal LM the final,
            normalised states, with the labels shifted: position ``t`` predicts ``target[t]``).
        weight: ``(V, H)`` output projection (``lm_head.weight``, possibly tied to the input embedding).
        target: ``(N,)`` or ``(B, L)`` class indices in ``[0, V)`` or ``ignore_index``.
        gamma: γ in [0, 1]; 0 is cross entropy.
        bias: optional ``(V,)`` output bias.
        chunk_size: tokens per chunk (≥ 1): the live logits are ``chunk_size × V`` elements.
        min_weight: the weight floor ``b`` in [0, 1] (``form="weighted"`` only).
        label_smoothing: ε in [0, 1], as ``F.cross_entropy`` (the smoothing term is not re-weighted).
        ignore_index: target value that contributes neither loss nor gradient (its rows are skipped).
        reduction: ``"mean"`` (over non-ignored targets), ``"sum"`` or ``"none"``.
        num_items_in_batch: with ``reduction="mean"``, divide the sum over non-ignored tokens by this count
            instead (a number or a one-element tensor, > 0): Hugging Face's ``Trainer`` passes the number of
            target tokens of the whole accumulated batch, so that gradient accumulation gives the full-batch mean.
        form: ``"weighted"`` (the paper's rule) or ``"closed"`` (Su's Eq. 2), as :func:`tailr_loss`.

    Returns:
        A scalar for ``"mean"``/``"sum"``; for ``"none"`` a tensor shaped like ``target`` (0 at ignored
        positions). Dtype of ``hidden``; under autocast the products run in the autocast dtype and the loss,
        like ``F.cross_entropy``'s, is computed and returned in float32. ``"mean"`` with every target ignored is
        NaN (as ``F.cross_entropy``).

    Raises:
        TypeError: non-float ``hidden``/``weight``/``bias``, different dtypes of ``hidden`` and ``weight``
            outside autocast, non-integer ``target`` or ``chunk_size``, a ``num_items_in_batch`` that is not a
            number; bad hyperparameter types.
        ValueError: shapes that do not match (``weight`` not ``(V, H)``, ``bias`` not ``(V,)``, ``target`` not
            ``hidden.shape[:-1]``), tensors on different devices, a target outside ``[0, V)`` other than
            ``ignore_index``, ``chunk_size < 1``, ``num_items_in_batch`` not > 0 or given with a reduction other
            than ``"mean"``, hyperparameters out of range, NaN/inf in the inputs or overflowing logits (checked
            on the output).
    Note:
        Backward is not differentiable again (``once_differentiable``): no gradient penalty through this loss. A
        second backward through a retained graph recomputes the gradients (the first one hands over the
        gradients computed in forward).

    Example:
        >>> import torch
        >>> from kexue.losses import tailr_loss
        >>> hidden, weight = torch.randn(10, 8), torch.randn(50, 8)
        >>> target = torch.randint(0, 50, (10,))
        >>> loss = chunked_tailr_loss(hidden, weight, target, gamma=0.1, chunk_size=3)
        >>> torch.allclose(loss, tailr_loss(hidden @ weight.T, target, gamma=0.1))
        True
    """
    return _chunked(
        hidden,
        weight,
        target,
        bias,
        gamma=gamma,
        min_weight=min_weight,
        label_smoothing=label_smoothing,
        ignore_index=ignore_index,
        reduction=reduction,
        form=form,
        chunk_size=chunk_size,
        num_items_in_batch=num_items_in_batch,
    )


def chunked_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    chunk_size: int = 1024,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    num_items_in_batch: Tensor | float | None = None,
) -> Tensor:
    """``F.cross_entropy(hidden @ weight.T + bias, target)`` without storing the logits: :func:`chunked_tailr_loss`
    with ``gamma=0``.

    Args:
        hidden: ``(N, H)`` or ``(B, L, H)`` last hidden states, as in :func:`chunked_tailr_loss`.
        weight: ``(V, H)`` output projection.
        target: ``(N,)`` or ``(B, L)`` class ids; ``ignore_index`` entries are skipped.
        bias: optional ``(V,)`` output bias.
        chunk_size: tokens per chunk.
        label_smoothing: in ``[0, 1]``, as ``F.cross_entropy``.
        ignore_index: target value that contributes nothing.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        num_items_in_batch: divide the summed loss by this count instead of the number of kept tokens.

    Returns:
        As :func:`chunked_tailr_loss`.

    Raises:
        TypeError, ValueError: as :func:`chunked_tailr_loss`.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> hidden, weight, target = torch.randn(6, 4), torch.randn(9, 4), torch.randint(0, 9, (6,))
        >>> torch.allclose(chunked_cross_entropy(hidden, weight, target), F.cross_entropy(hidden @ weight.T, target))
        True
    """
    return _chunked(
        hidden,
        weight,
        target,
        bias,
        gamma=0.0,
        min_weight=0.0,
        label_smoothing=label_smoothing,
        ignore_index=ignore_index,
        reduction=reduction,
        form="weighted",
        chunk_size=chunk_size,
        num_items_in_batch=num_items_in_batch,
    )


class ChunkedTaiLrLoss(nn.Module):
    """Module form of :func:`chunked_tailr_loss` (https://kexue.fm/archives/9526; arXiv 2302.13344).

    The output layer's parameters are inputs of ``forward`` (they belong to the model, e.g. ``lm_head``).

    Args:
        gamma, min_weight, label_smoothing, ignore_index, reduction, chunk_size, form: as
            :func:`chunked_tailr_loss`.

    Shapes:
        ``forward(hidden (N, H) or (B, L, H), weight (V, H), target (N,) or (B, L), bias=None,
        num_items_in_batch=None)``; output as :func:`chunked_tailr_loss`.

    Example:
        >>> import torch
        >>> head = torch.nn.Linear(8, 50)
        >>> crit = ChunkedTaiLrLoss(gamma=1e-7, min_weight=0.2, chunk_size=4)
        >>> crit(torch.randn(2, 5, 8), head.weight, torch.randint(0, 50, (2, 5)), bias=head.bias).backward()
    """

    def __init__(
        self,
        *,
        gamma: float,
        min_weight: float = 0.0,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        chunk_size: int = 1024,
        form: Form = "weighted",
    ) -> None:
        super().__init__()
        _check_options(gamma, min_weight, label_smoothing, ignore_index, reduction, form)
        self.gamma = float(gamma)
        self.min_weight = float(min_weight)
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = int(ignore_index)
        self.reduction: Reduction = reduction
        self.chunk_size = check_int("chunk_size", chunk_size, low=1)
        self.form: Form = check_choice("form", form, ("weighted", "closed"))  # type: ignore[assignment]

    def forward(
        self,
        hidden: Tensor,
        weight: Tensor,
        target: Tensor,
        bias: Tensor | None = None,
        num_items_in_batch: Tensor | float | None = None,
    ) -> Tensor:
        return _chunked(
            hidden,
            weight,
            target,
            bias,
            gamma=self.gamma,
            min_weight=self.min_weight,
            label_smoothing=self.label_smoothing,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            form=self.form,
            chunk_size=self.chunk_size,
            num_items_in_batch=num_items_in_batch,
        )

    def extra_repr(self) -> str:
        return (
            f"gamma={self.gamma}, min_weight={self.min_weight}, label_smoothing={self.label_smoothing}, "
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, chunk_size={self.chunk_size}, "
            f"form={self.form!r}"
        )
