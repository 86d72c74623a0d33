"""The ``kexue`` command as a process: exit codes, one-line errors, output-folder locking, safe ``--resume``.

Most tests run a tiny fake experiment (no data, no training) so that each CLI call costs little more than
Python's start-up; the fake is found through ``kexue.experiments.__path__``, the same discovery the real ones use.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kexue
from kexue import experiments
from kexue.cli import build_parser
from kexue.experiments._runner import run_experiment

_FAKE = '''
"""A fake experiment for the CLI tests: it can wait for a file, so a test can hold a run open."""

import time
from dataclasses import dataclass
from pathlib import Path

from kexue.experiments import Result

NAME = "fake"
TITLE = "fake experiment"
ARTICLE = "https://example.org/fake"
CLAIMS: dict[str, str] = {}


@dataclass(frozen=True)
class Config:
    seed: int = 0
    steps: int = 2
    hold: str = ""
    fail: str = ""


PRESETS = {"smoke": Config(), "quick": Config(steps=3), "full": Config(steps=4)}


def run(cfg, out_dir, *, resume=False):
    (Path(out_dir) / "started").write_text("1")
    deadline = time.monotonic() + 60
    while cfg.hold and not Path(cfg.hold).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if cfg.fail:
        raise ValueError(cfg.fail)
    return Result(metrics={"steps": cfg.steps, "seed": cfg.seed}, claims=[])
'''

# Runs ``kexue.cli.main`` exactly as ``python -m kexue.cli`` does, after adding the folder of the fake experiment.
_LAUNCH = (
    "import sys, kexue.experiments as e; e.__path__.append(sys.argv.pop(1)); "
    "from kexue.cli import main; sys.exit(main())"
)


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fake_experiments")
    (d / "fake.py").write_text(_FAKE)
    return d


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(fake_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _LAUNCH, str(fake_dir), *args], capture_output=True, text=True, env=_env(), check=False
    )


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single ``kexue: error: ...`` line a refused command prints; no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kexue: error: "), lines[0]
    return lines[0]


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


# --- 1. one run per output folder ------------------------------------------------------------------------------


def test_a_second_run_into_a_busy_folder_is_refused(fake_dir: Path, tmp_path: Path) -> None:
    out, release = tmp_path / "run", tmp_path / "release"
    first = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH, str(fake_dir), "run", "fake", "--out", str(out), "--set", f"hold={release}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "started").exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never started"
            time.sleep(0.05)
        before = _snapshot(out)
        second = _cli(fake_dir, "run", "fake", "--out", str(out))
        assert second.returncode == 1
        line = _one_error_line(second)
        assert str(out) in line and "in use by another run" in line and f"pid {first.pid}" in line
        assert _snapshot(out) == before  # the refused run touched nothing
    finally:
        release.write_text("go")
        _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert (out / "metrics.json").is_file()
    assert not (out / ".lock").exists()  # released and removed on exit


def test_a_lock_left_by_a_killed_run_is_not_in_the_way(fake_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("pid 999999\n")  # what a SIGKILLed run leaves: the file, but no kernel lock
    proc = _cli(fake_dir, "run", "fake", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "metrics.json").is_file() and not (out / ".lock").exists()
    # log lines on stderr, results on stdout
    assert "== fake (quick)" in proc.stderr and "== fake" not in proc.stdout
    assert proc.stdout.rstrip().endswith(f"results in {out}")


def test_a_lock_held_by_another_process_refuses_the_run(fake_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = _cli(fake_dir, "run", "fake", "--out", str(out))
    assert proc.returncode == 1
    assert "in use by another run" in _one_error_line(proc)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


# --- 2. --resume refuses different settings --------------------------------------------------------------------


def test_resume_with_different_settings_is_refused_and_changes_nothing(
    fake_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    # The first run in this process (torch is loaded already); the refusals through the command line.
    monkeypatch.setattr(experiments, "__path__", [*experiments.__path__, str(fake_dir)])
    monkeypatch.delitem(sys.modules, "kexue.experiments.fake", raising=False)
    run_experiment("fake", preset="smoke", out_dir=out)
    before = _snapshot(out)

    seed = _cli(fake_dir, "run", "fake", "--preset", "smoke", "--out", str(out), "--resume", "--seed", "3")
    assert seed.returncode == 2
    line = _one_error_line(seed)
    assert "cannot resume" in line and "seed: 0 (saved) vs 3 (requested)" in line

    changed = _cli(fake_dir, "run", "fake", "--preset", "smoke", "--out", str(out), "--resume", "--set", "steps=5")
    assert changed.returncode == 2
    line = _one_error_line(changed)
    assert "steps: 2 (saved) vs 5 (requested)" in line and "seed" not in line

    preset = _cli(fake_dir, "run", "fake", "--preset", "quick", "--out", str(out), "--resume")
    assert preset.returncode == 2
    assert "preset: 'smoke' (saved) vs 'quick' (requested)" in _one_error_line(preset)
    assert _snapshot(out) == before

    same = _cli(fake_dir, "run", "fake", "--preset", "smoke", "--out", str(out), "--resume")
    assert same.returncode == 0, same.stderr  # positive control: identical settings resume
    assert json.loads((out / "config.json").read_text())["config"] == {"seed": 0, "steps": 2, "hold": "", "fail": ""}


# --- 3. bad input: one line, exit 2 or 1, nothing left behind -----------------------------------------------------


def test_out_naming_a_file_is_refused(fake_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    proc = _cli(fake_dir, "run", "fake", "--out", str(f))
    assert proc.returncode == 2
    assert "is a file" in _one_error_line(proc)
    assert f.read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder_is_refused(fake_dir: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        for out in (ro, ro / "new" / "run"):
            proc = _cli(fake_dir, "run", "fake", "--out", str(out))
            assert proc.returncode == 2
            assert "not writable" in _one_error_line(proc)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_an_unwritable_out_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same refusal in-process, with the permission check faked, so it is covered when tests run as root."""
    from kexue.cli import main

    parent = tmp_path / "parent"
    parent.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != parent and real_access(p, mode, **kw))
    assert main(["run", "mnist_baseline", "--preset", "smoke", "--out", str(parent / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kexue: error: ") and "not writable" in err and err.count("\n") == 1
    assert list(parent.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "nosuch", "--out", "{new}"], 2, "unknown experiment 'nosuch'; available: "),
        (["run", "fake", "--set", "nokey=1", "--out", "{new}"], 2, "unknown config key 'nokey'; valid keys: seed"),
        (["run", "fake", "--set", "steps=two", "--out", "{old}"], 2, "--set steps=two: expected int"),
        (["run", "fake", "--set", "steps", "--out", "{new}"], 2, "--set expects KEY=VALUE"),
        (["run", "fake", "--preset", "huge", "--out", "{old}"], 2, "has no preset 'huge'"),
        (["run", "fake", "--seed", "-1", "--out", "{new}"], 2, "a seed must be an int in [0, 2**32 - 1]"),
        (["run", "fake", "--set", f"seed={2**32}", "--out", "{new}"], 2, "a seed must be an int in [0, 2**32 - 1]"),
        (["run", "fake", "--out", ""], 2, "--out must name a folder"),
        (["report", "{new}"], 2, "no such folder"),
        (["report", "{old}"], 1, "no runs in"),
        (["data", "status", "nosuch"], 2, "unknown dataset(s) ['nosuch']"),
        (["reproduce", "--only", "nosuch", "--out", "{new}"], 2, "unknown experiment 'nosuch'"),
    ],
)
def test_bad_input_gives_one_line_and_leaves_nothing(
    fake_dir: Path, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    new, old = tmp_path / "new", tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("mine")
    before = _snapshot(old)
    proc = _cli(fake_dir, *(a.format(new=new, old=old) for a in args))
    assert proc.returncode == code, proc.stderr
    assert message in _one_error_line(proc)
    assert not new.exists()
    assert _snapshot(old) == before


def test_a_crashing_experiment_gives_one_line_and_saves_its_traceback(fake_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _cli(fake_dir, "run", "fake", "--set", "fail=boom", "--out", str(out))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]  # after the run's own progress lines
    assert line.startswith("kexue: error: ") and "fake failed (ValueError: boom)" in line and "error.txt" in line
    assert "Traceback" in (out / "error.txt").read_text() and not (out / "claims.json").exists()
    proc = _cli(fake_dir, "report", str(out))
    assert proc.returncode == 0 and "**error**" in proc.stdout
    # a later successful run in the same folder clears the stale error
    proc = _cli(fake_dir, "run", "fake", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert not (out / "error.txt").exists() and (out / "claims.json").is_file()


# --- 4. --version and help -------------------------------------------------------------------------------------


def test_version(fake_dir: Path) -> None:
    proc = _cli(fake_dir, "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"kexue {kexue.__version__}"


def _all_help() -> dict[str, str]:
    parser = build_parser()
    texts = {"kexue": parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            texts.update({f"kexue {n}": p.format_help() for n, p in action.choices.items()})
    return texts


def test_help_is_plain_text() -> None:
    texts = _all_help()
    assert {"kexue", "kexue run", "kexue reproduce", "kexue report", "kexue data", "kexue list"} <= set(texts)
    for name, text in texts.items():
        for markup in ("``", ":class:", ":func:", ":meth:", ".. "):
            assert markup not in text, (name, markup, text)
    assert "exit status" in texts["kexue"].lower()
    assert "--version" in texts["kexue"]
