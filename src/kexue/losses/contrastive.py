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
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, overload

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._validate import check_float_tensor, check_real, check_reduction, is_compiling, reduce

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

_INF = float("inf")


_VALID_OPTIONS: set[tuple[Any, ...]] = set()  # (temperature, reduction, eps) seen valid, with their types


def _check_options(temperature: float, reduction: str, eps: float) -> None:
    # the checks cost a few microseconds, a sizeable part of a small batch's loss: a training loop passes the same
    # values every step, so each valid combination is checked once (NaN never compares equal: always checked)
    try:
        key: tuple[Any, ...] | None = (type(temperature), temperature, reduction, type(eps), eps)
        if key in _VALID_OPTIONS:
            return
    except TypeError:  # unhashable: checked every time
        key = None
    check_real("temperature", temperature, low=0, low_inclusive=False)
    check_reduction(reduction)
    # eps floors the norm of each embedding after it is divided by its largest |entry| (a norm >= 1), see
    # _unit_rows
    check_real("eps", eps, low=0, low_inclusive=False, high=1)
    if key is not None and len(_VALID_OPTIONS) < 1024:
        _VALID_OPTIONS.add(key)


def _check_output(out: Tensor, inputs: dict[str, Tensor | None], *, temperature: float | None = None) -> Tensor:
    """Raise if the loss is NaN or infinite, naming the input that carries a NaN/inf.

    A NaN or inf anywhere in the inputs reaches the output (its row or column of scores is NaN, and every
    anchor's log-sum-exp or positive score reads it), so one check on the small output replaces a scan of every
    input on the common path; the inputs are scanned only to word the error. Skipped under ``torch.compile``
    (a data-dependent branch would break the graph).
    """
    if is_compiling():
        return out
    bad = not math.isfinite(out.item()) if out.dim() == 0 else not bool(torch.isfinite(out.detach()).all())
    if bad:
        for name, x in inputs.items():
            if x is not None:
                check_float_tensor(name, x, allow_empty=True)  # raises, naming the input with NaN/inf
        hint = f" (temperature={temperature} is too small for {out.dtype})" if temperature is not None else ""
        raise ValueError(f"the loss is not finite although every input is: the scores overflowed{hint}")
    return out


def _check_embeddings(query: Tensor, key: Tensor, negatives: Tensor | None) -> None:
    # finite=False: NaN/inf inputs are caught by the cheaper check on the output (_check_output)
    check_float_tensor("query", query, ndim=2, finite=False)
    check_float_tensor("key", key, finite=False, allow_empty=True)
    if key.shape != query.shape:
        raise ValueError(
            f"key must have the shape of query {tuple(query.shape)} (row i is the positive of query row i), "
            f"got {tuple(key.shape)}"
        )
    if negatives is not None:
        check_float_tensor("negatives", negatives, finite=False, allow_empty=True)
        if negatives.dim() != 2 or negatives.shape[1] != query.shape[1]:
            raise ValueError(
                f"negatives must have shape (M, {query.shape[1]}) to match query's feature dimension, "
                f"got {tuple(negatives.shape)}"
            )


def _check_logits(logits: Tensor, target: Tensor) -> None:
    """Types and shapes of ``(logits, target)`` (no device sync)."""
    check_float_tensor("logits", logits, ndim=2, finite=False)
    if not isinstance(target, Tensor) or target.dtype not in (torch.int64, torch.int32):
        raise TypeError(
            f"target must be an int64 tensor of positive indices, got "
            f"{target.dtype if isinstance(target, Tensor) else type(target).__name__}"
        )
    if target.shape != (logits.shape[0],):
        raise ValueError(f"target must have shape ({logits.shape[0]},) to match logits, got {tuple(target.shape)}")
    if logits.shape[1] < 2:
        raise ValueError(f"logits need at least 2 columns (the positive and one negative), got {tuple(logits.shape)}")


def _rows(mask: Tensor) -> str:
    idx = mask.nonzero().flatten().tolist()
    return f"{idx[:10]}{' ...' if len(idx) > 10 else ''} ({len(idx)} of {mask.numel()})"


def _check_target_values(logits: Tensor, target: Tensor) -> None:
    """``target`` within ``[0, C)`` (one device sync, before indexing with it); skipped under ``torch.compile``."""
    if is_compiling():
        return
    c = logits.shape[1]
    bad = (target < 0) | (target >= c)
    if bool(bad.any()):
        raise ValueError(f"target values must lie in [0, {c - 1}], got {int(target[bad][0])}")


def _check_rows(per_row: Tensor, logits: Tensor, target: Tensor, *, flat: bool) -> Tensor:
    """Raise if a row's loss is not finite, saying why; one check of the ``(N,)`` losses on the common path.

    ``-inf`` marks a masked candidate, so every bad case shows on the row's loss: NaN or ``+inf`` scores (the
    log-sum-exp is NaN or inf), a masked positive (``+inf``, or NaN for a fully masked row) and, for FlatNCE, a
    row with every negative masked (``log xi = log 0 = -inf``). The scores are scanned only to word the error.
    Skipped under ``torch.compile``.
    """
    if is_compiling() or bool(torch.isfinite(per_row.detach()).all()):
        return per_row
    x = logits.detach()
    if not bool((x < _INF).all()):  # NaN fails x < inf too
        raise ValueError("logits contains NaN or +inf values (-inf marks a masked candidate)")
    pos_masked = x.gather(1, target.long().unsqueeze(1)).squeeze(1) == -_INF
    if bool(pos_masked.any()):
        raise ValueError(
            f"logits rows {_rows(pos_masked)} have a masked positive (logits[i, target[i]] = -inf): the loss of "
            "such a row is +inf, or NaN when the whole row is masked; drop those rows"
        )
    no_negative = per_row.detach() == -_INF
    if flat and bool(no_negative.any()):
        raise ValueError(
            f"logits rows {_rows(no_negative)} have every negative masked: FlatNCE's value there is "
            "log 0 = -inf; drop those rows (InfoNCE gives them 0 loss and 0 gradient)"
        )
    raise ValueError(f"the loss of logits rows {_rows(~torch.isfinite(per_row.detach()))} overflowed")


# --------------------------------------------------------------------------------------------- core


def _log_xi(logits: Tensor, target: Tensor, *, masked: bool = False) -> Tensor:
    """``log xi = logsumexp_{i != t}(s_i) - s_t`` per row, computed without forming ``xi`` (no underflow).

    The scores given by a caller (:func:`info_nce_from_logits`, :func:`flat_nce_from_logits`); the embedding
    functions use :class:`_NegLogSumExp` on their own score matrix.
    ``masked``: the caller's logits may hold ``-inf`` (masked candidates), so a row may have no negative left;
    such a row gets ``log xi = -inf`` with zero gradient instead of the NaN gradient of an all ``-inf``
    log-sum-exp.
    """
    rows = torch.arange(logits.shape[0], device=logits.device)
    s_t = logits[rows, target]  # (N,)
    ninf = torch.tensor(-_INF, dtype=logits.dtype, device=logits.device)
    # the positive leaves the log-sum-exp; its gradient flows through s_t only. A copy: the caller's tensor stays.
    neg = logits.index_put((rows, target), ninf)
    if not masked:
        return torch.logsumexp(neg, dim=1) - s_t
    has_neg = (neg.detach() > -_INF).any(dim=1)  # (N,)
    # feed finite values to the rows without a negative: their (discarded) log-sum-exp then has a finite
    # gradient. In place on our own copy (index_put above), before the log-sum-exp saves it.
    neg = neg.masked_fill_(~has_neg.unsqueeze(1), 0.0)
    # no negative: -inf - s_t, which is -inf, or NaN for a masked positive (s_t = -inf) so that it is caught
    return torch.where(has_neg, torch.logsumexp(neg, dim=1) - s_t, ninf - s_t)


def _per_anchor(logits: Tensor, target: Tensor, kind: _Kind, *, masked: bool = False) -> Tensor:
    """Per-row loss on a caller's scores: ``log(1 + xi)`` by cross-entropy (plain) or softplus (stable), or
    ``log xi`` (flat).

    Half-precision logits (autocast) are reduced in float32: log-sum-exp in bfloat16 loses the loss entirely.
    ``masked``: the logits may hold ``-inf`` entries (see :func:`_log_xi`).
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if kind == "plain":
        # the standard form: max-shifted log-sum-exp, float error in 1 + xi when xi < ~eps. A row without a
        # negative gives exactly 0 with zero gradient.
        return F.cross_entropy(logits, target, reduction="none")
    # only the stable form needs the masked path: FlatNCE rows without a negative are rejected (log 0 = -inf)
    log_xi = _log_xi(logits, target, masked=masked and kind == "stable")  # (N,)
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


_MAX_DIMS = 6  # dimensions compared across ranks (larger ranks: the first 6 and the element count)
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _describe_code(code: list[int]) -> str:
    ndim, dtype, _, *dims = code
    if ndim < 0:
        return "None"
    name = str(_DTYPES[dtype]).replace("torch.", "") if 0 <= dtype < len(_DTYPES) else f"dtype #{dtype}"
    shape = tuple(dims[: min(ndim, _MAX_DIMS)])
    return f"{shape}{' (first dims)' if ndim > _MAX_DIMS else ''} {name}"


def _check_same_across_ranks(tensors: dict[str, Tensor | None], flags: dict[str, bool] | None = None) -> None:
    """Compare every rank's shapes, dtypes and flags before any tensor is gathered; raise on every rank.

    ``dist.all_gather`` needs equal shapes on every rank: unequal ones kill the process (gloo aborts with
    SIGABRT) or hang instead of raising. One small all-gather of this metadata lets every rank see all of it
    and raise the same ``ValueError``, after which the process group is still usable.
    """
    flags = flags or {}
    world = dist.get_world_size()
    device = next(x.device for x in tensors.values() if x is not None)
    local: list[int] = []
    for x in tensors.values():
        if x is None:
            local += [-1, -1, -1] + [-1] * _MAX_DIMS
        else:
            dims = list(x.shape[:_MAX_DIMS]) + [-1] * (_MAX_DIMS - min(x.dim(), _MAX_DIMS))
            dtype = _DTYPES.index(x.dtype) if x.dtype in _DTYPES else 100 + x.element_size()
            local += [x.dim(), dtype, x.numel(), *dims]
    local += [int(v) for v in flags.values()]
    mine = torch.tensor(local, dtype=torch.int64, device=device)
    every = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    table = torch.stack(every).tolist()  # (world, len(local))
    if all(row == table[0] for row in table):
        return
    width = 3 + _MAX_DIMS
    parts = []
    for j, name in enumerate(tensors):
        codes = [row[j * width : (j + 1) * width] for row in table]
        if any(c != codes[0] for c in codes):
            parts.append(f"{name}: " + ", ".join(f"{_describe_code(c)} on rank {r}" for r, c in enumerate(codes)))
    for j, name in enumerate(flags):
        values = [bool(row[len(tensors) * width + j]) for row in table]
        if any(v != values[0] for v in values):
            parts.append(f"{name}: " + ", ".join(f"{v} on rank {r}" for r, v in enumerate(values)))
    raise ValueError(
        "gathering across ranks needs the same shapes, dtypes and options on every rank (pad or drop the last "
        "uneven batch); got " + "; ".join(parts)
    )


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every ``torch.distributed`` rank along dim 0, keeping gradients correct.

    Backward all-reduces (sums) the gradient of the gathered tensor and returns this rank's slice, so each
    rank receives the gradient that every rank's loss sends to its rows. With DDP's gradient averaging on
    top, training with per-rank ``mean`` losses equals single-process training on the concatenated batch.
    Every rank must pass the same shape and dtype: the shapes are compared first (one small all-gather), so a
    mismatch raises on every rank instead of killing the processes. Without an initialised process group (or
    with one rank) it returns ``x``.

    Args:
        x: ``(B, ...)`` on this rank.

    Returns:
        ``(world_size * B, ...)``: rank 0's rows first.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: (on every rank) the ranks' shapes or dtypes differ.

    Example:
        >>> gather_with_grad(torch.ones(2, 3)).shape  # no process group: identity
        torch.Size([2, 3])
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    _, world = _dist_world()
    if world == 1:
        return x
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (the one gathered along), got a 0-d tensor")
    _check_same_across_ranks({"x": x})
    return _gather(x)


def _gather(x: Tensor) -> Tensor:
    """:func:`gather_with_grad` without the shape check (the caller has compared every rank's shapes)."""
    out: Tensor = _GatherWithGrad.apply(x)
    return out


_Diag = tuple[int, int, int]  # rows [r0, r1) of the score matrix, the entry of row r0 + i at column offset + i


class _Scores(NamedTuple):
    """The score matrix of :func:`_embedding_logits` and where its positives and self-pairs sit."""

    logits: Tensor  # (N, C), a temporary of ours: no autograd node saved it, so it may be masked in place
    self_diag: tuple[_Diag, ...]  # SimCLR: the anchor's own column
    pos_diag: tuple[_Diag, ...]  # the positive's column


def _mask_diagonals(logits: Tensor, diagonals: Sequence[_Diag]) -> None:
    """Set the listed entries of ``logits`` to ``-inf``, outside autograd.

    Every loss built on the masked matrix (cross-entropy, log-sum-exp) has zero gradient at a ``-inf`` entry, so
    masking outside autograd gives the same gradient as a recorded ``index_put`` without its backward (a clone
    of the (N, C) gradient and a scatter); ``logits`` is a matmul output that no autograd node saved.
    """
    if diagonals:
        with torch.no_grad():
            for r0, r1, offset in diagonals:
                logits[r0:r1].diagonal(offset).fill_(-_INF)


# the smallest positive (subnormal) value of each float dtype; a dict, not a cached function: dynamo traces it
_SUBNORMAL = {
    t: torch.finfo(t).tiny * torch.finfo(t).eps for t in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
}


def _unit_rows(x: Tensor, eps: float) -> Tensor:
    """:func:`kexue.losses.cosine._unit` along ``dim=1`` with fewer ops (the cost of small batches).

    Scale-safe as ``_unit``: each row is divided by its largest ``|entry|`` (detached; the result does not depend
    on it) before the 2-norm, so norms far outside 1e-19..1e19 neither overflow nor underflow in float32. The
    floor of that scale is the dtype's smallest subnormal, so only an all-zero row is changed by it (it stays 0).
    """
    # abs().amax(): torch's ord=inf vector norm is many times slower on CPU
    scale = x.detach().abs().amax(dim=1, keepdim=True).clamp_min_(_SUBNORMAL[x.dtype])
    xs = x / scale
    return xs / torch.linalg.vector_norm(xs, dim=1, keepdim=True).clamp_min(eps)


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
) -> _Scores:
    """Score matrix ``(N, C)``, positive column per row, and the diagonals that hold the positives and (SimCLR)
    the self-pairs."""
    _check_embeddings(query, key, negatives)
    # mixed dtypes (a bfloat16 head output against float32 keys under autocast) promote to the widest
    dtype = torch.promote_types(query.dtype, key.dtype)
    if negatives is not None:
        dtype = torch.promote_types(dtype, negatives.dtype)
        negatives = negatives.to(dtype)
        if normalize:
            negatives = _unit_rows(negatives, eps)
    if query.dtype != dtype or key.dtype != dtype:
        query, key = query.to(dtype), key.to(dtype)
    rank, world = _dist_world() if gather else (0, 1)
    if world > 1:  # before any gather: unequal shapes would abort the processes instead of raising
        _check_same_across_ranks({"query": query, "key": key, "negatives": negatives}, {"symmetric": symmetric})
    b = query.shape[0]
    offset = rank * b
    z = torch.cat([query, key]) if symmetric or normalize else query  # (2B, D): query rows then key rows
    if normalize:  # cosine scores, as in SimCLR/FlatCLR; one scale-safe pass over both views
        z = _unit_rows(z, eps)
    # scale the (N, D) anchors, not the (N, C) scores: one pass over B*D instead of B*C
    if symmetric:
        anchors = z / temperature
        if world > 1:
            parts = [_gather(z[:b]), _gather(z[b:])]
            if negatives is not None:
                parts.append(_gather(negatives))
            cands = torch.cat(parts)  # (2WB [+ WM], D)
        else:
            cands = z if negatives is None else torch.cat([z, negatives])
        n_all = world * b
        # row i < B (a query view) pairs with key view i, row B + i with query view i; self = the row's own view
        self_diag: tuple[_Diag, ...] = ((0, b, offset), (b, 2 * b, n_all + offset))
        pos_diag: tuple[_Diag, ...] = ((0, b, n_all + offset), (b, 2 * b, offset))
        n_neg = cands.shape[0] - 2
    else:
        if normalize:
            query, key = z.split(b)  # split, not two slices: one cat of the gradients in backward
        all_key = _gather(key) if world > 1 else key  # (W*B, D)
        if negatives is not None and world > 1:
            negatives = _gather(negatives)
        anchors = query / temperature
        cands = all_key if negatives is None else torch.cat([all_key, negatives])
        self_diag, pos_diag = (), ((0, b, offset),)
        n_neg = cands.shape[0] - 1
    if n_neg < 1:
        raise ValueError(
            f"no negatives: a batch of {b} row(s) needs explicit `negatives` (or symmetric=True with B >= 2, "
            "or gather=True across ranks)"
        )
    return _Scores(torch.mm(anchors, cands.t()), self_diag, pos_diag)


def _embedding_loss(scores: _Scores, kind: _Kind, reduction: str) -> tuple[Tensor, Tensor]:
    """``(loss with reduction, per-anchor loss)`` on the score matrix of :func:`_embedding_logits` (which it masks
    in place). The per-anchor loss is for logging only (no gradient flows through it for FlatNCE)."""
    logits = scores.logits
    if logits.dtype in (torch.float16, torch.bfloat16):  # reduced in float32, as in _per_anchor
        logits = logits.float()
    _mask_diagonals(logits, scores.self_diag)
    if kind == "plain":
        # the positive column of each row, from the diagonals that hold the positives
        dev = logits.device
        parts = [torch.arange(off, off + r1 - r0, device=dev) for r0, r1, off in scores.pos_diag]
        rows = F.cross_entropy(logits, parts[0] if len(parts) == 1 else torch.cat(parts), reduction="none")
        return reduce(rows, reduction), rows
    # the reduction is folded into the Function: one autograd node fewer, which shows at small batches
    loss, log_xi, _ = _NegLogSumExp.apply(logits, scores.pos_diag, kind == "stable", reduction)
    return loss, log_xi


class _NegLogSumExp(torch.autograd.Function):
    """Per row of owned scores whose positives lie on diagonals: ``log xi = logsumexp_{i != t}(s_i) - s_t``
    (FlatNCE) or ``softplus(log xi)`` (stable InfoNCE).

    The composed form (read out the positives, mask them, ``torch.logsumexp``, ``softplus``) allocates one
    ``(N, C)`` buffer in forward and four in backward (a scatter of the positives' gradient, then ``x - lse``, its
    ``exp`` and the product with the incoming gradient); on a CPU each fresh buffer of that size also pays its
    page faults, and at small N its dozen autograd nodes cost more than the arithmetic. Here forward computes the
    softmax over the negatives ``p`` once (saved) and backward is ``p * h`` with ``-h`` written on the positives
    (``h`` the incoming gradient times ``sigmoid(log xi)`` for the softplus): one buffer each way, one node.
    ``logits`` (a matmul output that no autograd node saved) is masked in place.

    ``log xi`` and ``p`` are returned too, so that backward is built from differentiable ops on this Function's
    own outputs: double backward (the loss inside a gradient penalty) works. Callers ignore ``p``. The first
    output is reduced as ``reduction`` says (``"mean"``, ``"sum"`` or ``"none"``).
    """

    @staticmethod
    def forward(
        ctx: Any, logits: Tensor, pos_diag: tuple[_Diag, ...], stable: bool, reduction: str
    ) -> tuple[Tensor, Tensor, Tensor]:
        loss, log_xi, p = _neg_lse_forward(logits, pos_diag, stable, reduction)
        ctx.pos_diag, ctx.stable, ctx.reduction = pos_diag, stable, reduction
        ctx.save_for_backward(p, log_xi)
        ctx.set_materialize_grads(False)  # unused outputs get None, not an (N, C) zero gradient
        return loss, log_xi, p

    @staticmethod
    def backward(
        ctx: Any, grad: Tensor | None, grad_log_xi: Tensor | None, grad_p: Tensor | None
    ) -> tuple[Tensor | None, None, None, None]:
        p, log_xi = ctx.saved_tensors
        return (
            _neg_lse_backward(p, log_xi, ctx.pos_diag, ctx.stable, ctx.reduction, grad, grad_log_xi, grad_p),
            None,
            None,
            None,
        )


def _neg_lse_forward(
    logits: Tensor, pos_diag: tuple[_Diag, ...], stable: bool, reduction: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Forward of :class:`_NegLogSumExp` (without autograd): ``(reduced loss, log xi, p)``; masks ``logits``."""
    # read out the positives (a copy), then mask them in place
    n = logits.shape[0]
    diags = [(logits if (r0, r1) == (0, n) else logits[r0:r1]).diagonal(off) for r0, r1, off in pos_diag]
    s_t = diags[0].clone() if len(diags) == 1 else torch.cat(diags)  # (N,)
    for d in diags:
        d.fill_(-_INF)  # the positive leaves the log-sum-exp
    p = torch.softmax(logits, dim=1)  # (N, C)
    # log-sum-exp = max - log(largest probability); that probability is >= 1/C, so its log is exact
    log_xi = logits.amax(dim=1).sub_(p.amax(dim=1).log_()).sub_(s_t)
    rows = F.softplus(log_xi) if stable else log_xi
    loss = rows.mean() if reduction == "mean" else rows.sum() if reduction == "sum" else rows.clone()
    return loss, log_xi, p


def _sub_positives(out: Tensor, h: Tensor, pos_diag: tuple[_Diag, ...]) -> None:
    """Subtract ``h`` (one value per row) from each row's positive entry of ``out``: ``d log xi / d s_t = -1``."""
    n = out.shape[0]
    for r0, r1, off in pos_diag:
        if (r0, r1) == (0, n):
            out.diagonal(off).sub_(h)
        else:
            out[r0:r1].diagonal(off).sub_(h[r0:r1])


def _neg_lse_backward(
    p: Tensor,
    log_xi: Tensor,
    pos_diag: tuple[_Diag, ...],
    stable: bool,
    reduction: str,
    grad: Tensor | None,
    grad_log_xi: Tensor | None,
    grad_p: Tensor | None,
) -> Tensor | None:
    """Backward of :class:`_NegLogSumExp`: the gradient of the ``(N, C)`` scores (``None`` when none reaches)."""
    h = grad  # (N,) the gradient reaching each row's loss
    if h is not None and reduction != "none":
        h = h.expand(log_xi.shape) / log_xi.shape[0] if reduction == "mean" else h.expand(log_xi.shape)
    if h is not None and stable:
        h = h * torch.sigmoid(log_xi)  # d softplus(u) / du
    if grad_log_xi is not None:  # double backward only
        h = grad_log_xi if h is None else h + grad_log_xi
    out = None
    if h is not None:
        out = p * h.unsqueeze(1)
        _sub_positives(out, h, pos_diag)
    if grad_p is not None:  # double backward only: the softmax's own vector-Jacobian product
        gp = grad_p * p
        vjp = gp - p * gp.sum(dim=1, keepdim=True)
        out = vjp if out is None else out + vjp
    return out


_FUSED_DTYPES = (torch.float32, torch.float64)


class _UnitNCE(torch.autograd.Function):
    """:func:`_embedding_logits` (``normalize=True``, no ``negatives``, one process) and :class:`_NegLogSumExp` in
    one autograd node: ``(reduced loss, log xi)`` from ``(query, key)``.

    The same ops in the same order as the composed path (:func:`_unit_rows`, the temperature, the product,
    :class:`_NegLogSumExp`), so the values are the same, and backward applies by hand the very formulas of the
    nodes that the composed path records (torch's ``DivBackward0``, ``ClampMinBackward0``,
    ``LinalgVectorNormBackward0``, ``MmBackward0``, ``SplitBackward0``), so the gradients are the same too. What
    goes is per-call cost: at small batches about a dozen autograd nodes and the recording of each op cost more
    than the arithmetic. Backward under ``create_graph`` (a gradient penalty) differentiates the composed path
    instead, whose nodes all support double backward.
    """

    @staticmethod
    def forward(
        ctx: Any,
        query: Tensor,
        key: Tensor,
        temperature: float,
        eps: float,
        symmetric: bool,
        stable: bool,
        reduction: str,
    ) -> tuple[Tensor, Tensor]:
        b = query.shape[0]
        z = torch.cat([query, key])  # (2B, D): query rows then key rows
        # _unit_rows, op for op
        scale = z.abs().amax(dim=1, keepdim=True).clamp_min_(_SUBNORMAL[z.dtype])
        zs = z.div_(scale)  # z is ours
        norm = torch.linalg.vector_norm(zs, dim=1, keepdim=True)
        floored = norm.clamp_min(eps)
        u = zs / floored  # (2B, D) unit rows
        if symmetric:
            anchors, cands = u / temperature, u
            pos_diag: tuple[_Diag, ...] = ((0, b, b), (b, 2 * b, 0))
        else:
            query_u, cands = u[:b], u[b:]  # views (cheaper than split)
            anchors = query_u / temperature
            pos_diag = ((0, b, 0),)
        logits = torch.mm(anchors, cands.t())
        if symmetric:
            _mask_diagonals(logits, ((0, b, 0), (b, 2 * b, b)))
        loss, log_xi, p = _neg_lse_forward(logits, pos_diag, stable, reduction)
        # intermediates too (double backward never reads them): saved-tensor hooks (offloading) see all of them
        ctx.save_for_backward(query, key, log_xi, p, scale, norm, floored, u, anchors, cands)
        ctx.opts = (temperature, eps, symmetric, stable, reduction, pos_diag)
        ctx.mark_non_differentiable(log_xi)  # callers log it detached
        ctx.set_materialize_grads(False)
        return loss, log_xi

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None, _: Tensor | None) -> tuple[Tensor | None, ...]:
        temperature, eps, symmetric, stable, reduction, pos_diag = ctx.opts
        query, key, log_xi, p, scale, norm, floored, u, anchors, cands = ctx.saved_tensors
        none = (None,) * 5
        if grad is None:
            return None, None, *none
        if torch.is_grad_enabled():  # create_graph: differentiate the composed path (double backward)
            return (*_unit_nce_composed_grad(ctx, query, key, grad), *none)
        # _NegLogSumExp's backward, with in-place ops (no graph to keep here)
        rows = log_xi.shape[0]
        h = grad / rows if reduction == "mean" else grad  # 0-d, or (N,) for "none"
        if stable:
            h = torch.sigmoid(log_xi).mul_(h)  # d softplus(u) / du
        elif reduction != "none":
            h = h.expand(rows)
        g = p * h.unsqueeze(1)  # (N, C)
        _sub_positives(g, h, pos_diag)
        # MmBackward0 (the anchors are row-major, cands.t() column-major), TBackward0, DivBackward0 (temperature)
        g_anchors = g.mm(cands).div_(temperature)
        g_cands = g.t().mm(anchors)
        # the two uses of the unit rows: summed (symmetric), or SplitBackward0's cat
        g_u = g_anchors.add_(g_cands) if symmetric else torch.cat([g_anchors, g_cands])
        # u = zs / floored: DivBackward0 (both inputs); floored = clamp_min(norm, eps): ClampMinBackward0;
        # norm = vector_norm(zs): LinalgVectorNormBackward0; the (2B, 1) gradient summed over the broadcast dim.
        # -g_u * (u / floored) summed: negating after the sum is exact (rounding is symmetric in sign)
        g_floored = (u / floored).mul_(g_u).sum(dim=1, keepdim=True).neg_()
        g_norm = torch.where(norm >= eps, g_floored, 0.0)
        # LinalgVectorNormBackward0 is (zs / norm).masked_fill_(norm == 0, 0) * g_norm; zs / norm is u bit for bit:
        # a row's largest |entry| divided by itself is exactly 1, so a non-zero row's norm is >= 1 >= eps and
        # floored = norm, and an all-zero row is masked (NaN or infinite inputs never get here: forward rejects them)
        g_zs = g_u.div_(floored).add_(u.masked_fill(norm == 0, 0).mul_(g_norm))
        g_z = g_zs.div_(scale)  # zs = z / scale, the scale detached
        b = query.shape[0]
        return g_z[:b], g_z[b:], *none


def _unit_nce_composed_grad(ctx: Any, query: Tensor, key: Tensor, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """:class:`_UnitNCE`'s input gradients through the composed path, with a graph (``create_graph``)."""
    temperature, eps, symmetric, stable, reduction, _ = ctx.opts
    needs = ctx.needs_input_grad[:2]
    inputs = [x for x, need in zip((query, key), needs, strict=True) if need]
    with torch.enable_grad():
        scores = _embedding_logits(
            query,
            key,
            temperature=temperature,
            negatives=None,
            symmetric=symmetric,
            normalize=True,
            gather=False,
            eps=eps,
        )
        loss, _ = _embedding_loss(scores, "stable" if stable else "flat", reduction)
    got = iter(torch.autograd.grad(loss, inputs, grad, create_graph=True))
    gq = next(got) if needs[0] else None
    gk = next(got) if needs[1] else None
    return gq, gk


def _fused_loss(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float,
    negatives: Tensor | None,
    symmetric: bool,
    normalize: bool,
    gather: bool,
    eps: float,
    kind: _Kind,
    reduction: str,
) -> tuple[Tensor, Tensor] | None:
    """``(loss, per-anchor loss)`` through :class:`_UnitNCE` when the call fits it, else ``None``.

    It fits stable InfoNCE and FlatNCE on normalised float32/float64 embeddings without explicit negatives, in
    one process, eagerly (torch.compile traces the composed path), outside autocast.
    """
    if not normalize or negatives is not None or (gather and _dist_world()[1] > 1) or is_compiling():
        return None
    if torch.is_autocast_enabled(query.device.type):  # the composed path reduces half-precision scores in float32
        return None
    _check_embeddings(query, key, None)
    if query.dtype != key.dtype or query.dtype not in _FUSED_DTYPES:
        return None
    b = query.shape[0]
    if (2 * b - 2 if symmetric else b - 1) < 1:
        return None  # the composed path raises its error
    loss, log_xi = _UnitNCE.apply(query, key, temperature, eps, symmetric, kind == "stable", reduction)
    return loss, log_xi


def _nce_loss(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float,
    negatives: Tensor | None,
    symmetric: bool,
    normalize: bool,
    gather: bool,
    eps: float,
    kind: _Kind,
    reduction: str,
) -> tuple[Tensor, Tensor]:
    """``(loss, per-anchor loss)`` of :func:`info_nce` / :func:`flat_nce`: the one-node path where the call fits it
    (:func:`_fused_loss`), else the score matrix and :func:`_embedding_loss`."""
    if kind != "plain":  # the one-node Function computes the softplus (stable) and log-xi (flat) forms only
        fused = _fused_loss(
            query,
            key,
            temperature=temperature,
            negatives=negatives,
            symmetric=symmetric,
            normalize=normalize,
            gather=gather,
            eps=eps,
            kind=kind,
            reduction=reduction,
        )
        if fused is not None:
            return fused
    scores = _embedding_logits(
        query,
        key,
        temperature=temperature,
        negatives=negatives,
        symmetric=symmetric,
        normalize=normalize,
        gather=gather,
        eps=eps,
    )
    return _embedding_loss(scores, kind, reduction)


# --------------------------------------------------------------------------------------------- functional


def info_nce_from_logits(
    logits: Tensor, target: Tensor, *, reduction: Reduction = "mean", stable: bool = False
) -> Tensor:
    """InfoNCE (cross-entropy) on precomputed scores: ``logsumexp_i(s_i) - s_t`` per row.

    See https://kexue.fm/archives/8586, ``log(1 + xi)``. Entries equal to ``-inf`` are masked candidates. A row
    whose negatives are all masked has the exact value ``log(1 + 0) = 0`` and zero gradient. A row whose positive
    is masked (``logits[i, target[i]] = -inf``, a fully masked row included) has no finite loss and is rejected.

    Args:
        logits: ``(N, C)`` scores ``s`` (already divided by the temperature); ``N >= 1``, ``C >= 2``.
        target: ``(N,)`` int64 (or int32) column of each row's positive.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-row ``(N,)``).
        stable: compute ``softplus(logsumexp_{i != t}(s_i) - s_t)``, InfoNCE without the float error of
            ``1 + xi`` (exact for ``xi`` far below machine epsilon).

    Returns:
        Scalar, or ``(N,)`` for ``reduction="none"``; dtype of ``logits`` (float32 for half inputs).

    Raises:
        TypeError: non-float ``logits`` or non-integer ``target``.
        ValueError: bad shapes, no rows, fewer than 2 columns, ``target`` out of range, NaN or ``+inf`` scores,
            rows with a masked positive (named by index), bad ``reduction``. The value checks (two device
            syncs: the target range, and the finiteness of the per-row losses, which reveals the other cases)
            are skipped under ``torch.compile``; there a masked positive gives a non-finite loss.

    Example:
        >>> logits = torch.tensor([[30.0, 10.0, 12.0]])
        >>> info_nce_from_logits(logits, torch.tensor([0]))  # 1 + xi rounds to 1 in float32
        tensor(0.)
        >>> info_nce_from_logits(logits, torch.tensor([0]), stable=True)
        tensor(1.7291e-08)
    """
    _check_logits(logits, target)
    check_reduction(reduction)
    _check_target_values(logits, target)
    # masked: rows without a negative get 0 with zero gradient in the stable form too
    loss = _per_anchor(logits, target.long(), "stable" if stable else "plain", masked=True)
    return reduce(_check_rows(loss, logits, target, flat=False), reduction)


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
        TypeError / ValueError: as :func:`info_nce_from_logits`; besides, a row whose negatives are all masked
            is rejected (named by index), since its value ``log xi = log 0`` is ``-inf``. Under
            ``torch.compile`` that check is skipped and such a row gives ``-inf``.

    Example:
        >>> logits = torch.tensor([[30.0, 10.0, 12.0]])
        >>> flat_nce_from_logits(logits, torch.tensor([0]))  # log xi: negative is normal
        tensor(-17.8731)
    """
    _check_logits(logits, target)
    check_reduction(reduction)
    _check_target_values(logits, target)
    loss = _check_rows(_per_anchor(logits, target.long(), "flat"), logits, target, flat=True)
    out = reduce(loss, reduction)
    if return_info_nce:
        return out, reduce(F.softplus(loss.detach()), reduction)
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
            positives sit at ``rank * B + i``. Every rank must use the same shapes, dtypes and ``symmetric``;
            they are compared first (one small all-gather), so a mismatch raises on every rank.
        eps: in ``(0, 1]``; the normalisation divides each embedding by its largest ``|entry|`` before the
            norm (exact for any finite scale, 1e-30 or 1e30 in float32), and ``eps`` floors that rescaled norm
            (at least 1), so it only keeps an all-zero embedding at 0.

    Returns:
        Scalar (mean/sum over anchors) or per-anchor losses, in the (promoted) input dtype; float32 when the
        scores are half precision (autocast), since the log-sum-exp is always reduced in at least float32.

    Raises:
        TypeError: non-tensor or non-float inputs, non-real ``temperature``/``eps``.
        ValueError: mismatched shapes (across ranks too, with ``gather``), empty ``query``, ``temperature``
            not finite and > 0, ``eps`` outside ``(0, 1]``, NaN/inf inputs or scores that overflow (checked on
            the output, eagerly only), a batch with no negatives, bad ``reduction``.

    Example:
        >>> q, k = torch.randn(8, 16), torch.randn(8, 16)
        >>> info_nce(q, k).shape
        torch.Size([])
        >>> info_nce(q, k, symmetric=True, reduction="none").shape
        torch.Size([16])
    """
    _check_options(temperature, reduction, eps)
    loss, _ = _nce_loss(
        query,
        key,
        temperature=temperature,
        negatives=negatives,
        symmetric=symmetric,
        normalize=normalize,
        gather=gather,
        eps=eps,
        kind="stable" if stable else "plain",
        reduction=reduction,
    )
    inputs = {"query": query, "key": key, "negatives": negatives}
    return _check_output(loss, inputs, temperature=temperature)


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
    _check_options(temperature, reduction, eps)
    out, loss = _nce_loss(
        query,
        key,
        temperature=temperature,
        negatives=negatives,
        symmetric=symmetric,
        normalize=normalize,
        gather=gather,
        eps=eps,
        kind="flat",
        reduction=reduction,
    )
    inputs = {"query": query, "key": key, "negatives": negatives}
    out = _check_output(out, inputs, temperature=temperature)
    if return_info_nce:
        return out, reduce(F.softplus(loss.detach()), reduction)  # stable InfoNCE value, for logs
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
        _check_options(temperature, reduction, eps)
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
        _check_options(temperature, reduction, eps)
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
