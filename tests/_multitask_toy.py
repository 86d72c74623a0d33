"""A toy multi-task model shared by the multi-task test files: shared trunk + one linear head per task."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ToyMTL(nn.Module):
    """Shared trunk + one linear head per task (float64 unless ``dtype`` says otherwise)."""

    def __init__(self, n_tasks: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh()).to(dtype)
        self.heads = nn.ModuleList([nn.Linear(5, 1).to(dtype) for _ in range(n_tasks)])

    def losses(self, x: Tensor, y: Tensor) -> list[Tensor]:
        h = self.trunk(x)
        return [((head(h).squeeze(-1) - y[:, i]) ** 2).mean() for i, head in enumerate(self.heads)]


def toy_data(n_tasks: int = 3, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(16, 4, generator=g, dtype=torch.float64)
    y = torch.randn(16, n_tasks, generator=g, dtype=torch.float64) + 2.0
    return x.to(dtype), y.to(dtype)


def flat(ts: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def strategy_kwargs(name: str, n: int = 3) -> dict:
    """Hyperparameters a registered strategy needs to be built for ``n`` tasks."""
    return {
        "fixed": {"weights": [float(i + 1) for i in range(n)]},
        "prior": {"prior": [1.0 + i for i in range(n)]},
    }.get(name, {})
