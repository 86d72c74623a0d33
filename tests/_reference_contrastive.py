"""Naive per-anchor references for InfoNCE / FlatNCE, written straight from https://kexue.fm/archives/8586.

Every anchor is handled in a Python loop: its candidate scores s_i = cos(anchor, c_i) / tau are listed one by
one, then InfoNCE = log sum_i e^{s_i} - s_t, stable InfoNCE = log(1 + xi), FlatNCE = log xi with
xi = sum_{i != t} e^{s_i - s_t}.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def candidates(
    query: Tensor, key: Tensor, negatives: Tensor | None, symmetric: bool, normalize: bool = True
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """For each anchor: (anchor, positive, stacked negatives), in SimCLR order (query rows, then key rows)."""
    if normalize:
        query = query / query.norm(dim=1, keepdim=True)
        key = key / key.norm(dim=1, keepdim=True)
        if negatives is not None:
            negatives = negatives / negatives.norm(dim=1, keepdim=True)
    b = query.shape[0]
    out = []
    views = [(query, key)] + ([(key, query)] if symmetric else [])
    for a_view, p_view in views:
        for i in range(b):
            negs = [key[j] for j in range(b) if j != i]
            if symmetric:
                negs += [query[j] for j in range(b) if j != i]
            if negatives is not None:
                negs += list(negatives)
            out.append((a_view[i], p_view[i], torch.stack(negs)))
    return out


def per_anchor(
    query: Tensor,
    key: Tensor,
    *,
    temperature: float,
    negatives: Tensor | None = None,
    symmetric: bool = False,
    kind: str = "plain",
    normalize: bool = True,
) -> Tensor:
    losses = []
    for a, p, negs in candidates(query, key, negatives, symmetric, normalize):
        s_t = (a * p).sum() / temperature
        s_neg = torch.stack([(a * n).sum() / temperature for n in negs])
        if kind == "plain":  # log sum_i e^{s_i} - s_t, positive included
            losses.append(torch.log(torch.exp(s_t) + torch.exp(s_neg).sum()) - s_t)
        else:
            xi = torch.exp(s_neg - s_t).sum()
            losses.append(torch.log1p(xi) if kind == "stable" else torch.log(xi))
    return torch.stack(losses)


def xi_over_sg_xi(logits: Tensor, target: Tensor) -> Tensor:
    """The paper's FlatNCE form: xi / detach(xi) per row (value 1), xi formed explicitly."""
    rows = []
    for r in range(logits.shape[0]):
        t = int(target[r])
        xi = sum(torch.exp(logits[r, i] - logits[r, t]) for i in range(logits.shape[1]) if i != t)
        rows.append(xi / xi.detach())  # type: ignore[union-attr]
    return torch.stack(rows)


def log_sum_neg_minus_pos(logits: Tensor, target: Tensor) -> Tensor:
    """log sum_{i != t} e^{s_i - s_t} per row, by a loop."""
    rows = []
    for r in range(logits.shape[0]):
        t = int(target[r])
        terms = [torch.exp(logits[r, i] - logits[r, t]) for i in range(logits.shape[1]) if i != t]
        rows.append(torch.log(torch.stack(terms).sum()))
    return torch.stack(rows)


def spec_example(k: int, tau: float, *, dim: int = 128, cos_pos: float = 0.98, seed: int = 0) -> tuple[Tensor, ...]:
    """The spec's numpy check: unit anchor, positive at cosine ``cos_pos``, K-1 random negatives (float64)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(dim, generator=g, dtype=torch.float64)
    x = x / x.norm()
    u = torch.randn(dim, generator=g, dtype=torch.float64)
    u = u - (u @ x) * x
    u = u / u.norm()
    pos = cos_pos * x + math.sqrt(1 - cos_pos**2) * u
    negs = torch.randn(k - 1, dim, generator=g, dtype=torch.float64)
    negs = negs / negs.norm(dim=1, keepdim=True)
    return x, pos, negs
