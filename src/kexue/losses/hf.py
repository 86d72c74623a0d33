"""TaiLr as a Hugging Face ``Trainer(compute_loss_func=...)``: exact under gradient accumulation and across processes.

TaiLr: Su Jianlin, https://kexue.fm/archives/9526; Ji et al., ICLR 2023 (arXiv 2302.13344). The loss itself is
:func:`kexue.losses.tailr_loss`; this file only adapts it to the ``Trainer``'s loss hook. Nothing here imports
transformers (but :func:`hidden_states_collator`'s default collator): the hook is a plain callable
``(outputs, labels, num_items_in_batch=None) -> loss``. :class:`ChunkedTaiLrLossFunc` is the same hook for large
vocabularies: it reads the final hidden states and the output layer instead of the logits.

Why the hook and not a ``compute_loss`` override (transformers >= 4.46): the ``Trainer`` counts the non-ignored
labels of *every* micro-batch of an optimizer step on *every* process (``num_items_in_batch``, gathered when
``average_tokens_across_devices=True``) and, for ``compute_loss_func``, multiplies the returned loss by the number
of processes so that DDP's gradient *average* becomes the gradient of ``sum over all tokens / all tokens``. A
``compute_loss`` override skips that multiplication, so its gradients come out ``1 / world_size`` too small.

One more trap, for causal LMs: position ``t`` predicts label ``t + 1``, so ``labels[:, 0]`` is never a target, but
the ``Trainer`` counts it unless it recognises the model's loss as a causal-LM loss (recent releases recognise
Llama but not GPT-2; older ones count it for every model), which scales the loss by about ``(L - 1) / L``. Setting
``labels[:, 0] = -100`` in the collator makes the count right on every model and version; :class:`TaiLrLossFunc`
with ``causal=True`` checks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._validate import check_float_tensor, check_int

from .chunked import chunked_tailr_loss
from .tailr import Form, TaiLrLoss, _check_inputs, _tailr

__all__ = ["ChunkedTaiLrLossFunc", "TaiLrLossFunc", "hidden_states_collator"]


def _logits_of(outputs: Any) -> Tensor:
    """The logits of a transformers ``ModelOutput`` (mapping), a ``return_dict=False`` tuple or a bare tensor."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping) and "logits" in outputs:
        return outputs["logits"]
    logits = getattr(outputs, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], Tensor):
        return outputs[0]  # without labels the first output is the logits
    raise TypeError(f"outputs must hold logits (a ModelOutput, a tuple or a tensor), got {type(outputs).__name__}")


class TaiLrLossFunc(nn.Module):
    """TaiLr loss in the signature of ``transformers.Trainer(compute_loss_func=...)``.

    https://kexue.fm/archives/9526 (TaiLr, arXiv 2302.13344). Returns ``sum of the per-token TaiLr losses /
    num_items_in_batch``: with the ``Trainer``'s token count over the whole accumulated, all-process batch this is
    exactly the full-batch mean, whatever the number of micro-batches and processes (the ``Trainer`` multiplies
    the loss by the number of processes to undo DDP's gradient average). Called without ``num_items_in_batch``
    (direct use, or an old ``Trainer``) it returns the mean over this batch's non-ignored labels.

    Logits are upcast to at least float32 before the log-softmax (bf16 / fp16 training), as transformers' own
    causal-LM loss does; the result has that dtype.

    Args:
        gamma: γ in [0, 1] (see :func:`~kexue.losses.tailr_loss`: the paper uses 1e-7 to 0.8 by task).
        causal: ``True`` for causal LMs (position ``t`` predicts ``labels[:, t + 1]``; the labels are shifted
            here, not the logits, so no ``(B, L, V)`` copy is made); ``False`` when logits and labels are
            aligned (masked LMs, sequence classification, seq2seq decoders fed shifted inputs).
        min_weight: the weight floor ``b`` in [0, 1].
        label_smoothing: ε in [0, 1] (the smoothing term is not re-weighted, as in the official code).
        ignore_index: the label value that is not a target (transformers uses -100).
        form: ``"weighted"`` (the paper's rule) or ``"closed"`` (Su's Eq. 2).

    Shapes:
        ``outputs.logits``: ``(B, L, V)`` with ``labels`` ``(B, L)``, or ``(B, C)`` with ``(B,)``; returns a
        scalar.

    Raises:
        ValueError: a bad hyperparameter (at construction); with ``causal=True`` and a token count given, a
            label at position 0 (never a target of a causal LM, yet counted by the ``Trainer`` for models it does
            not recognise as causal: set ``labels[:, 0] = -100`` in the collator); ``labels`` not of the logits'
            shape without the class dimension, or holding an id outside ``[0, V)`` other than ``ignore_index``;
            NaN or ``+inf`` logits.
        TypeError: ``outputs`` without logits; logits not floating point; labels not integer ids.

    Example:
        >>> import torch
        >>> loss_func = TaiLrLossFunc(gamma=0.0, causal=True)  # γ = 0 is cross entropy
        >>> logits, labels = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
        >>> labels[:, 0] = -100
        >>> ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
        >>> torch.allclose(loss_func({"logits": logits}, labels, num_items_in_batch=8), ce)
        True
    """

    def __init__(
        self,
        *,
        gamma: float,
        causal: bool,
        min_weight: float = 0.0,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        form: Form = "weighted",
    ) -> None:
        super().__init__()
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be True (causal LM) or False (aligned labels), got {causal!r}")
        # the loss module validates the hyperparameters once, here, instead of at the first training step
        crit = TaiLrLoss(
            gamma=gamma,
            min_weight=min_weight,
            label_smoothing=label_smoothing,
            ignore_index=ignore_index,
            reduction="sum",
            form=form,
        )
        self.gamma, self.min_weight, self.label_smoothing = crit.gamma, crit.min_weight, crit.label_smoothing
        self.ignore_index, self.form = crit.ignore_index, crit.form
        self.causal = causal

    def forward(self, outputs: Any, labels: Tensor, num_items_in_batch: Tensor | int | None = None) -> Tensor:
        logits = _logits_of(outputs)
        # before the upcast below, which would turn integer logits into floats; values are checked with the labels
        check_float_tensor("logits", logits, min_ndim=2, finite=False)
        if not isinstance(labels, Tensor):
            raise TypeError(f"labels must be a tensor, got {type(labels).__name__} (did the batch have 'labels'?)")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels must hold integer class (token) ids, got dtype {labels.dtype}")
        if self.causal and labels.dim() < 2:
            raise ValueError(f"causal=True needs (B, L) labels, got shape {tuple(labels.shape)}")
        if tuple(labels.shape) != tuple(logits.shape[:-1]):  # checked before the flattening below hides it
            raise ValueError(
                f"labels must have shape {tuple(logits.shape[:-1])} for logits of shape {tuple(logits.shape)} "
                f"(classes last), got {tuple(labels.shape)}"
            )
        if self.causal:
            if num_items_in_batch is not None and bool((labels[:, 0] != self.ignore_index).any()):
                raise ValueError(
                    "causal=True: labels[:, 0] holds targets; no position predicts them, but the Trainer counts them "
                    "in num_items_in_batch for models it does not recognise as causal (e.g. GPT-2), which scales the "
                    f"loss by about (L-1)/L. Set labels[:, 0] = {self.ignore_index} in the data collator."
                )
            # position t predicts token t + 1: shift the labels left (pad the end) instead of slicing the logits
            labels = F.pad(labels[:, 1:], (0, 1), value=self.ignore_index)
        work = torch.promote_types(logits.dtype, torch.float32)
        flat = logits.reshape(-1, logits.shape[-1]).to(work)  # (N, V): a view for contiguous float32 logits
        target = labels.reshape(-1).to(flat.device)
        _check_inputs(flat, target, self.ignore_index, name="labels")  # values: label ids, NaN/+inf logits

        def loss(reduction: str) -> Tensor:
            return _tailr(
                flat, target, self.gamma, self.min_weight, self.label_smoothing, self.ignore_index, reduction, self.form
            )

        if num_items_in_batch is None:
            return loss("mean")
        # the Trainer's count covers every micro-batch and process of this optimizer step
        return loss("sum") / num_items_in_batch

    def extra_repr(self) -> str:
        return (
            f"gamma={self.gamma}, causal={self.causal}, min_weight={self.min_weight}, "
            f"label_smoothing={self.label_smoothing}, ignore_index={self.ignore_index}, form={self.form!r}"
        )


def _last_hidden_of(outputs: Any) -> Tensor:
    """The final (normalised) hidden states of a transformers ``ModelOutput`` run with ``output_hidden_states``."""
    states = outputs.get("hidden_states") if isinstance(outputs, Mapping) else getattr(outputs, "hidden_states", None)
    if not isinstance(states, (tuple, list)) or not states or not isinstance(states[-1], Tensor):
        raise ValueError(
            "outputs carry no hidden_states: the model must be called with output_hidden_states=True (and "
            "logits_to_keep=1, so that it does not compute the full logits); wrap the data collator with "
            "kexue.losses.hidden_states_collator"
        )
    return states[-1]


class ChunkedTaiLrLossFunc:
    """TaiLr (γ = 0: cross entropy) for ``Trainer(compute_loss_func=...)`` from hidden states, in token chunks.

    https://kexue.fm/archives/9526 (TaiLr, arXiv 2302.13344). The same loss as :class:`TaiLrLossFunc` (the sum of
    the per-token losses over ``num_items_in_batch``, exact under gradient accumulation and across processes), but
    computed by :func:`~kexue.losses.chunked_tailr_loss` from the model's final hidden states and its output layer,
    so that the ``(tokens × vocabulary)`` logits are never stored: the memory a large vocabulary costs.

    The model must not compute the full logits itself. With transformers 5, a causal LM called with
    ``output_hidden_states=True`` and ``logits_to_keep=1`` returns its final, normalised hidden states as
    ``outputs.hidden_states[-1]`` and the logits of the last position only; :func:`hidden_states_collator` adds the
    two keys to every batch. Models whose head does more than a linear layer (a logit soft-cap, a logit scale)
    need their own loss: the hook sees only the hidden states and the layer given here.

    Args:
        output_layer: the model's output projection, ``model.get_output_embeddings()``: a module with ``weight``
            ``(V, H)`` and optionally ``bias`` ``(V,)`` (it is read at each call, so training updates, tied
            weights and PEFT wrappers are seen).
        gamma: γ in [0, 1]; 0 is cross entropy.
        causal: ``True`` for causal LMs (position ``t`` predicts ``labels[:, t + 1]``; the labels are shifted
            here); ``False`` when hidden states and labels are aligned.
        min_weight: the weight floor ``b`` in [0, 1].
        label_smoothing: ε in [0, 1] (not re-weighted, as in the official code).
        ignore_index: the label value that is not a target (transformers uses -100).
        form: ``"weighted"`` (the paper's rule) or ``"closed"`` (Su's Eq. 2).
        chunk_size: tokens per chunk (≥ 1): the live logits are ``chunk_size × V`` elements.

    Raises:
        TypeError: ``output_layer`` without a floating-point ``weight``; bad hyperparameter types; labels not
            integer ids.
        ValueError: bad hyperparameters (at construction); outputs without hidden states; labels not of the
            hidden states' shape without the feature dimension; with ``causal=True`` and a token count given, a
            label at position 0 (set ``labels[:, 0] = -100`` in the collator, see :class:`TaiLrLossFunc`); the
            checks of :func:`~kexue.losses.chunked_tailr_loss`.

    Example:
        >>> import torch, transformers
        >>> cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        ...                                num_attention_heads=2, num_key_value_heads=2)
        >>> model = transformers.LlamaForCausalLM(cfg)
        >>> loss_func = ChunkedTaiLrLossFunc(model.get_output_embeddings(), gamma=0.0, chunk_size=4)
        >>> ids = torch.randint(0, 50, (2, 6))
        >>> labels = ids.clone()
        >>> labels[:, 0] = -100
        >>> outputs = model(input_ids=ids, output_hidden_states=True, logits_to_keep=1)
        >>> ref = model(input_ids=ids, labels=labels).loss  # the model's own (dense) cross entropy
        >>> torch.allclose(loss_func(outputs, labels), ref, atol=1e-6)
        True
    """

    def __init__(
        self,
        output_layer: nn.Module,
        *,
        gamma: float,
        causal: bool = True,
        min_weight: float = 0.0,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        form: Form = "weighted",
        chunk_size: int = 1024,
    ) -> None:
        weight = getattr(output_layer, "weight", None)
        if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.dim() != 2:
            raise TypeError(
                "output_layer must be the model's output projection (model.get_output_embeddings()), a module "
                f"with a floating-point (V, H) weight; got {type(output_layer).__name__}"
            )
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be True (causal LM) or False (aligned labels), got {causal!r}")
        # the dense hook validates the shared hyperparameters once, here, instead of at the first training step
        ref = TaiLrLossFunc(
            gamma=gamma, causal=causal, min_weight=min_weight, label_smoothing=label_smoothing,
            ignore_index=ignore_index, form=form,
        )  # fmt: skip
        check_int("chunk_size", chunk_size, low=1)
        self.output_layer = output_layer
        self.gamma, self.min_weight, self.label_smoothing = ref.gamma, ref.min_weight, ref.label_smoothing
        self.ignore_index, self.form, self.causal, self.chunk_size = ref.ignore_index, ref.form, causal, chunk_size

    def __call__(self, outputs: Any, labels: Tensor, num_items_in_batch: Tensor | int | None = None) -> Tensor:
        hidden = _last_hidden_of(outputs)
        if not isinstance(labels, Tensor):
            raise TypeError(f"labels must be a tensor, got {type(labels).__name__} (did the batch have 'labels'?)")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels must hold integer class (token) ids, got dtype {labels.dtype}")
        if tuple(labels.shape) != tuple(hidden.shape[:-1]):
            raise ValueError(
                f"labels must have shape {tuple(hidden.shape[:-1])} for hidden states of shape "
                f"{tuple(hidden.shape)}, got {tuple(labels.shape)}"
            )
        if self.causal:
            if labels.dim() < 2:
                raise ValueError(f"causal=True needs (B, L) labels, got shape {tuple(labels.shape)}")
            if num_items_in_batch is not None and bool((labels[:, 0] != self.ignore_index).any()):
                raise ValueError(
                    "causal=True: labels[:, 0] holds targets; no position predicts them, but the Trainer may count "
                    f"them in num_items_in_batch. Set labels[:, 0] = {self.ignore_index} in the data collator."
                )
            labels = F.pad(labels[:, 1:], (0, 1), value=self.ignore_index)
        layer = self.output_layer
        bias = getattr(layer, "bias", None)
        return chunked_tailr_loss(
            hidden,
            layer.weight,  # type: ignore[arg-type]
            labels.to(hidden.device),
            gamma=self.gamma,
            bias=bias if isinstance(bias, Tensor) else None,
            chunk_size=self.chunk_size,
            min_weight=self.min_weight,
            label_smoothing=self.label_smoothing,
            ignore_index=self.ignore_index,
            num_items_in_batch=num_items_in_batch,
            form=self.form,
        )

    def __repr__(self) -> str:
        return (
            f"ChunkedTaiLrLossFunc(gamma={self.gamma}, causal={self.causal}, min_weight={self.min_weight}, "
            f"label_smoothing={self.label_smoothing}, ignore_index={self.ignore_index}, form={self.form!r}, "
            f"chunk_size={self.chunk_size})"
        )


def hidden_states_collator(collator: Any = None) -> Any:
    """Wrap a data collator so that the model returns hidden states, not the full logits (for
    :class:`ChunkedTaiLrLossFunc`): every batch gets ``output_hidden_states=True`` and ``logits_to_keep=1``.

    Args:
        collator: the collator to wrap (a callable from a list of examples to a batch dict); ``None`` is
            transformers' ``default_data_collator``.

    Returns:
        A collator with the same batches plus the two keys.

    Raises:
        TypeError: ``collator`` is not callable.
    """
    if collator is None:
        from transformers import default_data_collator

        collator = default_data_collator
    if not callable(collator):
        raise TypeError(f"collator must be callable (examples -> batch dict), got {type(collator).__name__}")

    def collate(examples: Any) -> Any:
        batch = collator(examples)
        batch["output_hidden_states"] = True
        batch["logits_to_keep"] = 1
        return batch

    return collate
