"""The generic loop: batching, determinism, kill-and-resume, DDP with 2 gloo processes, logging and progress."""

from __future__ import annotations

import io
import json
import logging
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

from kexue.train import CellProgress, TensorBatches, fit, load_checkpoint, save_checkpoint
from kexue.train import loop as loop_module
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
    assert (crashed / ".lock").exists()  # the killed run could not remove its lock file; the kernel freed the lock
    resumed = _cli([*args, "--out", str(crashed), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in (crashed / "log.txt").read_text()
    assert not (crashed / ".lock").exists()
    m_full = json.loads((full / "metrics.json").read_text())
    m_res = json.loads((crashed / "metrics.json").read_text())
    assert len(m_res["history"]) == 3
    assert _strip_timing(m_res) == _strip_timing(m_full)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _ddp_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    records = _Records()
    logger = logging.getLogger("kexue.train")
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
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
        Path(f"{out}/rank{rank}.log").write_text("".join(r.getMessage() + "\n" for r in records.records))
    finally:
        logger.removeHandler(records)
        dist.destroy_process_group()


def test_ddp_two_processes_equal_single_process_on_the_concatenated_batch(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert "epoch 2/2" in (tmp_path / "rank0.log").read_text()
    assert (tmp_path / "rank1.log").read_text() == ""  # only rank 0 reports progress
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


# --- logging and progress -----------------------------------------------------------------------------------------


def _fit_quietly(epochs: int = 2, **kw: object) -> None:
    fit(
        nn.Linear(5, 1),
        _regression_data(),
        epochs=epochs,
        batch_size=16,
        optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.05),
        step=_mse_step,
        device="cpu",
        name="reg",
        **kw,  # type: ignore[arg-type]
    )


def test_fit_logs_each_epoch_through_the_kexue_train_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kexue")
    _fit_quietly()
    lines = [r.getMessage() for r in caplog.records if r.name == "kexue.train"]
    assert len(lines) == 2 and lines[0].startswith("[reg] epoch 1/2 loss=") and "epoch 2/2" in lines[1]


def test_a_non_zero_rank_logs_nothing(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG, logger="kexue")
    monkeypatch.setenv("RANK", "1")  # what torchrun sets, before or without a process group
    _fit_quietly()
    progress = CellProgress(2, name="cells")
    with progress.cell("a"):
        pass
    assert [r.getMessage() for r in caplog.records if r.name.startswith("kexue")] == []


def test_fit_heartbeat_within_a_long_epoch(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="kexue")
    monkeypatch.setattr(loop_module, "HEARTBEAT_SECONDS", 0.0)  # every step counts as "long"
    _fit_quietly(epochs=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "kexue.train"]
    assert "[reg] epoch 1/1 step 1/4 loss=" in lines[0] and len(lines) == 5


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tqdm_bar_only_on_a_terminal_and_only_on_rank_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    for tty, rank, bar in ((False, "0", False), (True, "0", True), (True, "1", False)):
        stream = _Tty() if tty else io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        monkeypatch.setenv("RANK", rank)
        _fit_quietly(epochs=1)
        assert ("reg 1/1" in stream.getvalue()) == bar, (tty, rank, stream.getvalue())


_USER_SCRIPT = """
import logging, sys, torch
from torch import nn
from kexue.train import fit

def step(model, batch):
    x, y = batch
    return {"loss": ((model(x).squeeze(-1) - y) ** 2).mean()}

def train():
    x = torch.randn(32, 5)
    fit(nn.Linear(5, 1), [x, x.sum(1)], epochs=2, batch_size=16, step=step, device="cpu", name="user",
        optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.01))

train()
print("--- basicConfig", file=sys.stderr, flush=True)
logging.basicConfig(level=logging.INFO, format="ROOT %(name)s %(message)s")
train()
print("--- silenced", file=sys.stderr, flush=True)
logging.getLogger("kexue").setLevel(logging.WARNING)
train()
"""


def test_a_users_script_sees_progress_off_a_terminal_once_and_can_silence_it(tmp_path: Path) -> None:
    script = tmp_path / "user.py"
    script.write_text(_USER_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    default, configured, silenced = proc.stderr.split("--- ")
    # nothing configured: a line per epoch on stderr (a pipe here: no tqdm bar, no carriage returns)
    assert default.count("[user] epoch ") == 2 and "\r" not in default and "it/s" not in default
    # the user's own logging configuration takes over; the default handler steps aside (no duplicates)
    assert configured.count("[user] epoch ") == 2
    assert configured.count("ROOT kexue.train [user] epoch") == 2
    assert "[user] epoch" not in silenced
    assert proc.stdout == ""


def test_cell_progress_counts_cells_with_elapsed_time_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kexue")
    now = [0.0]
    progress = CellProgress(4, name="grid", clock=lambda: now[0])
    progress.skip("a")  # a cell finished by an earlier run: counted, not timed
    for label, seconds in (("b", 20.0), ("c", 42.0)):
        with progress.cell(label):
            now[0] += seconds
    with progress.cell("d"):
        now[0] += 3600.0
    lines = [r.getMessage() for r in caplog.records if r.name == "kexue.train"]
    assert lines == [
        "[grid] cell 1/4 a: skipped (done before)",
        "[grid] cell 2/4 b · elapsed 0:00",
        "[grid] cell 3/4 c · elapsed 0:20, ETA 0:40",
        "[grid] cell 4/4 d · elapsed 1:02, ETA 0:31",
        "[grid] 4 cells done in 1:01:02",
    ]
    with pytest.raises(ValueError, match="total must be >= 1, got 0"):
        CellProgress(0)
