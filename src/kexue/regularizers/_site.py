"""Where a perturbation acts: the model input, a submodule's output (embedding, hidden layer) or the weights.

Every regulariser in this package takes ``(model, inputs)`` and a ``site``. ``inputs`` is what the model is
called with:

* a tensor ``x``: ``model(x)``;
* a tuple or list ``(x, *more)``: ``model(x, *more)``. For a Hugging Face model (one with ``main_input_name``
  and ``config``) a tuple is read in the tokenizer's order ``(input_ids, attention_mask, token_type_ids)`` and
  passed *by keyword*, because positional order differs between architectures (GPT-2's second parameter is
  ``past_key_values``, not the mask);
* a mapping (``dict``, Hugging Face ``BatchEncoding``): ``model(**inputs)``, the way to pass keyword arguments.

A site is resolved once per call into a forward pass that can replace the clean value ``v`` at that site by
``transform(v)``:

* ``"input"``: ``v`` is the floating input: ``x`` (the first element of a tuple); for a mapping its
  ``"inputs_embeds"`` entry, else its only floating tensor; ``"input:<key>"`` names the entry.
* ``"embedding"``: ``v`` is the output of the model's token-embedding layer (``model.get_input_embeddings()``
  when the model has it, else its only :class:`torch.nn.Embedding`), changed through a forward hook. The
  weight matrix is never edited or looked up by name, so nothing has to be restored afterwards and any model
  whose embedding is a submodule works (``inputs_embeds``-style perturbation without a second code path).
* a dotted submodule name or an :class:`torch.nn.Module` inside the model: ``v`` is that module's output
  (hidden activations).

Inputs computed upstream (``inputs_embeds`` from the model's own embedding, features from the user's encoder)
are differentiated through: the clean pass runs on a detached copy of every input that requires grad, and its
gradient is handed back to the original tensor by the returned loss, so one ``loss.backward()`` reaches the
upstream graph exactly once.

A model wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` (or ``DataParallel``) is unwrapped for
the site and the Hugging Face checks; every extra forward pass but the last runs inside ``model.no_sync()``, so
only the pass whose graph ``loss.backward()`` goes through prepares the gradient all-reduce.

The helpers here also check that the model returns logits, normalise directions per sample or globally, keep
BatchNorm running statistics untouched by probe passes, switch dropout off for them, and replay the random
number generators so that passes that must see the same dropout mask do (:class:`RngReplay`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Literal, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from .._validate import check_float_tensor, check_real, is_compiling

__all__ = [
    "DoubleBackwardError",
    "Inputs",
    "RngReplay",
    "Site",
    "check_double_backward",
    "dropout_disabled",
    "find_embedding",
    "frozen_batchnorm_stats",
]

Site = Union[Literal["input", "embedding"], str, nn.Module]  # noqa: UP007 (runtime alias, py3.10)
Inputs = Union[Tensor, Sequence[Any], Mapping[str, Any]]  # noqa: UP007
Transform = Callable[[Tensor, Tensor | None], Tensor]

_IGNORE_INDEX = -100  # F.cross_entropy's default: a label that is not a target

# The tokenizer's order of a Hugging Face batch, used to name the elements of a tuple.
_HF_POSITIONAL = ("attention_mask", "token_type_ids")


class DoubleBackwardError(RuntimeError):
    """A gradient penalty needs double backward through an op that does not implement it."""


def check_positive(name: str, value: Any) -> float:
    """A finite real number > 0 (``kexue._validate.check_real``)."""
    return check_real(name, value, low=0.0, low_inclusive=False)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (else ``model``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def _is_hf(model: nn.Module) -> bool:
    return isinstance(getattr(model, "main_input_name", None), str) and hasattr(model, "config")


def call_args(model: nn.Module, inputs: Inputs) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` for ``model(*args, **kwargs)`` from a tensor, a sequence or a mapping."""
    if isinstance(inputs, Tensor):
        return (inputs,), {}
    if isinstance(inputs, Mapping):
        if not inputs or not all(isinstance(k, str) for k in inputs):
            raise TypeError(f"inputs as a mapping must be a non-empty dict of keyword arguments, got {inputs!r}")
        if not any(isinstance(v, Tensor) for v in inputs.values()):
            raise TypeError(f"inputs as a mapping must hold at least one Tensor, got keys {list(inputs)}")
        return (), dict(inputs)
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], Tensor):
        core = unwrap(model)
        if _is_hf(core) and len(inputs) > 1:
            names: tuple[str, ...] = (str(core.main_input_name), *_HF_POSITIONAL)
            if len(inputs) > len(names):
                raise TypeError(
                    f"inputs: a tuple of {len(inputs)} elements for the Hugging Face model {type(core).__name__} is "
                    f"ambiguous (a tuple is read as {names}); pass a dict of keyword arguments instead"
                )
            params = inspect.signature(core.forward).parameters
            missing = [n for n in names[: len(inputs)] if n not in params]
            if missing:
                raise TypeError(
                    f"inputs: {type(core).__name__}.forward has no parameter {missing[0]!r} for element "
                    f"{names.index(missing[0])} of the tuple (read as {names}); pass a dict of keyword arguments"
                )
            return (), dict(zip(names, inputs))
        return tuple(inputs), {}
    raise TypeError(
        "inputs must be a Tensor, a non-empty sequence whose first element is a Tensor, or a mapping of keyword "
        f"arguments, got {type(inputs).__name__}"
    )


def find_embedding(model: nn.Module) -> nn.Module:
    """The token-embedding layer of ``model``.

    ``model.get_input_embeddings()`` when the model defines it (Hugging Face models), else the only
    :class:`torch.nn.Embedding` submodule. A ``DistributedDataParallel`` wrapper is looked through.

    Raises:
        ValueError: no embedding layer, or several and no ``get_input_embeddings`` to choose between them.
    """
    model = unwrap(model)
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
    """``None`` for the input site, else the module whose output is perturbed (names relative to the unwrapped
    model)."""
    core = unwrap(model)
    if isinstance(site, nn.Module):
        if not any(m is site for m in model.modules()):
            raise ValueError(f"site module {type(site).__name__} is not a submodule of {type(core).__name__}")
        return site
    if site == "input" or (isinstance(site, str) and site.startswith("input:")):
        return None
    if site == "embedding":
        return find_embedding(core)
    if isinstance(site, str):
        try:
            return core.get_submodule(site)
        except AttributeError:
            names = [n for n, _ in core.named_modules() if n][:20]
            raise ValueError(
                f"site={site!r} is neither 'input', 'embedding' nor a submodule of {type(core).__name__} "
                f"(submodules: {', '.join(names)}...)"
            ) from None
    raise TypeError(f"site must be 'input', 'embedding', a submodule name or an nn.Module, got {site!r}")


def _input_key(site: Site, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | str:
    """Where the value of the input site sits: an index into ``args`` or a key of ``kwargs``."""
    explicit = site[len("input:") :] if isinstance(site, str) and site.startswith("input:") else None
    key: int | str
    if args and explicit is None:
        key = 0
    elif explicit is not None:
        if explicit in kwargs:
            key = explicit
        elif explicit.isdigit() and int(explicit) < len(args):
            key = int(explicit)
        else:
            raise ValueError(f"site={site!r}: no input {explicit!r} among {list(kwargs) or len(args)}")
    elif "inputs_embeds" in kwargs:
        key = "inputs_embeds"
    else:
        floats = [k for k, v in kwargs.items() if isinstance(v, Tensor) and v.is_floating_point()]
        if len(floats) != 1:
            raise ValueError(
                f"site='input' on a mapping needs an 'inputs_embeds' entry or exactly one floating tensor, got "
                f"floating entries {floats} among {list(kwargs)}: name one with site='input:<key>', or perturb "
                "the token embedding with site='embedding'"
            )
        key = floats[0]
    value = args[key] if isinstance(key, int) else kwargs[key]
    if not isinstance(value, Tensor) or not value.is_floating_point():
        what = f"{type(value).__name__}" if not isinstance(value, Tensor) else f"a {value.dtype} tensor"
        # a ValueError: the site does not fit these inputs (token ids are valid input for site='embedding')
        raise ValueError(
            f"site={site!r} perturbs a floating tensor, but {input_name(key, args, kwargs)} is {what} (token ids?): "
            "use site='embedding' to perturb the embedding output, or pass inputs_embeds"
        )
    return key


def input_name(key: int | str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """How the user named the value of the input site: ``inputs``, ``inputs[1]`` or ``inputs['inputs_embeds']``."""
    if isinstance(key, str):
        return f"inputs[{key!r}]"
    return "inputs" if len(args) == 1 and not kwargs and key == 0 else f"inputs[{key}]"


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


def check_target(logits: Tensor, target: Any, *, classes: bool = False) -> None:
    """``target`` is a tensor with the logits' batch size.

    With ``classes=True`` (the default loss, ``F.cross_entropy``) it must also be what cross entropy reads:
    class indices ``(B,)`` in ``[0, C)`` or its ``ignore_index`` -100, or class probabilities of the logits'
    shape ``(B, C)``. Checked here so that a wrong label is a ``ValueError``/``TypeError`` naming ``target``
    rather than an ``IndexError`` (or a device assert on CUDA) from inside the loss.
    """
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a Tensor, got {type(target).__name__}")
    if target.dim() == 0:
        raise ValueError("target must have a batch dimension, got a 0-d tensor")
    if target.shape[0] != logits.shape[0]:
        raise ValueError(f"target has batch size {target.shape[0]}, logits {tuple(logits.shape)}")
    if not classes:
        return
    if target.is_floating_point() and target.shape == logits.shape:
        check_float_tensor("target", target)  # class probabilities (soft labels), as F.cross_entropy reads them
        return
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"target must hold integer class indices of shape (B,) or class probabilities of the logits' shape "
            f"{tuple(logits.shape)}, got dtype {target.dtype} and shape {tuple(target.shape)}"
        )
    if target.dim() != 1:
        raise ValueError(f"target must hold class indices of shape (B,), got shape {tuple(target.shape)}")
    if is_compiling():
        return
    n = logits.shape[1]
    bad = (target != _IGNORE_INDEX) & ((target < 0) | (target >= n))
    if bool(bad.any()):
        raise ValueError(
            f"target holds class index {int(target[bad][0])}, expected values in [0, {n - 1}] or the ignore_index "
            f"{_IGNORE_INDEX} of F.cross_entropy"
        )


def check_static_graph(model: nn.Module, what: str) -> None:
    """Refuse ``DistributedDataParallel(static_graph=True)``: its reducer fires during ``torch.autograd.grad``
    and assumes one forward per backward, so extra passes give silently wrong gradients."""
    if getattr(model, "static_graph", False):
        raise ValueError(
            f"{what}: DistributedDataParallel(static_graph=True) is not supported (extra forward passes and input "
            "gradients taken with torch.autograd.grad break its gradient reduction); wrap the model with "
            "static_graph=False"
        )


def extra_pass(model: nn.Module) -> AbstractContextManager[Any]:
    """Context for a forward pass that is not the last: ``model.no_sync()`` when the model has it (DDP), else a
    no-op.

    DDP prepares the gradient all-reduce in every forward pass run with grad enabled; only the last pass,
    whose graph ``loss.backward()`` goes through, should do so.
    """
    no_sync = getattr(model, "no_sync", None)  # DDP, FSDP and wrappers that follow their protocol
    if callable(no_sync):
        ctx: AbstractContextManager[Any] = no_sync()
        return ctx
    return nullcontext()


class RngReplay:
    """Replay the global random number generators (CPU and every CUDA device in use) across forward passes.

    Created before the first pass; :meth:`restore` before each later pass puts the generators back where they
    were, so every pass draws the same dropout masks (and any other random numbers the model draws). The
    user's stream therefore ends where *one* pass would have left it. Unlike
    :func:`torch.random.fork_rng`, nothing is restored on exit: the next training step draws fresh masks.
    """

    def __init__(self, *tensors: Tensor) -> None:
        self.cpu = torch.get_rng_state()
        devices = {t.device for t in tensors if t.device.type == "cuda"}
        self.cuda = {d: torch.cuda.get_rng_state(d) for d in devices}

    @classmethod
    def for_pass(cls, model: nn.Module, fwd: Forward) -> RngReplay:
        """Save the generators of every device holding the model's parameters or the inputs."""
        return cls(*fwd.tensors(), *(p for p in model.parameters()))

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        for d, state in self.cuda.items():
            torch.cuda.set_rng_state(state, d)


class Forward:
    """A forward pass of ``model`` on ``inputs`` with the value at ``site`` replaced by ``transform(v, ids)``.

    ``ids`` is the embedding layer's input (token ids) when the site is an :class:`torch.nn.Embedding`, so a
    direction can be tied across equal tokens (the author's whole-matrix normalisation); otherwise ``None``.
    After a call, ``self.value`` is the clean value seen at the site (part of the autograd graph when
    ``need_grad``) and ``self.ids`` the token ids.

    With ``cut=True`` every input tensor that requires grad (computed upstream) is replaced by a detached leaf
    for this pass; ``self.cut`` lists the ``(original, leaf)`` pairs, so the caller can take the clean gradient
    w.r.t. the leaves and hand it to the originals (:func:`linear_surrogate`) in the one final backward.
    """

    def __init__(self, model: nn.Module, inputs: Inputs, site: Site) -> None:
        self.model = model
        self.core = unwrap(model)
        self.args, self.kwargs = call_args(model, inputs)
        self.module = resolve(model, site)
        self.key: int | str | None = None
        if self.module is None:
            self.key = _input_key(site, self.args, self.kwargs)
            first: Tensor = self._get(self.args, self.kwargs, self.key)
            # the value that is perturbed: floating, finite and non-empty, named as the caller passed it
            check_float_tensor(input_name(self.key, self.args, self.kwargs), first, min_ndim=1)
        else:
            first = next(t for t in self.tensors())
            if first.dim() == 0 or first.shape[0] == 0:
                raise ValueError(f"inputs must hold a non-empty batch (B, ...), got shape {tuple(first.shape)}")
        self.batch = first.shape[0]
        self.value: Tensor | None = None
        self.ids: Tensor | None = None
        self.cut: list[tuple[Tensor, Tensor]] = []
        self.num_embeddings: int | None = self.module.num_embeddings if isinstance(self.module, nn.Embedding) else None

    def tensors(self) -> list[Tensor]:
        """The tensors among the inputs."""
        return [t for t in (*self.args, *self.kwargs.values()) if isinstance(t, Tensor)]

    @property
    def input(self) -> Tensor:
        """The clean value of the input site."""
        assert self.key is not None
        return self._get(self.args, self.kwargs, self.key)

    @staticmethod
    def _get(args: Sequence[Any], kwargs: Mapping[str, Any], key: int | str) -> Any:
        return args[key] if isinstance(key, int) else kwargs[key]

    def _cut_inputs(self) -> tuple[list[Any], dict[str, Any]]:
        leaves: dict[int, Tensor] = {}
        self.cut = []

        def leaf(v: Any) -> Any:
            if not isinstance(v, Tensor) or not v.requires_grad:
                return v
            if id(v) not in leaves:
                leaves[id(v)] = v.detach().requires_grad_(True)
                self.cut.append((v, leaves[id(v)]))
            return leaves[id(v)]

        return [leaf(a) for a in self.args], {k: leaf(v) for k, v in self.kwargs.items()}

    def __call__(self, transform: Transform | None = None, *, need_grad: bool = False, cut: bool = False) -> Tensor:
        if cut:
            args, kwargs = self._cut_inputs()
        else:
            args, kwargs = list(self.args), dict(self.kwargs)
        if self.module is None:
            assert self.key is not None
            x = self._get(args, kwargs, self.key)
            if need_grad and not x.requires_grad:
                x = x.detach().requires_grad_(True)
            self.value = x
            v = transform(x, None) if transform is not None else x
            if isinstance(self.key, int):
                args[self.key] = v
            else:
                kwargs[self.key] = v
            return as_logits(self.model(*args, **kwargs), self.batch)

        calls: list[int] = []

        def hook(mod: nn.Module, hook_args: tuple[Any, ...], out: Any) -> Any:
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
            ids = hook_args[0] if hook_args and isinstance(hook_args[0], Tensor) else None
            self.ids = ids if ids is not None and not ids.is_floating_point() else None
            return transform(out, self.ids) if transform is not None else out

        handle = self.module.register_forward_hook(hook)
        try:
            out = self.model(*args, **kwargs)
        finally:
            handle.remove()
        if not calls:
            hint = " (inputs_embeds given? then perturb it with site='input')" if "inputs_embeds" in kwargs else ""
            raise ValueError(f"site module {type(self.module).__name__} did not run in the model's forward{hint}")
        return as_logits(out, self.batch)

    def clean_gradients(
        self, loss: Tensor, params: Sequence[Tensor], scale: float = 1.0
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor | None]]]:
        """After a ``cut`` pass: ``(grad of loss w.r.t. the site value, [(tensor, its clean gradient)])``.

        One backward gives the site gradient, the parameters' clean gradient and the gradient of every upstream
        input (handed to the original tensor, so it reaches the upstream graph). ``loss`` is multiplied by
        ``scale`` (a GradScaler's) and the gradients divided by it; the site gradient is detached.
        """
        v = self.value
        assert v is not None
        leaves = [leaf for _, leaf in self.cut if leaf is not v]
        grads = torch.autograd.grad(loss * scale, [v, *params, *leaves], allow_unused=True)
        g_v = grads[0]
        if g_v is None:
            g_v = torch.zeros_like(v)
        unscaled = [None if g is None else g / scale for g in grads]
        by_leaf = dict(zip(map(id, leaves), unscaled[1 + len(params) :]))
        by_leaf[id(v)] = unscaled[0]
        carried: list[tuple[Tensor, Tensor | None]] = list(zip(params, unscaled[1 : 1 + len(params)]))
        carried += [(orig, by_leaf[id(leaf)]) for orig, leaf in self.cut]
        return g_v.detach() / scale, carried


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
        # gathered back to the embedding output; index_select is several times faster than rows[inverse] on CPU
        return rows.index_select(0, inverse.reshape(-1)).reshape(d.shape)
    d = d / d.abs().max().clamp_min(tiny)
    return d / d.norm().clamp_min(tiny)


def all_finite(t: Tensor) -> bool:
    """Whether every entry of ``t`` is finite (one host sync).

    Its minimum and maximum are finite exactly when every entry is (NaN propagates through both): one pass that
    allocates two scalars, where ``torch.isfinite(t).all()`` writes a boolean copy of ``t`` first (about 8x
    slower on CPU for an embedding-sized gradient).
    """
    if t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t.detach())
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def per_sample_norm(d: Tensor) -> Tensor:
    """``(B,)`` L2 norms over all non-batch dims, exact for any finite scale.

    Each row is divided by its largest ``|entry|`` before the norm and multiplied back after: the squares of a
    float32 row of entries ~1e20 overflow (the norm comes out ``inf``) and those of ~1e-20 underflow (``0``).
    The scale is detached; ``||d|| = m ||d / m||`` for the constant ``m``, so the gradient is the exact one.
    """
    flat = d.reshape(d.shape[0], -1)
    m = flat.detach().abs().amax(dim=1, keepdim=True)
    # an all-zero row keeps norm 0; a non-finite one keeps its inf/NaN norm (a GradScaler overflow stays visible)
    m = torch.where((m > 0) & torch.isfinite(m), m, torch.ones_like(m))
    return (flat / m).norm(dim=1) * m.squeeze(1)


def global_norm(d: Tensor) -> Tensor:
    """The L2 norm of the whole tensor (0-d), exact for any finite scale (see :func:`per_sample_norm`)."""
    m = d.detach().abs().max() if d.numel() else torch.zeros((), dtype=d.dtype, device=d.device)
    m = torch.where((m > 0) & torch.isfinite(m), m, torch.ones_like(m))
    return (d / m).norm() * m


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


def linear_surrogate(carried: Sequence[tuple[Tensor, Tensor | None]], coef: Tensor | float = 1.0) -> Tensor:
    """A zero-valued scalar whose gradient w.r.t. each tensor is ``coef`` times the given gradient.

    Lets a loss function compute the clean gradient of the parameters and of the input in *one* backward pass
    and still return a loss tensor for the caller's ``loss.backward()`` (the detached gradient is handed over
    as is, scaled by the incoming gradient, e.g. a GradScaler's scale). A tensor may be a parameter or a
    non-leaf input computed upstream, whose graph then receives its share in the same backward.
    """
    pairs = [(p, g.detach()) for p, g in carried if g is not None]
    if not pairs:
        return torch.zeros(())
    ps, gs = zip(*pairs)
    c = torch.as_tensor(coef, dtype=gs[0].dtype, device=gs[0].device).detach()
    out: Tensor = _GradientCarrier.apply(c, tuple(gs), *ps)
    return out
