"""InfoNCE and FlatNCE over key tiles: ``O(B × tile)`` memory instead of the ``(B, B)`` score matrix.

Article: Su Jianlin, https://kexue.fm/archives/8586 (FlatNCE), Chen et al. 2021 (arXiv 2107.01152). The losses are
exactly :func:`kexue.losses.info_nce` and :func:`kexue.losses.flat_nce` (same scores ``cos / temperature``, same
positives, self-exclusion, symmetric 2B-view form, memory bank and cross-rank gather, same stop-gradient); only
the way they are computed differs.

The dense losses form all ``B × C`` scores at once, and autograd keeps them (or their softmax) for backward and
allocates their gradient: at B = 65,536 that is 16 GiB per ``(B, B)`` float32 matrix. Here a custom autograd
Function streams over tiles of ``tile_size`` candidates: forward merges each tile into a running per-row
log-sum-exp (``logaddexp`` of the tile's ``logsumexp``) and keeps only that ``(B,)`` vector; backward recomputes
each tile's scores, turns them into the tile's softmax from the stored log-sum-exp, and multiplies it into the
gradients of the anchors and of that tile's candidates. Per row, with ``L`` the log-sum-exp of the row's
candidate set and ``t`` its positive::

    plain InfoNCE:   loss = L_all - s_t,                 dloss/ds_j = softmax_all(s)_j - [j = t]
    FlatNCE:         loss = L_neg - s_t = log xi,        dloss/ds_j = softmax_neg(s)_j - [j = t]
    stable InfoNCE:  loss = softplus(L_neg - s_t),       the FlatNCE gradient times sigmoid(log xi)

(``L_all`` excludes only the anchor itself in the symmetric form; ``L_neg`` excludes the positive too.) FlatNCE's
gradient is that of ``xi / sg(xi)`` — the normaliser detached, nothing else — exactly as in :mod:`contrastive`.
Forward costs one pass of products over the candidates, backward three (one recomputation).
"""

from __future__ import annotations

from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from kexue._validate import check_int, reduce

from .contrastive import (
    _check_embeddings,
    _check_options,
    _check_output,
    _check_same_across_ranks,
    _dist_world,
    _gather,
)
from .cosine import _unit

__all__ = ["TiledFlatNCELoss", "TiledInfoNCELoss", "tiled_flat_nce", "tiled_info_nce"]

Reduction = Literal["mean", "sum", "none"]
_Kind = Literal["plain", "stable", "flat"]
_HALF = (torch.float16, torch.bfloat16)
_INF = float("inf")


def _setup(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float,
    negatives: Tensor | None,
    symmetric: bool,
    normalize: bool,
    gather: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Anchors ``(N, D)`` (scaled by 1/temperature), candidates ``(C, D)``, positive column and self column per row.

    The construction of :func:`kexue.losses.contrastive._embedding_logits` without its final ``(N, C)`` product.
    """
    _check_embeddings(query, key, negatives)
    dtype = torch.promote_types(query.dtype, key.dtype)
    if negatives is not None:
        dtype = torch.promote_types(dtype, negatives.dtype)
        negatives = negatives.to(dtype)
        if normalize:
            negatives = _unit(negatives, dim=1, eps=eps)
    query, key = query.to(dtype), key.to(dtype)
    rank, world = _dist_world() if gather else (0, 1)
    if world > 1:  # before any gather: unequal shapes would abort the processes instead of raising
        _check_same_across_ranks({"query": query, "key": key, "negatives": negatives}, {"symmetric": symmetric})
    b = query.shape[0]
    dev = query.device
    offset = rank * b
    self_col: Tensor | None
    if symmetric:
        z = torch.cat([query, key])  # (2B, D): query rows then key rows
        if normalize:
            z = _unit(z, dim=1, eps=eps)
        anchors = z / temperature
        if world > 1:
            parts = [_gather(z[:b]), _gather(z[b:])]
            if negatives is not None:
                parts.append(_gather(negatives))
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
            query, key = _unit(query, dim=1, eps=eps), _unit(key, dim=1, eps=eps)
        all_key = _gather(key) if world > 1 else key  # (W*B, D)
        if negatives is not None and world > 1:
            negatives = _gather(negatives)
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
    return anchors, cands, target, self_col


def _in_tile(col: Tensor, j0: int, j1: int) -> tuple[Tensor, Tensor]:
    """Rows whose column ``col`` lies in ``[j0, j1)``, and that column's index in the tile (clamped elsewhere)."""
    inside = (col >= j0) & (col < j1)
    return inside, (col - j0).clamp(0, j1 - j0 - 1).unsqueeze(1)


def _exclude(s: Tensor, excluded: list[Tensor], j0: int, j1: int) -> Tensor:
    """Set each row's excluded columns (the anchor itself, the positive) that fall in tile ``[j0, j1)`` to -inf.

    A scatter of one value per row and column list: no ``(N, tile)`` mask, no device sync.
    """
    for col in excluded:
        inside, idx = _in_tile(col, j0, j1)
        s.scatter_(1, idx, torch.where(inside.unsqueeze(1), -_INF, s.gather(1, idx)))
    return s


def _tile_scores(anchors: Tensor, cands: Tensor, j0: int, j1: int, work: torch.dtype) -> Tensor:
    """Scores ``(N, j1 - j0)`` of one tile, in ``work`` dtype (float32 for half-precision products)."""
    return torch.mm(anchors, cands[j0:j1].T).to(work)


class _TiledNCE(torch.autograd.Function):
    """Per-row InfoNCE / stable InfoNCE / FlatNCE over candidate tiles (see the module docstring)."""

    @staticmethod
    def forward(
        ctx: Any,
        anchors: Tensor,
        cands: Tensor,
        target: Tensor,
        self_col: Tensor | None,
        kind: str,
        tile: int,
    ) -> Tensor:
        work = torch.float32 if anchors.dtype in _HALF else anchors.dtype
        n, c = anchors.shape[0], cands.shape[0]
        excluded = ([] if self_col is None else [self_col]) + ([] if kind == "plain" else [target])
        lse = torch.full((n,), -_INF, dtype=work, device=anchors.device)
        s_t = torch.zeros(n, dtype=work, device=anchors.device)
        for j0 in range(0, c, tile):
            j1 = min(j0 + tile, c)
            s = _tile_scores(anchors, cands, j0, j1, work)  # (N, T)
            inside, idx = _in_tile(target, j0, j1)
            s_t = torch.where(inside, s.gather(1, idx).squeeze(1), s_t)  # the positive's score, from the product
            _exclude(s, excluded, j0, j1)
            # online log-sum-exp: a row whose tile is fully excluded adds logsumexp = -inf (no NaN)
            lse = torch.logaddexp(lse, torch.logsumexp(s, dim=1))
        x = lse - s_t  # (N,): log(1 + xi) (plain) or log xi (stable, flat)
        ctx.save_for_backward(anchors, cands, target, self_col, lse, x)
        ctx.kind, ctx.tile = kind, tile
        return F.softplus(x) if kind == "stable" else x

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        anchors, cands, target, self_col, lse, x = ctx.saved_tensors
        need_a, need_c = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        work = lse.dtype
        r = grad_out.to(work)  # (N,) upstream gradient per row
        if ctx.kind == "stable":
            r = r * torch.sigmoid(x)  # d softplus(x)/dx
        excluded = ([] if self_col is None else [self_col]) + ([] if ctx.kind == "plain" else [target])
        c = cands.shape[0]
        da = torch.zeros(anchors.shape, dtype=work, device=anchors.device) if need_a else None
        dc = torch.empty(cands.shape, dtype=work, device=cands.device) if need_c else None
        a_w = anchors.to(work)
        for j0 in range(0, c, ctx.tile):
            j1 = min(j0 + ctx.tile, c)
            p = _exclude(_tile_scores(anchors, cands, j0, j1, work), excluded, j0, j1)
            p.sub_(lse.unsqueeze(1)).exp_().mul_(r.unsqueeze(1))  # (N, T): r_i · softmax over the row's set
            pm = p.to(anchors.dtype)  # the products run in the dtype of the forward products
            if da is not None:
                if pm.dtype == work:
                    da.addmm_(pm, cands[j0:j1])
                else:
                    da.add_(torch.mm(pm, cands[j0:j1]))
            if dc is not None:
                dc[j0:j1] = torch.mm(pm.T, anchors)
        # the positive's -1: ds_{i,t} gets -r_i
        if da is not None:
            da.sub_(r.unsqueeze(1) * cands.index_select(0, target).to(work))
        if dc is not None:
            dc.index_add_(0, target, -r.unsqueeze(1) * a_w)
        da_out = None if da is None else da.to(anchors.dtype)
        dc_out = None if dc is None else dc.to(cands.dtype)
        return da_out, dc_out, None, None, None, None


def _tiled(
    query: Tensor,
    key: Tensor,
    kind: _Kind,
    *,
    temperature: float,
    tile_size: int,
    negatives: Tensor | None,
    symmetric: bool,
    normalize: bool,
    gather: bool,
    eps: float,
    reduction: str,
) -> Tensor:
    """Per-anchor losses ``(N,)``, checked (the shared core of the public functions; ``reduction`` is validated
    here and applied by the caller)."""
    _check_options(temperature, reduction, eps)
    check_int("tile_size", tile_size, low=1)
    anchors, cands, target, self_col = _setup(
        query,
        key,
        temperature=temperature,
        negatives=negatives,
        symmetric=symmetric,
        normalize=normalize,
        gather=gather,
        eps=eps,
    )
    device_type = anchors.device.type
    if torch.is_autocast_enabled(device_type) and anchors.dtype != torch.float64:
        # as anchors @ cands.T under autocast: the products in the autocast dtype, the log-sum-exp in float32
        dt = torch.get_autocast_dtype(device_type)
        anchors, cands = anchors.to(dt), cands.to(dt)
    per: Tensor = _TiledNCE.apply(anchors.contiguous(), cands.contiguous(), target, self_col, kind, int(tile_size))
    inputs = {"query": query, "key": key, "negatives": negatives}
    return _check_output(per, inputs, temperature=temperature)


def tiled_info_nce(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float = 0.1,
    tile_size: int = 1024,
    negatives: Tensor | None = None,
    symmetric: bool = False,
    reduction: Reduction = "mean",
    stable: bool = False,
    normalize: bool = True,
    gather: bool = False,
    eps: float = 1e-12,
) -> Tensor:
    """:func:`kexue.losses.info_nce` computed over candidate tiles, in ``O(N × tile_size)`` memory.

    https://kexue.fm/archives/8586 (``log(1 + xi)``); SimCLR's NT-Xent with ``symmetric=True``. Same value and
    gradients as :func:`info_nce` with the same arguments, without ever holding the ``(N, C)`` score matrix:
    forward keeps a running log-sum-exp per anchor, backward recomputes each tile (one extra pass of products).

    Args:
        query: ``(B, D)`` anchors.
        key: ``(B, D)``; ``key[i]`` is the positive of ``query[i]``, the other rows are negatives.
        temperature: ``tau > 0``.
        tile_size: candidates per tile (≥ 1): the live scores are ``N × tile_size`` elements, ``N = B`` (``2B``
            when ``symmetric``).
        negatives, symmetric, reduction, stable, normalize, gather, eps: as :func:`info_nce` (``gather``: keys
            from every ``torch.distributed`` rank through :func:`gather_with_grad`, this rank's queries).

    Returns:
        Scalar (mean/sum over anchors) or per-anchor losses ``(B,)`` / ``(2B,)``; the (promoted) input dtype,
        float32 for half-precision scores (autocast), as :func:`info_nce`.

    Raises:
        TypeError / ValueError: as :func:`info_nce`; besides, ``tile_size`` not an integer ≥ 1.

    Note:
        Backward is not differentiable again (``once_differentiable``), unlike the dense :func:`info_nce`.

    Example:
        >>> from kexue.losses import info_nce
        >>> q, k = torch.randn(10, 16), torch.randn(10, 16)
        >>> torch.allclose(tiled_info_nce(q, k, tile_size=3), info_nce(q, k), atol=1e-6)
        True
    """
    per = _tiled(
        query,
        key,
        "stable" if stable else "plain",
        temperature=temperature,
        tile_size=tile_size,
        negatives=negatives,
        symmetric=symmetric,
        normalize=normalize,
        gather=gather,
        eps=eps,
        reduction=reduction,
    )
    return reduce(per, reduction)


@overload
def tiled_flat_nce(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float = ...,
    tile_size: int = ...,
    negatives: Tensor | None = ...,
    symmetric: bool = ...,
    reduction: Reduction = ...,
    normalize: bool = ...,
    gather: bool = ...,
    eps: float = ...,
    return_info_nce: Literal[False] = ...,
) -> Tensor: ...
@overload
def tiled_flat_nce(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float = ...,
    tile_size: int = ...,
    negatives: Tensor | None = ...,
    symmetric: bool = ...,
    reduction: Reduction = ...,
    normalize: bool = ...,
    gather: bool = ...,
    eps: float = ...,
    return_info_nce: Literal[True],
) -> tuple[Tensor, Tensor]: ...
def tiled_flat_nce(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float = 0.1,
    tile_size: int = 1024,
    negatives: Tensor | None = None,
    symmetric: bool = False,
    reduction: Reduction = "mean",
    normalize: bool = True,
    gather: bool = False,
    eps: float = 1e-12,
    return_info_nce: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """:func:`kexue.losses.flat_nce` computed over candidate tiles, in ``O(N × tile_size)`` memory.

    https://kexue.fm/archives/8586; Chen et al. 2021 (arXiv 2107.01152). Value ``logsumexp_{i != t}(s_i) - s_t``
    (``log xi``, may be negative), gradient that of ``xi / sg(xi)``: only the normaliser is detached, exactly as
    :func:`flat_nce`, whose value and gradients this reproduces.

    Args:
        query, key, temperature, tile_size, negatives, symmetric, reduction, normalize, gather, eps: as
            :func:`tiled_info_nce`.
        return_info_nce: also return the detached stable InfoNCE value ``softplus(log xi)`` (same reduction).

    Returns:
        The loss (scalar or per anchor), plus the InfoNCE value when ``return_info_nce``.

    Raises:
        TypeError / ValueError: as :func:`tiled_info_nce`.

    Example:
        >>> from kexue.losses import flat_nce
        >>> q, k = torch.randn(10, 16), torch.randn(10, 16)
        >>> torch.allclose(tiled_flat_nce(q, k, tile_size=4, symmetric=True), flat_nce(q, k, symmetric=True))
        True
    """
    loss = _tiled(
        query,
        key,
        "flat",
        temperature=temperature,
        tile_size=tile_size,
        negatives=negatives,
        symmetric=symmetric,
        normalize=normalize,
        gather=gather,
        eps=eps,
        reduction=reduction,
    )
    out = reduce(loss, reduction)
    if return_info_nce:
        return out, reduce(F.softplus(loss.detach()), reduction)  # stable InfoNCE value, for logs
    return out


class TiledInfoNCELoss(nn.Module):
    """Module form of :func:`tiled_info_nce` (https://kexue.fm/archives/8586).

    Example:
        >>> loss_fn = TiledInfoNCELoss(temperature=0.1, tile_size=3, symmetric=True)
        >>> loss_fn(torch.randn(4, 8), torch.randn(4, 8)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        tile_size: int = 1024,
        symmetric: bool = False,
        reduction: Reduction = "mean",
        stable: bool = False,
        normalize: bool = True,
        gather: bool = False,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        _check_options(temperature, reduction, eps)
        self.tile_size = check_int("tile_size", tile_size, low=1)
        self.temperature, self.symmetric, self.reduction = temperature, symmetric, reduction
        self.stable, self.normalize, self.gather, self.eps = stable, normalize, gather, eps

    def forward(self, query: Tensor, key: Tensor, negatives: Tensor | None = None) -> Tensor:
        return tiled_info_nce(
            query,
            key,
            temperature=self.temperature,
            tile_size=self.tile_size,
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
            f"temperature={self.temperature}, tile_size={self.tile_size}, symmetric={self.symmetric}, "
            f"reduction={self.reduction!r}, stable={self.stable}, normalize={self.normalize}, gather={self.gather}"
        )


class TiledFlatNCELoss(nn.Module):
    """Module form of :func:`tiled_flat_nce`; keeps the last detached InfoNCE value in ``last_info_nce``.

    Example:
        >>> loss_fn = TiledFlatNCELoss(tile_size=3, symmetric=True)
        >>> loss = loss_fn(torch.randn(4, 8), torch.randn(4, 8))
        >>> loss_fn.last_info_nce is not None
        True
    """

    last_info_nce: Tensor | None

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        tile_size: int = 1024,
        symmetric: bool = False,
        reduction: Reduction = "mean",
        normalize: bool = True,
        gather: bool = False,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        _check_options(temperature, reduction, eps)
        self.tile_size = check_int("tile_size", tile_size, low=1)
        self.temperature, self.symmetric, self.reduction = temperature, symmetric, reduction
        self.normalize, self.gather, self.eps = normalize, gather, eps
        self.last_info_nce = None

    def forward(self, query: Tensor, key: Tensor, negatives: Tensor | None = None) -> Tensor:
        loss, info = tiled_flat_nce(
            query,
            key,
            temperature=self.temperature,
            tile_size=self.tile_size,
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
            f"temperature={self.temperature}, tile_size={self.tile_size}, symmetric={self.symmetric}, "
            f"reduction={self.reduction!r}, normalize={self.normalize}, gather={self.gather}"
        )
