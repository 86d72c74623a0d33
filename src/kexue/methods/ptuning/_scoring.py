"""Shared pieces of the two forward paths: the LM trunk and the verbalizer scores read at the label slot."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["head_name", "identity", "slot_scores", "trunk"]

Project = Callable[[Tensor], Tensor]


def identity(x: Tensor) -> Tensor:
    return x


def head_name(lm: nn.Module) -> str | None:
    """The attribute holding the vocabulary head (``lm_head``, BERT's ``cls``) when the model also exposes a
    separate ``base_model``; ``None`` otherwise (the full forward is used)."""
    base = getattr(lm, "base_model", None)
    if base is None or base is lm:
        return None
    for name in ("lm_head", "cls"):
        if isinstance(getattr(lm, name, None), nn.Module):
            return name
    return None


def trunk(lm: Any, head: str | None, embeds: Tensor, attention_mask: Tensor) -> tuple[Tensor, Project]:
    """``(features (N, L, F), project)`` with ``project(features) = logits``.

    With a known head the features are the last hidden states and ``project`` is the head, so callers project
    only the positions they need (the vocabulary projection costs as much as a small encoder's body); otherwise the
    features are the full logits and ``project`` is the identity (same numbers, tested).
    """
    if head is not None:
        hidden = lm.base_model(inputs_embeds=embeds, attention_mask=attention_mask)[0]
        return hidden, getattr(lm, head)
    return lm(inputs_embeds=embeds, attention_mask=attention_mask).logits, identity


def slot_scores(features: Tensor, project: Project, slot_pos: Tensor, label_ids: Tensor, G: int) -> Tensor:
    """Class scores ``(B, C)``: log p(label word) under the full-vocabulary softmax at the slot.

    Args:
        features: ``(N, L, F)`` with ``N = B * G`` (hidden states, or logits with ``project`` the identity).
        project: features -> logits.
        slot_pos: ``(N, S)`` slot positions, ``-1`` padded.
        label_ids: ``(C, W)`` label-word ids, ``-1`` padded.
        G: sequences per example (1, or C for multi-token words: row ``b * C + c`` holds class ``c``'s word).

    Returns:
        ``(B, C)`` in ``features``' dtype; multi-token words sum their tokens' log-probabilities.
    """
    N = features.shape[0]
    C = label_ids.shape[0]
    safe = slot_pos.clamp(min=0)  # (N, S)
    at_slot = features.gather(1, safe.unsqueeze(-1).expand(-1, -1, features.shape[-1]))  # (N, S, F)
    logits = project(at_slot)  # (N, S, V)
    # log-softmax in at least float32 (half-precision LMs), float64 stays float64
    logp = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)
    if G == 1:
        # single-token words: every class's score read from the one slot
        return logp[:, 0, :].index_select(-1, label_ids[:, 0]).reshape(N, C).to(features.dtype)
    tgt = label_ids.repeat(N // C, 1)  # (N, W): row b * C + c holds class c's word
    S = min(tgt.shape[1], logp.shape[1])
    tok_lp = logp[:, :S].gather(-1, tgt[:, :S].clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (N, S)
    valid = (tgt[:, :S] >= 0) & (slot_pos[:, :S] >= 0)
    return (tok_lp * valid).sum(-1).reshape(N // C, C).to(features.dtype)
