"""The one generic training loop: device, seeding, batching, DDP, progress, checkpoints and resume.

Progress goes to the ``kexue.train`` logger on rank 0: a line per epoch, and on long epochs a line every
:data:`HEARTBEAT_SECONDS` when no tqdm bar is drawn (off a terminal). See :mod:`kexue.train.progress` for where
those lines appear by default and how to silence them.

Every experiment trains through :func:`fit`. What differs between techniques lives in the ``step`` function it
is given (a SimSiam step, a VAT step, a multi-task step writing ``.grad`` itself), never in a copy of the loop.

Determinism: at the start of every epoch the global RNGs are reseeded from ``(seed, epoch, rank)`` and the batch
order comes from :class:`torch.utils.data.DistributedSampler` seeded with ``seed`` and the epoch. A run therefore
depends only on the model/optimizer state at the epoch boundary, which is exactly what a checkpoint stores: a run
killed after epoch ``e`` and resumed finishes with bit-identical metrics on CPU.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset, DistributedSampler

from .checkpoint import load_checkpoint, save_checkpoint
from .progress import install_default_handler, is_rank_zero
from .progress import logger as log

__all__ = ["FitResult", "StepFn", "TensorBatches", "default_device", "fit", "rank_and_world", "seed_all"]

# Off a terminal (no tqdm bar) an epoch longer than this also logs a line every this many seconds, so a log file
# or CI console shows the run is alive.
HEARTBEAT_SECONDS = 60.0

StepFn = Callable[[nn.Module, list[Tensor]], Mapping[str, Tensor]]

# Test hook for crash recovery: after the checkpoint of this epoch is written the process kills itself with
# SIGKILL, exactly like an out-of-memory kill or a pre-empted job. Never set outside tests.
CRASH_ENV = "KEXUE_TEST_CRASH_AFTER_EPOCH"


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all CUDA devices included)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _Indices(Dataset[int]):
    """A length-only dataset stand-in so :class:`DistributedSampler` can shard plain index ranges."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class TensorBatches:
    """Shuffled mini-batches of in-memory tensors, sharded across ranks by ``DistributedSampler``.

    Indexing whole tensors is ~100x faster than a ``DataLoader`` over a ``TensorDataset`` for the small
    datasets used here. Each rank sees ``ceil(N / world)`` examples per epoch (padded by repetition, as
    ``DistributedSampler`` does), in a permutation that depends only on ``seed`` and the epoch.

    Args:
        tensors: tensors sharing their first dimension ``N``.
        batch_size: per-rank batch size.
        seed: shuffle seed.
        shuffle: shuffle each epoch.
        drop_last: drop a last incomplete batch.
    """

    def __init__(
        self,
        tensors: Sequence[Tensor],
        *,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        if not tensors:
            raise ValueError("tensors must hold at least one tensor")
        n = tensors[0].shape[0]
        for i, t in enumerate(tensors):
            if t.shape[0] != n:
                raise ValueError(f"tensors[{i}] has {t.shape[0]} rows, tensors[0] has {n}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = list(tensors)
        self.batch_size = batch_size
        self.drop_last = drop_last
        rank, world = rank_and_world()
        self.sampler: DistributedSampler[int] = DistributedSampler(
            _Indices(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
        )
        per_rank = len(self.sampler)
        if drop_last and per_rank < batch_size:
            raise ValueError(
                f"batch_size={batch_size} exceeds the {per_rank} examples each of {world} rank(s) sees, "
                "and drop_last=True would leave no batch"
            )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Any:
        idx = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
        for b in range(len(self)):
            sel = idx[b * self.batch_size : (b + 1) * self.batch_size]
            yield [t[sel.to(t.device)] for t in self.tensors]


@dataclass
class FitResult:
    """What :func:`fit` returns: the per-epoch history (a dict of floats each) and the trained model."""

    history: list[dict[str, float]] = field(default_factory=list)
    model: nn.Module | None = None
    resumed_from_epoch: int = 0

    def last(self, key: str) -> float:
        return self.history[-1][key]


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _default_step(model: nn.Module, batch: list[Tensor]) -> Mapping[str, Tensor]:
    out = model(*batch)
    if not isinstance(out, Mapping) or "loss" not in out:
        raise TypeError(
            f"with no step function, model(*batch) must return a mapping with a 'loss' entry, got {type(out).__name__}"
        )
    return out


def fit(
    model: nn.Module,
    data: Sequence[Tensor] | TensorBatches,
    *,
    epochs: int,
    optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    batch_size: int = 128,
    step: StepFn | None = None,
    scheduler: Callable[[torch.optim.Optimizer, int], Any] | None = None,
    evaluate: Callable[[nn.Module], Mapping[str, float]] | None = None,
    after_step: Callable[[nn.Module, int], None] | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    seed: int = 0,
    device: torch.device | str | None = None,
    manual_backward: bool = False,
    grad_clip: float | None = None,
    drop_last: bool = True,
    name: str = "train",
    progress: bool | None = None,
) -> FitResult:
    """Train ``model`` for ``epochs`` epochs and return its per-epoch history.

    Args:
        model: the module (moved to ``device``; wrapped in DDP when a process group with more than one rank is
            initialised, e.g. under ``torchrun``).
        data: tensors sharing their first dimension (moved to ``device`` once), or a prepared
            :class:`TensorBatches`.
        epochs: number of passes over the data.
        optimizer: builds the optimizer from the (unwrapped) model, e.g. ``lambda m: torch.optim.Adam(...)``.
        batch_size: per-rank batch size when ``data`` is tensors.
        step: ``step(model, batch) -> {"loss": tensor, other scalars...}``; every scalar entry is averaged into
            the epoch's history. Under DDP the step must call ``model(...)`` (the wrapper) for gradients to be
            averaged. Default: ``model(*batch)``, which must return such a mapping.
        scheduler: ``scheduler(optimizer, total_steps)`` returning an LR scheduler stepped once per batch.
        evaluate: ``evaluate(model) -> {name: float}`` run (on every rank) after each epoch, in eval mode.
        after_step: called as ``after_step(model, global_step)`` after each optimizer step (EMA updates).
        checkpoint: file for the end-of-epoch checkpoint (written atomically by rank 0).
        resume: continue from ``checkpoint`` if it exists; a finished run returns its stored history at once.
        seed: seeds initialisation-independent randomness: batch order and the per-epoch RNG streams.
        device: defaults to CUDA when available, else CPU.
        manual_backward: the step has already written ``.grad`` (gradient-surgery methods); the loop then only
            clips and steps.
        grad_clip: clip the global gradient norm to this value.
        drop_last: drop the last incomplete batch.
        name: label for progress and log lines.
        progress: show a tqdm bar; default when stderr is a terminal (plain log lines otherwise). Bars and log
            lines come from rank 0 only; log lines go to the ``kexue.train`` logger (see
            :mod:`kexue.train.progress`).

    Returns:
        :class:`FitResult` with one dict per epoch: the mean of each step output, ``lr``, ``seconds`` and the
        ``evaluate`` metrics.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    dev = torch.device(device) if device is not None else default_device()
    rank, world = rank_and_world()
    is_main = rank == 0
    # Reporting follows torchrun's $RANK too, so ranks without a process group stay quiet as well.
    report = is_rank_zero()
    install_default_handler()
    model.to(dev)
    if isinstance(data, TensorBatches):
        batches = data
        batches.tensors = [t.to(dev) for t in batches.tensors]
    else:
        batches = TensorBatches(
            [t.to(dev) for t in data], batch_size=batch_size, seed=seed, shuffle=True, drop_last=drop_last
        )
    opt = optimizer(model)
    sched = scheduler(opt, epochs * len(batches)) if scheduler is not None else None
    wrapped: nn.Module = model
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    step_fn = step or _default_step

    result = FitResult(model=model)
    start = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt is not None and ckpt.is_file():
        state = load_checkpoint(ckpt, map_location=dev)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        result.history = list(state["history"])
        start = int(state["epoch"])
        result.resumed_from_epoch = start
        if report:
            log.info(f"[{name}] resumed from {ckpt} after epoch {start}/{epochs}")

    show = report and (progress if progress is not None else sys.stderr.isatty())
    heartbeat = report and not show
    global_step = start * len(batches)
    for epoch in range(start, epochs):
        seed_all(seed * 1_000_003 + epoch * 1009 + rank)
        batches.set_epoch(epoch)
        wrapped.train()
        sums: dict[str, float] = {}
        count = 0
        t0 = time.perf_counter()
        bar = _progress(len(batches), f"{name} {epoch + 1}/{epochs}", show)
        last_beat = t0
        for batch in batches:
            opt.zero_grad(set_to_none=True)
            out = step_fn(wrapped, batch)
            loss = out["loss"]
            if not torch.isfinite(loss.detach()).all():
                raise FloatingPointError(f"[{name}] non-finite loss {loss.item()} at epoch {epoch + 1}")
            if not manual_backward:
                loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            if sched is not None:
                sched.step()
            global_step += 1
            if after_step is not None:
                after_step(model, global_step)
            for k, v in out.items():
                if isinstance(v, Tensor) and v.numel() == 1:
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
            count += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
            elif heartbeat and (now := time.perf_counter()) - last_beat >= HEARTBEAT_SECONDS:
                # Only when the interval has passed: float(loss) synchronises with the device.
                last_beat = now
                log.info(
                    f"[{name}] epoch {epoch + 1}/{epochs} step {count}/{len(batches)} loss={float(loss.detach()):.4g}"
                )
        if bar is not None:
            bar.close()
        row = {k: v / max(count, 1) for k, v in sums.items()}
        row["lr"] = float(opt.param_groups[0]["lr"])
        row["seconds"] = time.perf_counter() - t0
        if evaluate is not None:
            model.eval()
            with torch.no_grad():
                row.update({k: float(v) for k, v in evaluate(model).items()})
            model.train()
        row["epoch"] = float(epoch + 1)
        result.history.append(row)
        if report:
            shown = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("epoch", "seconds"))
            log.info(f"[{name}] epoch {epoch + 1}/{epochs} {shown} ({row['seconds']:.1f}s)")
        if ckpt is not None and is_main:
            save_checkpoint(
                ckpt,
                {
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "history": result.history,
                },
            )
            if os.environ.get(CRASH_ENV) == str(epoch + 1):
                os.kill(os.getpid(), signal.SIGKILL)
        if world > 1:
            dist.barrier()
    return result
