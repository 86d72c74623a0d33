"""The experiment contract, claims, config overrides, the CLI and the report."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from kexue import experiments
from kexue.experiments import ConfigError, apply_overrides, claim, compare
from kexue.experiments._runner import run_experiment


@dataclass(frozen=True)
class _Optim:
    lr: float = 0.1
    name: Literal["adam", "sgd"] = "adam"


@dataclass(frozen=True)
class _Cfg:
    seed: int = 0
    limit: int | None = None
    sizes: tuple[int, ...] = (16, 32)
    flag: bool = False
    optim: _Optim = field(default_factory=_Optim)


def test_overrides_parse_to_field_types() -> None:
    cfg = apply_overrides(
        _Cfg(), {"optim.lr": "3e-4", "optim.name": "sgd", "limit": "none", "sizes": "8,64", "flag": "true"}
    )
    assert cfg == _Cfg(limit=None, sizes=(8, 64), flag=True, optim=_Optim(lr=3e-4, name="sgd"))
    assert apply_overrides(_Cfg(), {"limit": "12"}).limit == 12


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("lr", "1", "unknown config key 'lr'; valid keys: seed, limit, sizes, flag, optim.lr, optim.name"),
        ("optim.beta", "1", "unknown config key 'optim.beta'"),
        ("seed", "abc", "--set seed=abc: expected int"),
        ("optim.name", "rmsprop", r"expected one of \['adam', 'sgd'\]"),
        ("flag", "maybe", "expected a boolean"),
        ("optim", "1", "is a group"),
    ],
)
def test_bad_overrides_are_rejected_clearly(key: str, value: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        apply_overrides(_Cfg(), {key: value})


def test_claim_verdicts_and_noise_aware_comparison() -> None:
    assert claim("a", "s", "u", holds=True, evidence="e").verdict == "reproduced"
    assert claim("a", "s", "u", holds=False, evidence="e").verdict == "not reproduced"
    assert claim("a", "s", "u", holds=None, evidence="e").verdict == "inconclusive"
    assert compare([0.9, 0.91, 0.92], [0.5, 0.52, 0.51]) is True
    assert compare([0.5, 0.52, 0.51], [0.9, 0.91, 0.92]) is False
    assert compare([0.5, 0.9, 0.1], [0.5, 0.52, 0.49]) is None  # within seed noise


@pytest.mark.parametrize("name", experiments.available())
def test_every_experiment_follows_the_contract(name: str) -> None:
    m = experiments.get(name)
    assert m.__doc__ and len(m.__doc__) > 100, "the docstring names the article, claims and thresholds"
    assert {"smoke", "quick", "full"} <= set(m.PRESETS)
    for cfg in m.PRESETS.values():
        assert dataclasses.is_dataclass(cfg) and type(cfg).__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert hasattr(cfg, "seed")
    assert m.CLAIMS and m.ARTICLE.startswith("http") and callable(m.run)


def test_unknown_experiment_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown experiment 'nope'; available: .*mnist_baseline"):
        experiments.get("nope")


def test_run_writes_every_artefact(tmp_path: Path) -> None:
    res = run_experiment("mnist_baseline", preset="smoke", out_dir=tmp_path, seed=1)
    for f in ("config.json", "env.json", "metrics.json", "claims.json", "log.txt", *res.plots):
        assert (tmp_path / f).is_file(), f
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["config"]["seed"] == 1 and cfg["preset"] == "smoke"
    env = json.loads((tmp_path / "env.json").read_text())
    assert {"python", "torch", "device", "torch_threads", "git_commit"} <= set(env)
    claims = json.loads((tmp_path / "claims.json").read_text())["claims"]
    assert claims[0]["id"] == "test_accuracy"
    assert claims[0]["verdict"] in ("reproduced", "not reproduced", "inconclusive")
    assert f"{claims[0]['measured']['test_accuracy']:.4f}" in claims[0]["evidence"]
    # one training seed: an empirical claim decided on test-set sampling error, and it says so
    assert claims[0]["kind"] == "claim" and claims[0]["seeds"] == 1
    assert claims[0]["test"].startswith("binomial exact") and claims[0]["mde"] > 0
    assert "1 training seed" in claims[0]["evidence"]
    hist = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert hist[-1]["loss"] < hist[0]["loss"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kexue.cli", *args], capture_output=True, text=True, check=False)


def test_cli_list_and_bad_input() -> None:
    out = _cli("list")
    assert out.returncode == 0 and "mnist_baseline" in out.stdout and "test_accuracy" in out.stdout
    bad = _cli("run", "mnist_baseline", "--preset", "smoke", "--set", "epochz=3")
    assert bad.returncode == 2 and "unknown config key 'epochz'" in bad.stderr
    bad = _cli("run", "mnist_baseline", "--preset", "smoke", "--set", "epochs=three")
    assert bad.returncode == 2 and "expected int" in bad.stderr
    bad = _cli("run", "mnist_baseline", "--preset", "huge")
    assert bad.returncode == 2 and "no preset 'huge'" in bad.stderr
    bad = _cli("reproduce", "--only", "nope")
    assert bad.returncode == 2 and "kexue: error: unknown experiment 'nope'" in bad.stderr


def test_reproduce_writes_a_self_contained_report(tmp_path: Path) -> None:
    out = _cli("reproduce", "--preset", "smoke", "--only", "mnist_baseline", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "| mnist_baseline | test_accuracy |" in out.stdout
    html = (tmp_path / "report.html").read_text()
    assert "test_accuracy" in html and "data:image/png;base64," in html
    assert "| mnist_baseline | test_accuracy |" in (tmp_path / "report.md").read_text()
