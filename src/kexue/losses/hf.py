"""TaiLr as a Hugging Face ``Trainer(compute_loss_func=...)``: exact under gradient accumulation and across processes.

TaiLr: Su Jianlin, https://kexue.fm/archives/9526; Ji et al., ICLR 2023 (arXiv 2302.13344). The loss itself is
:func:`kexue.losses.tailr_loss`; this file only adapts it to the ``Trainer``'s loss hook. Nothing here imports
transformers: the hook is a plain callable ``(outputs, labels, num_items_in_batch=None) -> loss``.

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

from kexue._validate import check_float_tensor

from .tailr import Form, TaiLrLoss, _check_inputs, _tailr

__all__ = ["TaiLrLossFunc"]


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
