"""The simsiam experiment: the article's toy ODE against its exact limits, and the smoke preset end to end."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from kexue.experiments import simsiam as exp
from kexue.experiments._base import KINDS, VERDICTS


@pytest.mark.parametrize(
    ("variant", "phi_lim", "theta_lim", "invariant"),
    [
        ("stop_grad", 1.0, math.sqrt(0.65), 0.35),
        ("full_grad", 1 - math.sqrt(0.15), 0.0, 0.15),
        ("target_only", 0.605, 0.0, 0.605),
    ],
)
def test_toy_ode_exact_limits_and_invariants(variant: str, phi_lim: float, theta_lim: float, invariant: float) -> None:
    ts, ph, th = exp.integrate_toy_ode(variant, t_end=200.0, dt=0.02)
    assert ph[-1] == pytest.approx(phi_lim, abs=1e-4)
    assert th[-1] == pytest.approx(theta_lim, abs=1e-4)
    for i in range(0, len(ts), 997):
        assert exp.toy_ode_invariant(ph[i], th[i], variant) == pytest.approx(invariant, abs=1e-9)


def test_toy_ode_spec_values_at_t10() -> None:
    _, ph, th = exp.integrate_toy_ode("stop_grad", t_end=10.0)
    assert (ph[-1], th[-1]) == (pytest.approx(0.922, abs=1e-3), pytest.approx(0.708, abs=1e-3))
    _, _, th_full = exp.integrate_toy_ode("full_grad", t_end=20.0)
    assert th_full[-1] == pytest.approx(0.0048, abs=2e-4)
    with pytest.raises(ValueError, match="variant"):
        exp.toy_ode_rhs(0.5, 0.5, "no_such")


def test_unknown_variant_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown variants"):
        exp.run(replace(exp.PRESETS["smoke"], variants=("nope",)), tmp_path)


def test_smoke_preset(tmp_path: Path) -> None:
    res = exp.run(exp.PRESETS["smoke"], tmp_path)
    ids = {c.id for c in res.claims}
    assert {"ode_stopgrad", "ode_full_grad", "ode_target_only", "expansion_ratio", "baseline_learns"} <= ids
    assert all(c.verdict == "reproduced" for c in res.claims if c.id.startswith("ode_"))
    by_id = {c.id: c for c in res.claims}
    for c in res.claims:
        assert c.kind in KINDS and c.verdict in VERDICTS, c
        assert "spec" not in c.source and "spec " not in c.evidence, c
        if c.kind == "claim":
            assert c.test and c.seeds is not None, c
    assert {by_id[i].kind for i in ("ode_stopgrad", "ode_full_grad", "ode_target_only", "expansion_ratio")} == {"check"}
    # two seeds: the training claims went through paired tests
    for cid in (
        "baseline_learns",
        "byol_learns",
        "no_stopgrad_collapses",
        "expansion_ratio_trained",
        "predictor_is_fast",
    ):
        assert by_id[cid].kind == "claim" and by_id[cid].seeds == 2 and by_id[cid].test == "paired t", by_id[cid]
    # one seed decides nothing
    assert by_id["mean_view_avoids_collapse"].verdict == "inconclusive"
    runs = res.metrics["runs"]
    for v in exp.PRESETS["smoke"].variants:
        for key in ("knn", "probe", "std", "erank", "final_loss"):
            assert all(math.isfinite(x) for x in runs[v][key]), (v, key)
    # relative update sizes are real steps: positive, and the predictor's exist only where it trains
    assert all(x > 0 for x in runs["baseline"]["pred_rel_update_mean"] + runs["baseline"]["enc_rel_update_mean"])
    assert "pred_rel_update_mean" not in runs["mean_view"]
    hist = res.metrics["histories"]["baseline"][0]
    assert hist[-1]["loss"] < hist[0]["loss"]  # the loss went down
    for p in res.plots:
        assert (tmp_path / p).is_file()


@pytest.mark.slow
def test_quick_preset(tmp_path: Path) -> None:
    res = exp.run(exp.PRESETS["quick"], tmp_path)
    assert len(res.claims) == len(exp.CLAIMS)
