"""The generic loop: batching, determinism, kill-and-resume, and DDP with 2 gloo processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DistributedSampler

from kexue.train import TensorBatches, fit, load_checkpoint, save_checkpoint
from kexue.train.loop import CRASH_ENV


def _regression_data(n: int = 64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    y = x @ torch.arange(1.0, 6.0) + 0.1 * torch.randn(n, generator=g)
    return [x, y]


def _mse_step(model: nn.Module, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    x, y = batch
    return {"loss": ((model(x).squeeze(-1) - y) ** 2).mean()}


def test_tensor_batches_cover_every_row_once_per_epoch() -> None:
    x = torch.arange(103)
    tb = TensorBatches([x, x * 2], batch_size=10, seed=3)
    seen = torch.cat([b[0] for b in tb])
    assert len(tb) == 11 and sorted(seen.tolist()) == list(range(103))
    assert all(torch.equal(b[1], b[0] * 2) for b in tb)
    first = torch.cat([b[0] for b in tb])
    tb.set_epoch(1)
    assert not torch.equal(first, torch.cat([b[0] for b in tb]))  # reshuffled each epoch
    with pytest.raises(ValueError, match="rows"):
        TensorBatches([x, x[:5]], batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        TensorBatches([x], batch_size=0)


def test_fit_is_deterministic_and_learns() -> None:
    def once() -> list[dict[str, float]]:
        torch.manual_seed(0)
        model = nn.Linear(5, 1)
        res = fit(
            model,
            _regression_data(),
            epochs=4,
            batch_size=16,
            optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.05),
            step=_mse_step,
            device="cpu",
        )
        return [{k: v for k, v in h.items() if k != "seconds"} for h in res.history]

    a, b = once(), once()
    assert a == b
    assert a[-1]["loss"] < 0.1 * a[0]["loss"]


def test_fit_rejects_a_non_finite_loss() -> None:
    def bad(model: nn.Module, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": model(batch[0]).sum() * float("nan")}

    with pytest.raises(FloatingPointError, match="non-finite loss"):
        fit(
            nn.Linear(5, 1),
            _regression_data(),
            epochs=1,
            batch_size=16,
            optimizer=lambda m: torch.optim.SGD(m.parameters(), 0.1),
            step=bad,
            device="cpu",
        )


def test_checkpoint_is_atomic(tmp_path: Path) -> None:
    p = tmp_path / "c.pt"
    save_checkpoint(p, {"a": torch.ones(3)})
    save_checkpoint(p, {"a": torch.zeros(3)})
    assert torch.equal(load_checkpoint(p)["a"], torch.zeros(3))
    assert [f.name for f in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind
    p.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="cannot read checkpoint"):
        load_checkpoint(p)


def _strip_timing(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if k not in ("seconds", "wall_seconds")}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kexue.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        check=False,
    )


def test_killed_run_resumes_to_identical_metrics(tmp_path: Path) -> None:
    """SIGKILL after epoch 1's checkpoint, restart with --resume: the same metrics as an uninterrupted run."""
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    args = ["run", "mnist_baseline", "--preset", "smoke", "--set", "epochs=3"]
    ok = _cli([*args, "--out", str(full)])
    assert ok.returncode == 0, ok.stderr
    killed = _cli([*args, "--out", str(crashed)], env={CRASH_ENV: "1"})
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    assert not (crashed / "metrics.json").exists()
    assert load_checkpoint(crashed / "checkpoints" / "cnn.pt")["epoch"] == 1
    resumed = _cli([*args, "--out", str(crashed), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in (crashed / "log.txt").read_text()
    m_full = json.loads((full / "metrics.json").read_text())
    m_res = json.loads((crashed / "metrics.json").read_text())
    assert len(m_res["history"]) == 3
    assert _strip_timing(m_res) == _strip_timing(m_full)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = nn.Linear(5, 1)
        fit(
            model,
            _regression_data(),
            epochs=2,
            batch_size=8,
            optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.05),
            step=_mse_step,
            seed=7,
            device="cpu",
        )
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_equal_single_process_on_the_concatenated_batch(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    for k in r0:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0)  # replicas stay identical

    # Reference: one process, each step on the union of both ranks' shards (DDP averages the two means).
    x, y = _regression_data()
    torch.manual_seed(0)
    ref = nn.Linear(5, 1)
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    samplers = [DistributedSampler(range(64), num_replicas=2, rank=r, shuffle=True, seed=7) for r in (0, 1)]
    for epoch in range(2):
        shards = []
        for s in samplers:
            s.set_epoch(epoch)
            shards.append(torch.tensor(list(iter(s))))
        for b in range(len(shards[0]) // 8):
            opt.zero_grad()
            losses = [_mse_step(ref, [x[sh[b * 8 : (b + 1) * 8]], y[sh[b * 8 : (b + 1) * 8]]])["loss"] for sh in shards]
            (sum(losses) / 2).backward()
            opt.step()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(r0[k], v, rtol=1e-5, atol=1e-6)


def test_cli_runs_unchanged_under_torchrun(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port",
            str(_free_port()),
            "-m",
            "kexue.cli",
            "run",
            "mnist_baseline",
            "--preset",
            "smoke",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = json.loads((out / "env.json").read_text())
    assert env["world_size"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
