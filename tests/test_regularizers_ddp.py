"""kexue.regularizers under DistributedDataParallel: 2 gloo processes on CPU give the single-process gradients.

Every regulariser runs extra forward passes (clean pass, probes, ascent steps); only the last may prepare DDP's
gradient all-reduce, the others run in ``model.no_sync()``. Rank r holds half of the batch; with per-sample
losses averaged over the batch, DDP's averaged gradient is the single-process gradient on the concatenated batch.
"""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

from kexue.regularizers import fgm_loss, gradient_penalty_loss, noisy_loss, pgd_loss, vat_loss

D64 = torch.float64
Fn = Callable[[nn.Module, Tensor, Tensor, int], Tensor]

# Deterministic per-sample regularisers: the concatenated batch is the reference.
EXACT: dict[str, Fn] = {
    "fgm": lambda m, x, y, _: fgm_loss(m, x, y, eps=0.3),
    "fgm_hidden": lambda m, x, y, _: fgm_loss(m, x, y, eps=0.3, site="1"),
    "pgd": lambda m, x, y, _: pgd_loss(m, x, y, eps=0.3, steps=3),
    "gp": lambda m, x, y, _: gradient_penalty_loss(m, x, y, form="norm", scope="per_sample"),
    "gp_fd": lambda m, x, y, _: gradient_penalty_loss(
        m, x, y, form="norm", scope="per_sample", method="finite_difference", fd_step=1e-7
    ),
    "gp_fd_hidden": lambda m, x, y, _: gradient_penalty_loss(
        m, x, y, site="1", form="norm", scope="per_sample", method="finite_difference", fd_step=1e-7
    ),
}
# Random starts / noise drawn per shard: the reference is the mean of the two shards' single-process gradients
# with the same seeds.
PER_SHARD: dict[str, Fn] = {
    "vat": lambda m, x, _y, r: vat_loss(m, x, eps=0.5, n_power=2, generator=torch.Generator().manual_seed(r)),
    "noisy": lambda m, x, y, r: noisy_loss(m, x, y, sigma=0.1, k=2, generator=torch.Generator().manual_seed(r)),
}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(D64)


def _data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 5, dtype=D64, generator=g), torch.randint(0, 3, (8,), generator=g)


def _grads(model: nn.Module) -> list[Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]  # type: ignore[union-attr]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        x, y = _data()
        half = slice(4 * rank, 4 * rank + 4)
        results: dict[str, object] = {}
        for name, fn in {**EXACT, **PER_SHARD}.items():
            for unused in (False, True):
                model = _model()
                ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=unused)
                for _ in range(2):  # a second step catches reducer state left behind by the first
                    model.zero_grad()
                    fn(ddp, x[half], y[half], rank).backward()
                results[f"{name}-{unused}"] = _grads(model)
        ddp = nn.parallel.DistributedDataParallel(_model(), static_graph=True)
        try:
            fgm_loss(ddp, x[half], y[half], eps=0.3)
            results["static_graph"] = "accepted"
        except ValueError as e:
            results["static_graph"] = str(e)
        if rank == 0:
            torch.save(results, Path(out) / "ddp.pt")
        # Free the DDP wrappers while the process group is alive (a Reducer destroyed after
        # destroy_process_group can deadlock the exit on the GIL inside gloo's teardown).
        del ddp, model
        gc.collect()
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_equal_single_process_gradients(tmp_path: Path) -> None:
    # spawn, not fork: a forked child can inherit a held OpenMP/intra-op thread-pool lock and hang.
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    got = torch.load(tmp_path / "ddp.pt")
    x, y = _data()
    for name, fn in EXACT.items():
        model = _model()
        fn(model, x, y, 0).backward()
        for unused in (False, True):
            for g, want in zip(got[f"{name}-{unused}"], _grads(model)):
                torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-9, msg=f"{name} find_unused={unused}")
    for name, fn in PER_SHARD.items():
        shards = []
        for r in range(2):
            model = _model()
            fn(model, x[4 * r : 4 * r + 4], y[4 * r : 4 * r + 4], r).backward()
            shards.append(_grads(model))
        for unused in (False, True):
            for g, a, b in zip(got[f"{name}-{unused}"], *shards):
                torch.testing.assert_close(g, (a + b) / 2, msg=f"{name} find_unused={unused}")
    assert "(static_graph=True) is not supported" in str(got["static_graph"])
