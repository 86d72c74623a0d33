"""Frozen-feature evaluators for self-supervised encoders: weighted kNN and a linear probe."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["knn_accuracy", "linear_probe_accuracy"]


def _check(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor) -> None:
    if train_x.dim() != 2 or test_x.dim() != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"features must be (N, D) with equal D, got {tuple(train_x.shape)} and {tuple(test_x.shape)}")
    if train_y.shape != (train_x.shape[0],) or test_y.shape != (test_x.shape[0],):
        raise ValueError("labels must be (N,) and match the number of feature rows")


@torch.no_grad()
def knn_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> float:
    """Weighted kNN accuracy on cosine similarity (Wu et al. 2018, as used by SimSiam/BYOL codebases).

    Each test point votes with its ``k`` most similar training points, weighted by ``exp(sim / temperature)``.

    Args:
        train_x: ``(N, D)`` features; train_y: ``(N,)`` labels; test_x: ``(M, D)``; test_y: ``(M,)``.
    """
    _check(train_x, train_y, test_x, test_y)
    if k < 1 or k > train_x.shape[0]:
        raise ValueError(f"k must be in [1, {train_x.shape[0]}], got {k}")
    c = num_classes or int(max(train_y.max(), test_y.max())) + 1
    tr = F.normalize(train_x.float(), dim=1)
    te = F.normalize(test_x.float(), dim=1)
    correct = 0
    for i in range(0, te.shape[0], chunk):
        sim = te[i : i + chunk] @ tr.T  # (m, N)
        w, idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], c, dtype=tr.dtype, device=tr.device)
        votes.scatter_add_(1, train_y.to(tr.device)[idx], (w / temperature).exp())
        correct += int((votes.argmax(1) == test_y[i : i + chunk].to(tr.device)).sum())
    return correct / te.shape[0]


def linear_probe_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    epochs: int = 100,
    lr: float = 0.1,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> float:
    """Accuracy of a logistic-regression probe trained full-batch (L-BFGS-free: Adam on standardised features).

    Features are standardised with the training statistics; the probe is trained on ``train_*`` only.
    """
    _check(train_x, train_y, test_x, test_y)
    g = torch.Generator().manual_seed(seed)
    mu, sd = train_x.mean(0, keepdim=True), train_x.std(0, keepdim=True).clamp(min=1e-6)
    tr = ((train_x - mu) / sd).float()
    te = ((test_x - mu) / sd).float()
    c = int(max(train_y.max(), test_y.max())) + 1
    w = (torch.randn(tr.shape[1], c, generator=g) * 0.01).requires_grad_()
    b = torch.zeros(c, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad()
            F.cross_entropy(tr @ w + b, train_y).backward()
            opt.step()
    with torch.no_grad():
        return float(((te @ w + b).argmax(1) == test_y).float().mean())
