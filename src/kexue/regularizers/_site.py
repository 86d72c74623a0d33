"""Where a perturbation acts: the model input, a submodule's output (embedding, hidden layer) or the weights.

Every regulariser in this package takes ``(model, inputs)`` and a ``site``. A site is resolved once per call
into a forward pass that can replace the clean value ``v`` at that site by ``transform(v)``:

* ``"input"``: ``v`` is ``inputs[0]``; the model is called as ``model(transform(v), *inputs[1:])``.
* ``"embedding"``: ``v`` is the output of the model's token-embedding layer (``model.get_input_embeddings()``
  when the model has it, else its only :class:`torch.nn.Embedding`), changed through a forward hook. The
  weight matrix is never edited or looked up by name, so nothing has to be restored afterwards and any model
  whose embedding is a submodule works (``inputs_embeds``-style perturbation without a second code path).
* a dotted submodule name or an :class:`torch.nn.Module` inside the model: ``v`` is that module's output
  (hidden activations).

The helpers here also check that the model returns logits, normalise directions per sample or globally, keep
BatchNorm running statistics untouched by probe passes and switch dropout off for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

__all__ = [
    "DoubleBackwardError",
    "Inputs",
    "Site",
    "check_double_backward",
    "dropout_disabled",
    "find_embedding",
    "frozen_batchnorm_stats",
]

Site = Union[Literal["input", "embedding"], str, nn.Module]  # noqa: UP007 (runtime alias, py3.10)
Inputs = Union[Tensor, Sequence[Tensor]]  # noqa: UP007
Transform = Callable[[Tensor, Tensor | None], Tensor]


class DoubleBackwardError(RuntimeError):
    """A gradient penalty needs double backward through an op that does not implement it."""


def as_tuple(inputs: Inputs) -> tuple[Tensor, ...]:
    if isinstance(inputs, Tensor):
        return (inputs,)
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, Tensor) for t in inputs):
        return tuple(inputs)
    raise TypeError(f"inputs must be a Tensor or a non-empty sequence of Tensors, got {type(inputs).__name__}")


def check_positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def find_embedding(model: nn.Module) -> nn.Module:
    """The token-embedding layer of ``model``.

    ``model.get_input_embeddings()`` when the model defines it (Hugging Face models), else the only
    :class:`torch.nn.Embedding` submodule.

    Raises:
        ValueError: no embedding layer, or several and no ``get_input_embeddings`` to choose between them.
    """
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        emb = getter()
        if isinstance(emb, nn.Module):
            return emb
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    if len(found) == 1:
        return found[0][1]
    if not found:
        raise ValueError(
            f"embedding layer not found: {type(model).__name__} has no nn.Embedding submodule and no "
            "get_input_embeddings(); pass site=<the module whose output to perturb> or site='input'"
        )
    names = ", ".join(n for n, _ in found)
    raise ValueError(
        f"embedding layer ambiguous: {type(model).__name__} has {len(found)} nn.Embedding submodules "
        f"({names}); "
        "pass the token embedding as site=<module> or site='<dotted name>'"
    )


def resolve(model: nn.Module, site: Site) -> nn.Module | None:
    """``None`` for the input site, else the module whose output is perturbed."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(site, nn.Module):
        if not any(m is site for m in model.modules()):
            raise ValueError(f"site module {type(site).__name__} is not a submodule of {type(model).__name__}")
        return site
    if site == "input":
        return None
    if site == "embedding":
        return find_embedding(model)
    if isinstance(site, str):
        try:
            return model.get_submodule(site)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n][:20]
            raise ValueError(
                f"site={site!r} is neither 'input', 'embedding' nor a submodule of {type(model).__name__} "
                f"(submodules: {', '.join(names)}...)"
            ) from None
    raise TypeError(f"site must be 'input', 'embedding', a submodule name or an nn.Module, got {site!r}")


def as_logits(out: Any, batch: int) -> Tensor:
    """The model output as logits ``(B, C)``; accepts objects with a ``.logits`` field (HF model outputs)."""
    if not isinstance(out, Tensor):
        logits = getattr(out, "logits", None)
        if logits is None and isinstance(out, dict):
            logits = out.get("logits")
        if not isinstance(logits, Tensor):
            raise ValueError(
                f"model output must be logits (a Tensor of shape (B, C)) or have a .logits field, "
                f"got {type(out).__name__}"
            )
        out = logits
    if out.dim() != 2 or out.shape[0] != batch or not out.is_floating_point():
        raise ValueError(
            f"model output must be floating logits of shape (B={batch}, C), got {tuple(out.shape)} {out.dtype}"
        )
    return out


class Forward:
    """A forward pass of ``model`` on ``inputs`` with the value at ``site`` replaced by ``transform(v, ids)``.

    ``ids`` is the embedding layer's input (token ids) when the site is an :class:`torch.nn.Embedding`, so a
    direction can be tied across equal tokens (the author's whole-matrix normalisation); otherwise ``None``.
    After a call, ``self.value`` is the clean value seen at the site (part of the autograd graph when
    ``need_grad``) and ``self.ids`` the token ids.
    """

    def __init__(self, model: nn.Module, inputs: Inputs, site: Site) -> None:
        self.model = model
        self.inputs = as_tuple(inputs)
        self.module = resolve(model, site)
        self.batch = self.inputs[0].shape[0]
        self.value: Tensor | None = None
        self.ids: Tensor | None = None
        self.num_embeddings: int | None = self.module.num_embeddings if isinstance(self.module, nn.Embedding) else None

    def __call__(self, transform: Transform | None = None, *, need_grad: bool = False) -> Tensor:
        if self.module is None:
            x = self.inputs[0]
            if need_grad and not x.requires_grad:
                x = x.detach().requires_grad_(True)
            self.value = x
            v = transform(x, None) if transform is not None else x
            return as_logits(self.model(v, *self.inputs[1:]), self.batch)

        calls: list[int] = []

        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
            if not isinstance(out, Tensor):
                raise ValueError(f"site module {type(mod).__name__} must return a Tensor, got {type(out).__name__}")
            calls.append(1)
            if len(calls) > 1:
                raise ValueError(
                    f"site module {type(mod).__name__} ran {len(calls)} times in one forward; "
                    "perturb a module that runs once"
                )
            if need_grad and not out.requires_grad:
                out = out.detach().requires_grad_(True)
            self.value = out
            ids = args[0] if args and isinstance(args[0], Tensor) and not args[0].is_floating_point() else None
            self.ids = ids
            return transform(out, ids) if transform is not None else out

        handle = self.module.register_forward_hook(hook)
        try:
            out = self.model(*self.inputs)
        finally:
            handle.remove()
        if not calls:
            raise ValueError(f"site module {type(self.module).__name__} did not run in the model's forward")
        return as_logits(out, self.batch)


def normalize(
    d: Tensor,
    scope: Literal["per_sample", "global"],
    *,
    ids: Tensor | None = None,
    num_embeddings: int | None = None,
) -> Tensor:
    """Unit-L2 direction(s): per sample (over all non-batch dims) or one norm for the whole tensor.

    Per sample follows the official VAT code (``get_normalized_vector``): divide by the max-abs value first so
    the squared norm cannot under/overflow. ``"global"`` on an embedding output with ``ids`` ties the
    direction across equal tokens and normalises it over the embedding matrix ``(num_embeddings, D)``, the row
    space in which the author's implementation perturbs: ``delta_W = scatter_add(d, ids)``, ``delta_W /=
    ||delta_W||``, ``d = delta_W[ids]``.
    """
    tiny = torch.finfo(d.dtype).tiny
    if scope == "per_sample":
        flat = d.reshape(d.shape[0], -1)
        flat = flat / flat.abs().amax(dim=1, keepdim=True).clamp_min(tiny)
        flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(tiny)
        return flat.reshape(d.shape)
    if ids is not None and num_embeddings is not None:
        # Only the rows of tokens present in the batch are non-zero, so the matrix norm is computed on those
        # rows alone: (U, D) instead of (num_embeddings, D).
        dim = d.shape[-1]
        uniq, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
        rows = torch.zeros(uniq.numel(), dim, dtype=d.dtype, device=d.device)
        rows.index_add_(0, inverse, d.reshape(-1, dim))  # (U, D): gradient w.r.t. the used matrix rows
        rows = rows / rows.abs().max().clamp_min(tiny)
        rows = rows / rows.norm().clamp_min(tiny)
        return rows[inverse].reshape(d.shape)  # gathered back to the embedding output
    d = d / d.abs().max().clamp_min(tiny)
    return d / d.norm().clamp_min(tiny)


def per_sample_norm(d: Tensor) -> Tensor:
    """``(B,)`` L2 norms over all non-batch dims."""
    return d.reshape(d.shape[0], -1).norm(dim=1)


@contextmanager
def frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """Run forward passes without changing any BatchNorm running statistics.

    Batch statistics are still used for normalisation in training mode (as ``update_batch_stats=False`` in the
    official VAT code); only ``running_mean``, ``running_var`` and ``num_batches_tracked`` are restored on
    exit.
    """
    # momentum = 0 makes the in-place update a no-op (running = 1 * running + 0 * batch); restoring the
    # buffers by copy_ instead would bump their version and break the backward of the pass that saved them.
    saved: list[tuple[_BatchNorm, float | None, Tensor | None]] = []
    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            nbt = m.num_batches_tracked
            saved.append((m, m.momentum, None if nbt is None else nbt.detach().clone()))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, nbt in saved:
            m.momentum = momentum
            if nbt is not None and m.num_batches_tracked is not None:
                with torch.no_grad():
                    m.num_batches_tracked.copy_(nbt)


@contextmanager
def dropout_disabled(model: nn.Module, disabled: bool = True) -> Iterator[None]:
    """Put every dropout module of ``model`` in eval mode for the duration (no-op when ``disabled`` is
    False)."""
    changed = [m for m in model.modules() if isinstance(m, _DropoutNd) and m.training] if disabled else []
    for m in changed:
        m.eval()
    try:
        yield
    finally:
        for m in changed:
            m.train()


_BROKEN = {"Error", "NotImplemented", "DelayedError"}


def check_double_backward(grad: Tensor, what: str) -> None:
    """Raise :class:`DoubleBackwardError` if ``grad``'s graph holds a node that cannot be differentiated
    again.

    ``torch.autograd.grad(..., create_graph=True)`` succeeds through a fused kernel without a double-backward
    formula (CPU flash attention) or a custom ``Function`` marked ``@once_differentiable``; the failure would
    only surface, far from its cause, when the penalty is back-propagated. Those ops leave ``NotImplemented``
    / ``Error`` nodes in the graph of the gradient, which this walk finds.
    """
    seen: set[Any] = set()
    stack = [grad.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ in _BROKEN:
            raise DoubleBackwardError(
                f"{what} needs double backward, but the model contains an op without a double-backward "
                "formula "
                f"(autograd node {type(node).__name__}: a fused kernel or a @once_differentiable Function). "
                "Use method='finite_difference', which needs first derivatives only."
            )
        stack.extend(f for f, _ in node.next_functions)


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


class _GradientCarrier(torch.autograd.Function):
    """Zero-valued scalar whose backward hands ``coef * grads[i]`` to ``params[i]`` (no dense products)."""

    @staticmethod
    def forward(ctx: Any, coef: Tensor, grads: tuple[Tensor, ...], *params: Tensor) -> Tensor:
        ctx.coef, ctx.grads = coef, grads
        return torch.zeros((), dtype=params[0].dtype, device=params[0].device)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        scale = grad_out * ctx.coef
        return (None, None, *(g * scale.to(g.dtype) for g in ctx.grads))


def linear_surrogate(params: Sequence[Tensor], grads: Sequence[Tensor | None], coef: Tensor | float = 1.0) -> Tensor:
    """A zero-valued scalar whose gradient w.r.t. each parameter is ``coef`` times the given gradient.

    Lets a loss function compute the clean gradient of the parameters and of the input in *one* backward pass
    and still return a loss tensor for the caller's ``loss.backward()`` (the detached gradient is handed over
    as is, scaled by the incoming gradient, e.g. a GradScaler's scale).
    """
    pairs = [(p, g.detach()) for p, g in zip(params, grads) if g is not None]
    if not pairs:
        return torch.zeros(())
    ps, gs = zip(*pairs)
    c = torch.as_tensor(coef, dtype=gs[0].dtype, device=gs[0].device).detach()
    out: Tensor = _GradientCarrier.apply(c, tuple(gs), *ps)
    return out
