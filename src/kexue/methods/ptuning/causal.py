"""The causal-LM forward of :class:`~kexue.methods.PTuning`: label word read from the position before the slot.

Su's auxiliary loss for GPT (https://kexue.fm/archives/8295, ``bojone/P-tuning/gpt.py``): next-token
cross-entropy on every real, non-prompt token of the sequence, computed from the same forward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ._scoring import identity, slot_scores, trunk

if TYPE_CHECKING:
    from .model import PTuning

__all__ = ["causal_forward", "next_token_loss"]


def causal_forward(
    pt: PTuning, ids: Tensor, mask: Tensor, pidx: Tensor, spos: Tensor, *, G: int, aux_labels: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """``(class scores (B, C), aux LM loss or None)`` for ``(N, L)`` inputs, ``N = B * G``.

    ``aux_labels`` (the class labels ``(B,)``) switches the auxiliary loss on; with ``G > 1`` it picks the
    sequence that holds the true label word.
    """
    features, project = trunk(pt.lm, pt.head_name, pt.embed(ids, pidx), mask)
    if aux_labels is None:
        # the vocabulary projection only at the slot positions
        return slot_scores(features, project, spos, pt.label_ids, G), None
    # the LM loss needs the projection everywhere: do it once and read the slot scores from it
    logits = project(features)  # (N, L, V)
    scores = slot_scores(logits, identity, spos, pt.label_ids, G)
    return scores, next_token_loss(logits, ids, mask, pidx, aux_labels, G)


def next_token_loss(logits: Tensor, ids: Tensor, mask: Tensor, pidx: Tensor, labels: Tensor, G: int) -> Tensor:
    """Mean next-token loss on every real, non-prompt token after the first (the true class's sequence).

    Args:
        logits: ``(N, L, V)``; ids, mask, pidx: ``(N, L)``; labels: ``(B,)``; ``N = B * G``.
    """
    if G > 1:
        rows = torch.arange(labels.shape[0], device=ids.device) * G + labels
        logits, ids, mask, pidx = logits[rows], ids[rows], mask[rows], pidx[rows]
    # shift the targets, not the logits: position t predicts token t + 1 (no copy of the (N, L, V) tensor)
    tgt = ids.masked_fill((mask == 0) | (pidx >= 0), -100).roll(-1, dims=1)
    tgt[:, -1] = -100
    if not bool((tgt >= 0).any()):
        return logits.new_zeros((), dtype=torch.float32)
    work = torch.promote_types(logits.dtype, torch.float32)
    return F.cross_entropy(logits.to(work).reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100)
