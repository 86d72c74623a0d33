"""InfoNCE and FlatNCE contrastive losses, a float-error-free InfoNCE, a gradient-correct cross-rank gather.

Article: Su Jianlin, "FlatNCE：小批次对比学习效果差的原因竟是浮点误差？", https://kexue.fm/archives/8586,
explaining Chen et al. 2021, "Simpler, Faster, Stronger: Breaking The log-K Curse On Contrastive Learners With
FlatNCE", https://arxiv.org/abs/2107.01152 (official code: ``Junya-Chen/FlatCLR``).

For an anchor with scores ``s_1..s_K`` (cosine / temperature) and positive ``t``:

* InfoNCE (cross-entropy): ``log sum_i e^{s_i} - s_t = log(1 + xi)``, ``xi = sum_{i != t} e^{s_i - s_t}``.
* FlatNCE (paper): ``xi / sg(xi)``; its gradient is ``grad log xi``, the gradient of Su's closed form
  ``logsumexp_{i != t}(s_i) - s_t`` -- cross-entropy with the positive taken out of the log-sum-exp. That is
  the value :func:`flat_nce` returns (it can be negative).
* Stable InfoNCE (``stable=True``): ``log(1 + xi) = softplus(log xi)``, computed from the same stable
  ``log xi``. It has InfoNCE's value and gradient without the float32 rounding of ``1 + xi`` that the usual
  max-shifted log-sum-exp suffers once ``xi`` falls below ~1e-7; it is the control that separates "float
  error" from "FlatNCE's per-anchor re-weighting" (``grad log(1 + xi) = xi / (1 + xi) * grad log xi``).

Embedding-level functions build the score matrix SimCLR-style: rows of ``query`` are anchors, the matching
row of ``key`` is the positive, the other rows of ``key`` (plus optional explicit ``negatives``) are the
negatives. With ``symmetric=True`` both views are anchors and every other embedding of the 2B views is a
negative (NT-Xent, 2B-2 negatives per anchor, as in SimCLR and FlatCLR). With ``gather=True`` candidates
come from every ``torch.distributed`` rank through :func:`gather_with_grad`.
"""

from __future__ import annotations

import math
from typing import Any, Literal, overload

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FlatNCELoss",
    "InfoNCELoss",
    "flat_nce",
    "flat_nce_from_logits",
    "gather_with_grad",
    "info_nce",
    "info_nce_from_logits",
]

Reduction = Literal["mean", "sum", "none"]
_Kind = Literal["plain", "stable", "flat"]


# --------------------------------------------------------------------------------------------- validation


def _check_float(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def _check_no_nan(name: str, x: Tensor) -> None:
    if bool(torch.isnan(x).any()):
        raise ValueError(f"{name} contains NaN (shape {tuple(x.shape)})")


def _check_output(out: Tensor, inputs: dict[str, Tensor | None]) -> Tensor:
    """Raise if the loss is NaN, naming the input that carries it.

    A NaN anywhere in the inputs reaches the output (its row or column of scores is NaN, and every anchor's
    log-sum-exp or positive score reads it), so one check on the small output replaces a scan of every input
    on the common path; the inputs are scanned only to word the error.
    """
    bad = math.isnan(out.item()) if out.dim() == 0 else bool(torch.isnan(out.detach()).any())
    if bad:
        for name, x in inputs.items():
            if x is not None:
                _check_no_nan(name, x)
        raise ValueError("the loss is NaN although no input contains NaN (check for +inf inputs)")
    return out


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_temperature(temperature: float) -> None:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
        raise TypeError(f"temperature must be a float, got {type(temperature).__name__}")
    if not (temperature > 0 and temperature < float("inf")):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")


def _check_embeddings(query: Tensor, key: Tensor, negatives: Tensor | None) -> None:
    _check_float("query", query)
    _check_float("key", key)
    if query.dim() != 2:
        raise ValueError(f"query must have shape (B, D), got {tuple(query.shape)}")
    if key.shape != query.shape:
        raise ValueError(
            f"key must have the shape of query {tuple(query.shape)} (row i is the positive of query row i), "
            f"got {tuple(key.shape)}"
        )
    if query.shape[0] < 1 or query.shape[1] < 1:
        raise ValueError(f"query must have at least one row and one column, got {tuple(query.shape)}")
    if negatives is not None:
        _check_float("negatives", negatives)
        if negatives.dim() != 2 or negatives.shape[1] != query.shape[1]:
            raise ValueError(
                f"negatives must have shape (M, {query.shape[1]}) to match query's feature dimension, "
                f"got {tuple(negatives.shape)}"
            )


def _check_logits(logits: Tensor, target: Tensor) -> None:
    _check_float("logits", logits)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    if not isinstance(target, Tensor) or target.dtype not in (torch.int64, torch.int32):
        raise TypeError(
            f"target must be an int64 tensor of positive indices, got "
            f"{target.dtype if isinstance(target, Tensor) else type(target).__name__}"
        )
    if target.shape != (logits.shape[0],):
        raise ValueError(f"target must have shape ({logits.shape[0]},) to match logits, got {tuple(target.shape)}")
    if logits.shape[1] < 2:
        raise ValueError(f"logits need at least 2 columns (the positive and one negative), got {tuple(logits.shape)}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise ValueError(f"target values must lie in [0, {logits.shape[1] - 1}]")


# --------------------------------------------------------------------------------------------- core


def _reduce(per_anchor: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_anchor.mean()
    if reduction == "sum":
        return per_anchor.sum()
    return per_anchor


def _log_xi(logits: Tensor, target: Tensor, exclude: Tensor | None = None, *, owned: bool = False) -> Tensor:
    """``log xi = logsumexp_{i != t}(s_i) - s_t`` per row, computed without forming ``xi`` (no underflow).

    ``exclude``: an optional second column per row to drop too (the anchor itself in SimCLR's 2B-view matrix).
    ``owned``: ``logits`` is a temporary of ours that no autograd node saved (a matmul output), so the
    positive and self columns can be masked in place instead of copying the (N, C) matrix.
    """
    rows = torch.arange(logits.shape[0], device=logits.device)
    s_t = logits[rows, target]  # (N,); indexing saves only the indices, so in-place masking below is safe
    cols = target if exclude is None else torch.cat([target, exclude])
    r = rows if exclude is None else torch.cat([rows, rows])
    ninf = torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device)
    # the positive (and self) leave the log-sum-exp; their gradient flows through s_t only
    neg = logits.index_put_((r, cols), ninf) if owned else logits.index_put((r, cols), ninf)
    return torch.logsumexp(neg, dim=1) - s_t


def _per_anchor(
    logits: Tensor, target: Tensor, kind: _Kind, exclude: Tensor | None = None, *, owned: bool = False
) -> Tensor:
    """Per-row loss: ``log(1 + xi)`` by cross-entropy (plain) or softplus (stable), or ``log xi`` (flat).

    Half-precision logits (autocast) are reduced in float32: log-sum-exp in bfloat16 loses the loss entirely.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits, owned = logits.float(), True
    if kind == "plain":
        if exclude is not None:  # SimCLR: the anchor is not its own candidate
            rows = torch.arange(logits.shape[0], device=logits.device)
            ninf = torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device)
            idx = (rows, exclude)
            logits = logits.index_put_(idx, ninf) if owned else logits.index_put(idx, ninf)
        # the standard form: max-shifted log-sum-exp, float error in 1 + xi when xi < ~eps
        return F.cross_entropy(logits, target, reduction="none")
    log_xi = _log_xi(logits, target, exclude, owned=owned)  # (N,)
    if kind == "stable":
        # log(1 + xi) = softplus(log xi): softplus uses log1p, exact in value and gradient for tiny xi
        return F.softplus(log_xi)
    # FlatNCE: value log xi, gradient grad(xi / sg(xi)) = grad log xi. InfoNCE value (for logging) on request.
    return log_xi


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient for this rank's slice.

    ``torch.distributed.nn.all_gather`` uses reduce-scatter in backward, which the gloo backend lacks; an
    all-reduce of the full gradient followed by slicing is correct on every backend.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def _dist_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every ``torch.distributed`` rank along dim 0, keeping gradients correct.

    Backward all-reduces (sums) the gradient of the gathered tensor and returns this rank's slice, so each
    rank receives the gradient that every rank's loss sends to its rows. With DDP's gradient averaging on
    top, training with per-rank ``mean`` losses equals single-process training on the concatenated batch.
    Every rank must pass the same shape. Without an initialised process group (or with one rank) it returns
    ``x``.

    Args:
        x: ``(B, ...)`` on this rank.

    Returns:
        ``(world_size * B, ...)``: rank 0's rows first.

    Example:
        >>> gather_with_grad(torch.ones(2, 3)).shape  # no process group: identity
        torch.Size([2, 3])
    """
    _, world = _dist_world()
    if world == 1:
        return x
    out: Tensor = _GatherWithGrad.apply(x)
    return out


def _embedding_logits(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float,
    negatives: Tensor | None,
    symmetric: bool,
    normalize: bool,
    gather: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Score matrix ``(N, C)``, positive column per row and (SimCLR) the column of the anchor itself."""
    _check_embeddings(query, key, negatives)
    _check_temperature(temperature)
    # mixed dtypes (a bfloat16 head output against float32 keys under autocast) promote to the widest
    dtype = torch.promote_types(query.dtype, key.dtype)
    if negatives is not None:
        dtype = torch.promote_types(dtype, negatives.dtype)
        negatives = negatives.to(dtype)
        if normalize:
            negatives = F.normalize(negatives, dim=1, eps=eps)
    query, key = query.to(dtype), key.to(dtype)
    rank, world = _dist_world() if gather else (0, 1)
    b = query.shape[0]
    dev = query.device
    offset = rank * b
    # scale the (N, D) anchors, not the (N, C) scores: one pass over B*D instead of B*C
    if symmetric:
        z = torch.cat([query, key])  # (2B, D): query rows then key rows
        if normalize:  # cosine scores, as in SimCLR/FlatCLR; one pass over both views
            z = F.normalize(z, dim=1, eps=eps)
        anchors = z / temperature
        if world > 1:
            parts = [gather_with_grad(z[:b]), gather_with_grad(z[b:])]
            if negatives is not None:
                parts.append(gather_with_grad(negatives))
            cands = torch.cat(parts)  # (2WB [+ WM], D)
            n_all = world * b
            idx = torch.arange(b, device=dev) + offset
            self_col = torch.cat([idx, idx + n_all])
            target = torch.cat([idx + n_all, idx])
        else:
            cands = z if negatives is None else torch.cat([z, negatives])
            self_col = torch.arange(2 * b, device=dev)
            target = self_col.roll(b)  # row i pairs with row i + B and back
        n_neg = cands.shape[0] - 2
    else:
        if normalize:
            query, key = F.normalize(query, dim=1, eps=eps), F.normalize(key, dim=1, eps=eps)
        all_key = gather_with_grad(key) if world > 1 else key  # (W*B, D)
        if negatives is not None and world > 1:
            negatives = gather_with_grad(negatives)
        anchors = query / temperature
        cands = all_key if negatives is None else torch.cat([all_key, negatives])
        target = torch.arange(b, device=dev) + offset
        self_col = None
        n_neg = cands.shape[0] - 1
    if n_neg < 1:
        raise ValueError(
            f"no negatives: a batch of {b} row(s) needs explicit `negatives` (or symmetric=True with B >= 2, "
            "or gather=True across ranks)"
        )
    logits = anchors @ cands.T  # (N, C)
    return logits, target, self_col


# --------------------------------------------------------------------------------------------- functional


def info_nce_from_logits(
    logits: Tensor, target: Tensor, *, reduction: Reduction = "mean", stable: bool = False
) -> Tensor:
    """InfoNCE (cross-entropy) on precomputed scores: ``logsumexp_i(s_i) - s_t`` per row.

    See https://kexue.fm/archives/8586, ``log(1 + xi)``. Entries equal to ``-inf`` are masked candidates.

    Args:
        logits: ``(N, C)`` scores ``s`` (already divided by the temperature).
        target: ``(N,)`` int64 column of each row's positive.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-row ``(N,)``).
        stable: compute ``softplus(logsumexp_{i != t}(s_i) - s_t)``, InfoNCE without the float error of
            ``1 + xi`` (exact for ``xi`` far below machine epsilon).

    Returns:
        Scalar, or ``(N,)`` for ``reduction="none"``; dtype of ``logits`` (float32 for half inputs).

    Raises:
        TypeError: non-float ``logits`` or non-integer ``target``.
        ValueError: bad shapes, fewer than 2 columns, ``target`` out of range, NaN, bad ``reduction``.

    Example:
        >>> logits = torch.tensor([[30.0, 10.0, 12.0]])
        >>> info_nce_from_logits(logits, torch.tensor([0]))  # 1 + xi rounds to 1 in float32
        tensor(0.)
        >>> info_nce_from_logits(logits, torch.tensor([0]), stable=True)
        tensor(1.7291e-08)
    """
    _check_logits(logits, target)
    _check_reduction(reduction)
    loss = _per_anchor(logits, target.long(), "stable" if stable else "plain")
    return _check_output(_reduce(loss, reduction), {"logits": logits})


@overload
def flat_nce_from_logits(
    logits: Tensor, target: Tensor, *, reduction: Reduction = ..., return_info_nce: Literal[False] = ...
) -> Tensor: ...
@overload
def flat_nce_from_logits(
    logits: Tensor, target: Tensor, *, reduction: Reduction = ..., return_info_nce: Literal[True]
) -> tuple[Tensor, Tensor]: ...
def flat_nce_from_logits(
    logits: Tensor, target: Tensor, *, reduction: Reduction = "mean", return_info_nce: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """FlatNCE on precomputed scores: value ``logsumexp_{i != t}(s_i) - s_t``, gradient of ``xi / sg(xi)``.

    Su's closed form (https://kexue.fm/archives/8586): ``grad(xi / sg(xi)) = grad(xi) / xi = grad log xi``,
    and ``log xi`` is cross-entropy with the positive removed from the log-sum-exp. It is computed with a
    stable log-sum-exp over the negatives minus the positive, never by forming ``xi`` (which underflows). The
    value can be negative. Per row its gradient is InfoNCE's times ``(1 + xi) / xi``: same direction, anchors
    re-weighted.

    Args:
        logits: ``(N, C)`` scores (``-inf`` marks masked candidates); target: ``(N,)`` positive columns.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        return_info_nce: also return the detached (stable) InfoNCE value with the same reduction, for logging.

    Returns:
        The FlatNCE loss (scalar or ``(N,)``), and the InfoNCE value when ``return_info_nce``.

    Raises:
        TypeError / ValueError: as :func:`info_nce_from_logits`.

    Example:
        >>> logits = torch.tensor([[30.0, 10.0, 12.0]])
        >>> flat_nce_from_logits(logits, torch.tensor([0]))  # log xi: negative is normal
        tensor(-17.8731)
    """
    _check_logits(logits, target)
    _check_reduction(reduction)
    loss = _per_anchor(logits, target.long(), "flat")
    out = _check_output(_reduce(loss, reduction), {"logits": logits})
    if return_info_nce:
        return out, _reduce(F.softplus(loss.detach()), reduction)
    return out


def info_nce(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float = 0.1,
    negatives: Tensor | None = None,
    symmetric: bool = False,
    reduction: Reduction = "mean",
    stable: bool = False,
    normalize: bool = True,
    gather: bool = False,
    eps: float = 1e-12,
) -> Tensor:
    """InfoNCE / NT-Xent on embeddings: cross-entropy of each anchor's positive among its candidates.

    https://kexue.fm/archives/8586 (``log(1 + xi)``); SimCLR's NT-Xent with ``symmetric=True``. Scores are
    ``cos(q, c) / temperature`` (``normalize=True``, the article's setting; FlatCLR's default tau = 0.1).

    Args:
        query: ``(B, D)`` anchors.
        key: ``(B, D)``; ``key[i]`` is the positive of ``query[i]``, the other rows are negatives.
        temperature: ``tau > 0``.
        negatives: optional ``(M, D)`` extra negatives shared by every anchor (a memory bank).
        symmetric: SimCLR 2B-view form: both ``query`` and ``key`` rows are anchors; each has the other view
            as positive and all 2B - 2 remaining embeddings (plus ``negatives``) as negatives; the anchor
            itself is excluded.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` -> ``(B,)``, or ``(2B,)`` (query rows then key rows)
            when ``symmetric``.
        stable: the float-error-free form ``softplus(logsumexp_{i != t}(s_i) - s_t)``.
        normalize: L2-normalise the embeddings (cosine scores); ``False`` uses raw dot products.
        gather: take candidates from every ``torch.distributed`` rank (:func:`gather_with_grad`); each rank's
            positives sit at ``rank * B + i``. Every rank must use the same ``B``.
        eps: the normalisation's ``eps``.

    Returns:
        Scalar (mean/sum over anchors) or per-anchor losses, in the (promoted) input dtype; float32 when the
        scores are half precision (autocast), since the log-sum-exp is always reduced in at least float32.

    Raises:
        TypeError: non-tensor or non-float inputs.
        ValueError: mismatched shapes, ``temperature <= 0``, NaN inputs, a batch with no negatives, bad
            ``reduction``.

    Example:
        >>> q, k = torch.randn(8, 16), torch.randn(8, 16)
        >>> info_nce(q, k).shape
        torch.Size([])
        >>> info_nce(q, k, symmetric=True, reduction="none").shape
        torch.Size([16])
    """
    _check_reduction(reduction)
    logits, target, self_col = _embedding_logits(
        query,
        key,
        temperature=temperature,
        negatives=negatives,
        symmetric=symmetric,
        normalize=normalize,
        gather=gather,
        eps=eps,
    )
    loss = _per_anchor(logits, target, "stable" if stable else "plain", self_col, owned=True)
    return _check_output(_reduce(loss, reduction), {"query": query, "key": key, "negatives": negatives})


@overload
def flat_nce(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float = ...,
    negatives: Tensor | None = ...,
    symmetric: bool = ...,
    reduction: Reduction = ...,
    normalize: bool = ...,
    gather: bool = ...,
    eps: float = ...,
    return_info_nce: Literal[False] = ...,
) -> Tensor: ...
@overload
def flat_nce(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float = ...,
    negatives: Tensor | None = ...,
    symmetric: bool = ...,
    reduction: Reduction = ...,
    normalize: bool = ...,
    gather: bool = ...,
    eps: float = ...,
    return_info_nce: Literal[True],
) -> tuple[Tensor, Tensor]: ...
def flat_nce(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float = 0.1,
    negatives: Tensor | None = None,
    symmetric: bool = False,
    reduction: Reduction = "mean",
    normalize: bool = True,
    gather: bool = False,
    eps: float = 1e-12,
    return_info_nce: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """FlatNCE on embeddings: value ``logsumexp_{i != t}(s_i) - s_t``, gradient that of ``xi / sg(xi)``.

    https://kexue.fm/archives/8586 and Chen et al. 2021 (arXiv 2107.01152), FlatCLR's ``flatclr.py``: the
    detached normaliser is ``xi`` itself, so ``grad(xi / sg(xi)) = grad log xi``; this returns ``log xi``
    (Su's equivalent form, same gradient, value may be negative). Per anchor the gradient is parallel to
    InfoNCE's and larger by ``(1 + xi) / xi``, so gradient-clipping thresholds tuned for InfoNCE will clip it.

    Args:
        query, key, temperature, negatives, symmetric, reduction, normalize, gather, eps: as :func:`info_nce`.
        return_info_nce: also return the detached stable InfoNCE value (same reduction) for logging, since the
            FlatNCE value is not comparable with InfoNCE's.

    Returns:
        The loss (scalar or per anchor), plus the InfoNCE value when ``return_info_nce``.

    Raises:
        TypeError / ValueError: as :func:`info_nce`.

    Example:
        >>> q = torch.randn(8, 16)
        >>> loss, infonce = flat_nce(q, q + 0.1 * torch.randn(8, 16), return_info_nce=True)
        >>> bool(loss < infonce)  # log xi < log(1 + xi)
        True
    """
    _check_reduction(reduction)
    logits, target, self_col = _embedding_logits(
        query,
        key,
        temperature=temperature,
        negatives=negatives,
        symmetric=symmetric,
        normalize=normalize,
        gather=gather,
        eps=eps,
    )
    loss = _per_anchor(logits, target, "flat", self_col, owned=True)
    out = _check_output(_reduce(loss, reduction), {"query": query, "key": key, "negatives": negatives})
    if return_info_nce:
        return out, _reduce(F.softplus(loss.detach()), reduction)  # stable InfoNCE value, for logs
    return out


# --------------------------------------------------------------------------------------------- modules


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce` (https://kexue.fm/archives/8586).

    Example:
        >>> loss_fn = InfoNCELoss(temperature=0.1, symmetric=True, stable=True)
        >>> loss_fn(torch.randn(4, 8), torch.randn(4, 8)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        symmetric: bool = False,
        reduction: Reduction = "mean",
        stable: bool = False,
        normalize: bool = True,
        gather: bool = False,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        _check_temperature(temperature)
        _check_reduction(reduction)
        self.temperature, self.symmetric, self.reduction = temperature, symmetric, reduction
        self.stable, self.normalize, self.gather, self.eps = stable, normalize, gather, eps

    def forward(self, query: Tensor, key: Tensor, negatives: Tensor | None = None) -> Tensor:
        return info_nce(
            query,
            key,
            temperature=self.temperature,
            negatives=negatives,
            symmetric=self.symmetric,
            reduction=self.reduction,
            stable=self.stable,
            normalize=self.normalize,
            gather=self.gather,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, symmetric={self.symmetric}, reduction={self.reduction!r}, "
            f"stable={self.stable}, normalize={self.normalize}, gather={self.gather}"
        )


class FlatNCELoss(nn.Module):
    """Module form of :func:`flat_nce`; keeps the last detached InfoNCE value in ``last_info_nce``.

    Example:
        >>> loss_fn = FlatNCELoss(symmetric=True)
        >>> loss = loss_fn(torch.randn(4, 8), torch.randn(4, 8))
        >>> loss_fn.last_info_nce is not None
        True
    """

    last_info_nce: Tensor | None

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        symmetric: bool = False,
        reduction: Reduction = "mean",
        normalize: bool = True,
        gather: bool = False,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        _check_temperature(temperature)
        _check_reduction(reduction)
        self.temperature, self.symmetric, self.reduction = temperature, symmetric, reduction
        self.normalize, self.gather, self.eps = normalize, gather, eps
        self.last_info_nce = None

    def forward(self, query: Tensor, key: Tensor, negatives: Tensor | None = None) -> Tensor:
        loss, info = flat_nce(
            query,
            key,
            temperature=self.temperature,
            negatives=negatives,
            symmetric=self.symmetric,
            reduction=self.reduction,
            normalize=self.normalize,
            gather=self.gather,
            eps=self.eps,
            return_info_nce=True,
        )
        self.last_info_nce = info
        return loss

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, symmetric={self.symmetric}, reduction={self.reduction!r}, "
            f"normalize={self.normalize}, gather={self.gather}"
        )
