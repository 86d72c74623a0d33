"""Autograd plumbing of the gradient-level strategies: per-task gradients, ``.grad`` writing, GradScaler, DDP.

A gradient-level strategy needs one gradient per task over the *shared* parameters, stacked as an ``(n, D)``
matrix, while every other leaf the losses reach (the task heads) gets its ordinary gradient. With a
``GradScaler`` each task loss goes through ``scaler.scale`` (which also initialises the scaler's state, so
``scaler.step`` works afterwards), the task gradients are divided by the scale before anything is combined, and
the combined direction is written back multiplied by the scale: ``.grad`` then holds scaled gradients exactly as
after ``scaler.scale(loss).backward()``, and ``scaler.step`` unscales them, checks them for inf/NaN and skips the
step when it finds any.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ._distributed import all_reduce_mean_, world_size


@runtime_checkable
class ScalerLike(Protocol):
    """What the strategies use of ``torch.amp.GradScaler``."""

    def scale(self, outputs: Tensor) -> Tensor: ...

    def get_scale(self) -> float: ...

    def is_enabled(self) -> bool: ...


def check_scaler(scaler: Any) -> None:
    """``scaler`` must be ``None`` or GradScaler-like (``scale``, ``get_scale``, ``is_enabled``)."""
    if scaler is not None and not isinstance(scaler, ScalerLike):
        raise TypeError(f"scaler must be None or a torch.amp.GradScaler, got {type(scaler).__name__}")


def scaler_enabled(scaler: ScalerLike | None) -> bool:
    """True when ``scaler`` is given and enabled (a disabled GradScaler is a no-op)."""
    return scaler is not None and bool(scaler.is_enabled())


def scale_loss(scaler: ScalerLike | None, loss: Tensor) -> Tensor:
    """``scaler.scale(loss)``: multiplies by the current scale and lazily creates the scaler's state."""
    return scaler.scale(loss) if scaler_enabled(scaler) else loss  # type: ignore[union-attr]


def current_scale(scaler: ScalerLike | None) -> float:
    """The factor :func:`scale_loss` multiplied by (call it after :func:`scale_loss`); 1 without a scaler."""
    return float(scaler.get_scale()) if scaler_enabled(scaler) else 1.0  # type: ignore[union-attr]


def shared_list(shared_parameters: Iterable[Tensor] | None, scheme: str) -> list[Tensor]:
    """Validate the shared parameters: tensors, floating point, each once, at least one requiring grad."""
    if shared_parameters is None:
        raise ValueError(f"{scheme} is a gradient-level method: pass shared_parameters (the shared trunk)")
    if isinstance(shared_parameters, Tensor):
        shared_parameters = [shared_parameters]
    params = []
    for i, p in enumerate(shared_parameters):
        if not isinstance(p, Tensor):
            raise TypeError(f"{scheme}: shared_parameters[{i}] must be a torch.Tensor, got {type(p).__name__}")
        if not p.is_floating_point():
            raise TypeError(f"{scheme}: shared_parameters[{i}] must be floating point, got {p.dtype}")
        if p.requires_grad:
            params.append(p)
    if not params:
        raise ValueError(f"{scheme}: shared_parameters is empty (or none requires grad); pass the trunk's parameters")
    if len({id(p) for p in params}) != len(params):
        raise ValueError(f"{scheme}: shared_parameters contains the same tensor twice")
    return params


def check_requires_grad(items: Sequence[Tensor], scheme: str) -> None:
    """Every task loss must be part of an autograd graph (not computed under ``no_grad`` or detached)."""
    for i, li in enumerate(items):
        if not li.requires_grad:
            raise ValueError(
                f"{scheme}: losses[{i}] does not require grad (computed under torch.no_grad() or detached?); "
                "a gradient-level method differentiates every task loss"
            )


def leaf_tensors(roots: Sequence[Tensor], exclude: set[int]) -> list[Tensor]:
    """Leaf tensors requiring grad that the graph of ``roots`` reaches, minus ``exclude`` (ids)."""
    seen: set[Any] = set()
    out: list[Tensor] = []
    stack = [r.grad_fn for r in roots if r.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)  # AccumulateGrad node
        if isinstance(var, Tensor) and id(var) not in exclude:
            exclude.add(id(var))
            out.append(var)
        stack.extend(nf for nf, _ in fn.next_functions if nf is not None)
    return out


def task_gradients(
    losses: Tensor,
    items: Sequence[Tensor],
    shared: list[Tensor],
    scaler: ScalerLike | None,
    head_coef: Tensor | None,
    *,
    batched: bool = False,
) -> tuple[Tensor, list[Tensor], list[Tensor | None], float]:
    """Per-task gradients over ``shared`` and the gradients of every other leaf.

    Args:
        losses: ``(n,)`` stacked task losses.
        items: the same losses as the user's separate tensors (see :func:`._inputs.loss_items`).
        shared: the shared parameters.
        scaler: optional GradScaler; every loss is backpropagated through ``scaler.scale``.
        head_coef: ``(n,)`` coefficients of the task gradients for the other leaves (default 1).
        batched: one ``vmap``-ed backward (``is_grads_batched``) instead of one pass per task; falls back to
            the loop when an operation has no batching rule.

    Returns:
        ``(G, others, head, scale)``: the *unscaled* ``(n, D)`` task gradients (averaged across DDP ranks), the
        other leaves, their gradients ``sum_i c_i grad L_i`` in *scaled* units (ready for ``.grad``), and the
        scale used.
    """
    n = losses.shape[0]
    others = leaf_tensors([losses], {id(p) for p in shared})
    inputs = shared + others
    k = len(shared)
    D = sum(p.numel() for p in shared)
    G = torch.empty(n, D, dtype=losses.dtype, device=losses.device)
    head: list[Tensor | None] = [None] * len(others)
    coef = [1.0] * n if head_coef is None else [float(c) for c in head_coef]
    done = False
    scale = 1.0
    if batched and n > 1:
        scaled = scale_loss(scaler, losses)
        scale = current_scale(scaler)
        eye = torch.eye(n, dtype=scaled.dtype, device=scaled.device)
        try:
            # retain_graph so that the per-task loop can still run if vmap fails half-way
            gs = torch.autograd.grad(
                scaled, inputs, grad_outputs=eye, is_grads_batched=True, retain_graph=True, allow_unused=True
            )
        except RuntimeError:
            gs = None
        if gs is not None:
            off = 0
            for g, p in zip(gs[:k], shared):
                G[:, off : off + p.numel()] = 0.0 if g is None else g.reshape(n, -1)
                off += p.numel()
            c = torch.tensor(coef, dtype=losses.dtype, device=losses.device)
            for j, g in enumerate(gs[k:]):
                if g is not None:
                    head[j] = torch.tensordot(c.to(g.dtype), g, dims=1)
            done = True
    if not done:
        for i in range(n):
            li = scale_loss(scaler, items[i])
            if i == 0:
                scale = current_scale(scaler)  # the scaler's state exists once scale() has run
            gs = torch.autograd.grad(li, inputs, retain_graph=i < n - 1, allow_unused=True)
            off = 0
            for g, p in zip(gs[:k], shared):
                G[i, off : off + p.numel()] = 0.0 if g is None else g.reshape(-1)
                off += p.numel()
            for j, g in enumerate(gs[k:]):
                if g is not None:
                    g = g * coef[i] if coef[i] != 1.0 else g
                    head[j] = g if head[j] is None else head[j] + g  # type: ignore[operator]
    if scale != 1.0:
        G = G / scale  # back to true gradients: norms, inner products and Frank-Wolfe must not see the scale
    if world_size() > 1:
        all_reduce_mean_(G)
        for h in head:
            if h is not None:
                all_reduce_mean_(h)
    return G, others, head, scale


def accumulate(params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    """Add ``grads`` into ``params[i].grad`` (creating it when absent), like ``Tensor.backward``."""
    for p, g in zip(params, grads):
        if g is None:
            continue
        g = g.detach().to(p.dtype)
        p.grad = g.clone() if p.grad is None else p.grad + g


def write_flat(params: Sequence[Tensor], flat: Tensor) -> None:
    """Split a flat ``(D,)`` gradient over ``params`` and accumulate it into their ``.grad``."""
    accumulate(params, [c.view_as(p) for c, p in zip(torch.split(flat, [p.numel() for p in params]), params)])
