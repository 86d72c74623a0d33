"""The multitask experiment: smoke preset end to end (quick preset marked slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from kexue.experiments import multitask
from kexue.experiments._runner import run_experiment


def test_smoke_preset_runs_and_reports(tmp_path: Path) -> None:
    res = run_experiment("multitask", preset="smoke", out_dir=tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    table = metrics["table"]
    assert set(table) >= {"equal@1000", "realtime@1000", "gradient_normalization@1000", "realtime@1", "realtime@1024"}
    for row in table.values():
        for key in ("digit_a", "digit_b", "ink", "worst", "mean"):
            assert math.isfinite(row[key])
    for v, first in metrics["first_loss"].items():
        assert metrics["last_loss"][v] < first, v  # the summed raw loss went down in every run
    claims = {c["id"]: c for c in json.loads((tmp_path / "claims.json").read_text())["claims"]}
    assert set(claims) == set(multitask.CLAIMS)
    for c in claims.values():
        assert c["kind"] in ("check", "claim"), c["id"]
        if c["verdict"] == "not testable":
            continue
        assert c["seeds"] == 2 and c["test"], c["id"]
        if c["kind"] == "claim":
            assert c["mde"] is not None, c["id"]
    assert claims["scale_invariance_exact"]["kind"] == "check"
    # real-time normalisation with eps = 0 trains bit-identically at ink-loss scales 1 and 2^10; equal weighting
    # (the negative control) does not
    assert claims["scale_invariance_exact"]["verdict"] == "reproduced", claims["scale_invariance_exact"]["evidence"]
    assert claims["scale_invariance_exact"]["measured"]["train_identical_realtime"] == 2
    assert claims["scale_invariance_exact"]["measured"]["train_identical_equal"] == 0
    for plot in ("multitask_curves.png", "multitask_table.png", "multitask_gamma.png"):
        assert (tmp_path / plot).stat().st_size > 0
    assert res is not None


def test_normalised_scores() -> None:
    s = multitask.normalised({"acc_a": 1.0, "acc_b": 0.1, "r2_ink": 0.5})
    assert s["digit_a"] == pytest.approx(1.0)
    assert s["digit_b"] == pytest.approx(0.0)
    assert s["worst"] == pytest.approx(0.0)
    assert s["mean"] == pytest.approx(0.5)


@pytest.mark.slow
def test_quick_preset(tmp_path: Path) -> None:
    run_experiment("multitask", preset="quick", out_dir=tmp_path)
    claims = json.loads((tmp_path / "claims.json").read_text())["claims"]
    assert {c["id"] for c in claims} == set(multitask.CLAIMS)
