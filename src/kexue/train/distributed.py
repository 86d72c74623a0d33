"""Process-group set-up for runs launched with ``torchrun`` (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist

__all__ = ["init_from_env", "is_main_process", "shutdown"]


def init_from_env() -> bool:
    """Initialise the default process group when ``torchrun`` set ``WORLD_SIZE`` > 1; return whether it did.

    The backend is NCCL when CUDA is available (each rank takes ``cuda:LOCAL_RANK``), else gloo.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def is_main_process() -> bool:
    """True on rank 0, or when not distributed."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def shutdown() -> None:
    """Destroy the default process group if one exists.

    Unreferenced ``DistributedDataParallel`` wrappers are collected first: a DDP reducer that is freed only after
    the group is destroyed tears the gloo group down while holding the GIL, which can deadlock the process exit.
    Drop your own references to DDP models before calling this.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
