"""DDP helpers: averaging statistics and per-task gradients across ranks (a no-op in a single process)."""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Number of ranks of the default process group, 1 when ``torch.distributed`` is not initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_mean_(t: Tensor) -> Tensor:
    """Average ``t`` in place across ranks and return it (unchanged in a single process)."""
    world = world_size()
    if world > 1:
        dist.all_reduce(t)
        t /= world
    return t
