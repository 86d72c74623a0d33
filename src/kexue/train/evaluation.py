"""Evaluation helpers shared by experiments: batched prediction and accuracy."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["accuracy", "predict_logits"]


@torch.no_grad()
def predict_logits(
    model: nn.Module | Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> Tensor:
    """Run ``model`` over ``x`` in batches (in eval mode when it is a module) and return the outputs on CPU.

    Args:
        model: maps a batch ``(b, ...)`` to outputs ``(b, ...)``.
        x: inputs ``(N, ...)``.
        batch_size: rows per forward pass.
        device: where to run; defaults to the model's first parameter's device, else CPU.
    """
    was_training = None
    if isinstance(model, nn.Module):
        was_training = model.training
        model.eval()
        if device is None:
            p = next(model.parameters(), None)
            device = p.device if p is not None else "cpu"
    dev = torch.device(device or "cpu")
    outs = [model(x[i : i + batch_size].to(dev)).float().cpu() for i in range(0, x.shape[0], batch_size)]
    if isinstance(model, nn.Module) and was_training:
        model.train()
    return torch.cat(outs)


def accuracy(logits: Tensor, target: Tensor) -> float:
    """Top-1 accuracy of ``logits (N, C)`` against ``target (N,)``."""
    if logits.shape[0] != target.shape[0]:
        raise ValueError(f"logits has {logits.shape[0]} rows, target has {target.shape[0]}")
    return float((logits.argmax(-1) == target.to(logits.device)).float().mean())
