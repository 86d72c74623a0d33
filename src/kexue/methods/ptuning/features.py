"""Mean-pooled frozen-LM features: the linear-probe baseline of the P-tuning experiment."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kexue._validate import check_int

__all__ = ["extract_features"]


@torch.no_grad()
def extract_features(
    model: nn.Module, tokenizer: Any, texts: list[str], *, max_length: int = 128, batch_size: int = 32
) -> Tensor:
    """Mean-pooled last hidden states of a transformers LM over the real tokens: ``(N, H)`` float32 (CPU).

    The linear-probe baseline's features (the LM frozen). Masked LMs get ``[CLS] ... [SEP]``.

    Raises:
        TypeError: ``texts`` is a single string (not a list of them); ``max_length`` or ``batch_size`` not an int.
        ValueError: ``max_length`` or ``batch_size`` below 1, no texts.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, got a single str")
    check_int("max_length", max_length, low=1)
    check_int("batch_size", batch_size, low=1)
    if len(texts) == 0:
        raise ValueError("texts is empty: no features to extract")
    base = getattr(model, "base_model", model)
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[i : i + batch_size],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        h = base(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev))[0]
        m = enc["attention_mask"].to(dev).unsqueeze(-1).to(h.dtype)
        out.append(((h * m).sum(1) / m.sum(1)).float().cpu())
    model.train(was)
    return torch.cat(out)
