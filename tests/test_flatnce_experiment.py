"""The flatnce experiment: smoke preset in the default suite, quick preset marked slow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kexue.experiments import get
from kexue.experiments._base import KINDS, VERDICTS


def _check(result, out: Path) -> None:  # type: ignore[no-untyped-def]
    exp = get("flatnce")
    assert {c.id for c in result.claims} == set(exp.CLAIMS)
    assert all(c.verdict in VERDICTS for c in result.claims)
    for c in result.claims:
        assert c.kind in KINDS, c
        assert "spec" not in c.source and "spec " not in c.evidence, c
        if c.kind == "claim" and c.verdict != "not testable":
            assert c.test and c.seeds is not None and c.mde is not None, c
    kinds = {c.id: c.kind for c in result.claims}
    assert kinds["float32_infonce_fails"] == kinds["stable_control_exact"] == kinds["large_tau_unaffected"] == "check"
    assert kinds["flatnce_small_batch"] == kinds["reweighting_explains"] == "claim"
    sat = result.metrics["saturation"]
    assert 0.0 <= sat <= 1.0
    by_id = {c.id: c for c in result.claims}
    # below 1 % saturation float error has nothing to explain: the claim says so instead of guessing
    assert (by_id["float_error_explains"].verdict == "not testable") == (sat <= 0.01)
    # the two explanations never both hold
    assert not (by_id["float_error_explains"].verdict == by_id["reweighting_explains"].verdict == "reproduced")
    for plot in result.plots:
        assert (out / plot).is_file()
    for row in result.metrics["float_error_table"]:
        assert math.isfinite(row["cos_min"])
    for r in result.metrics["runs"]:
        assert math.isfinite(r["linear_probe"])
        assert math.isfinite(r["knn"])
        assert r["last_loss"] < r["first_loss"]  # training made progress (FlatNCE's value is log xi)


def test_smoke(tmp_path: Path) -> None:
    exp = get("flatnce")
    result = exp.run(exp.PRESETS["smoke"], tmp_path)
    _check(result, tmp_path)
    by_id = {c.id: c for c in result.claims}
    # the float-error part is deterministic and cheap: its verdicts already hold at smoke size
    assert by_id["stable_control_exact"].verdict == "reproduced"


@pytest.mark.slow
def test_quick(tmp_path: Path) -> None:
    exp = get("flatnce")
    _check(exp.run(exp.PRESETS["quick"], tmp_path), tmp_path)
