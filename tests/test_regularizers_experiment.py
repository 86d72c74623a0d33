"""Smoke run of the regularizers experiment: metrics exist and are finite, claims carry verdicts, loss went
down."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from kexue.experiments import get


def _finite(obj: object) -> bool:
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_finite(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


def test_smoke_preset(tmp_path: Path) -> None:
    exp = get("regularizers")
    res = exp.run(exp.PRESETS["smoke"], tmp_path)
    m = res.metrics
    assert set(m) >= {"equivalences", "mnist", "text"}
    assert _finite(m["mnist"]["test_accuracy"])
    assert _finite(m["text"]["test_accuracy"])
    first, last = m["mnist"]["loss_first_last_epoch"]["supervised"][0]
    assert last < first
    ids = {c.id for c in res.claims}
    assert ids == set(exp.CLAIMS)
    assert all(c.verdict in ("reproduced", "not reproduced", "inconclusive") for c in res.claims)
    for c in res.claims:
        assert c.kind in ("check", "claim"), c.id
        if c.kind == "claim":
            assert c.seeds == 2 and c.test == "paired t" and c.mde is not None, c.id
    assert {c.id for c in res.claims if c.kind == "check"} == {
        "noise_laplacian",
        "consistency_gp",
        "rademacher",
        "fgm_gp",
        "power_iteration",
        "finite_difference",
    }
    # "FGM ~ GP" needs both to act: with either below the activity threshold the verdict is inconclusive
    act = m["text"]["activity"]
    verdicts = {c.id: c.verdict for c in res.claims}
    if min(act["fgm"] + act["gp"]) < exp.ACTIVITY_MIN:
        assert verdicts["text_fgm_approx_gp"] == "inconclusive"
    # The equivalence claims are theorems checked in float64: they must hold even at smoke size.
    eq = {c.id: c.verdict for c in res.claims if not c.id.startswith(("mnist", "text"))}
    assert all(v == "reproduced" for v in eq.values()), eq
    for p in res.plots:
        assert (tmp_path / p).is_file()
    json.dumps(m, default=str)


@pytest.mark.slow
def test_quick_preset(tmp_path: Path) -> None:
    exp = get("regularizers")
    res = exp.run(exp.PRESETS["quick"], tmp_path)
    assert len(res.claims) == len(exp.CLAIMS)
