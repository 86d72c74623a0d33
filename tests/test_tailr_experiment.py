"""The tailr experiment: the smoke preset runs end to end (default suite); the quick preset is marked slow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from kexue.experiments import tailr
from kexue.experiments._base import KINDS, VERDICTS


def _finite(x: object) -> bool:
    if isinstance(x, float):
        return math.isfinite(x)
    if isinstance(x, list):
        return all(_finite(v) for v in x)
    return True


def _check_claim_fields(claims: list) -> None:  # type: ignore[type-arg]
    """Every claim is a check or a claim; claims carry seeds and a test unless they were not run."""
    for c in claims:
        assert c.kind in KINDS, c
        assert c.verdict in VERDICTS, c
        assert "spec" not in c.source and "spec " not in c.evidence, c
        if c.kind == "claim" and c.verdict != "not testable":
            assert c.test and c.seeds is not None, c


def test_smoke_preset(tmp_path: Path) -> None:
    res = tailr.run(tailr.PRESETS["smoke"], tmp_path)
    assert {c.id for c in res.claims} == set(tailr.CLAIMS)
    _check_claim_fields(res.claims)
    by_id = {c.id: c for c in res.claims}
    # two seeds: every run claim went through a paired t test with an MDE
    for cid in ("memorises_less", "better_calibrated", "ce_overconfident", "gamma1_lower_accuracy", "tweets_high_conf"):
        if cid != "tweets_high_conf":
            assert by_id[cid].seeds == 2 and "paired t" in (by_id[cid].test or ""), by_id[cid]
    assert by_id["tweets_high_conf"].verdict == "inconclusive"  # one seed decides nothing
    for r in res.metrics["noisy"]["runs"]:
        assert math.isnan(r["mean_weight"]) == (not r["method"].startswith("tailr"))
    lm = res.metrics["lm"]["runs"]
    # γ=1e-7 is MLE by another name: its weights are ~1 (the activity precondition excludes it)
    assert min(r["mean_weight"] for r in lm if r["method"] == "tailr:1e-07:0.2") > 0.99
    assert (
        by_id["lm_less_overestimation"].verdict == "not testable" or "0.1" in by_id["lm_less_overestimation"].evidence
    )
    for p in res.plots:
        assert (tmp_path / p).is_file()
    assert "tailr_reliability.png" in res.plots
    noisy = res.metrics["noisy"]["runs"]
    assert noisy
    for r in noisy:
        for key in ("test_acc", "ece", "val_acc_epoch1", "loss_curve"):
            assert _finite(r[key]), (key, r)
        if r["noise"] > 0:
            assert 0.0 <= r["memorisation"] <= 1.0
        assert r["nll_curve"][-1] < r["nll_curve"][0], r  # the loss went down (NLL: comparable across steps)
    for r in res.metrics["tweets"]["runs"]:
        assert _finite(r["acc_high_conf"])
        assert _finite(r["ece_high_conf"])
    for r in res.metrics["lm"]["runs"]:
        assert _finite(r["ppl_oracle"])
        assert _finite(r["overestimation"])
        assert r["overestimation"][0] == 0.0  # k = 0: no perturbation, no gap by construction
        assert r["nll_curve"][-1] < r["nll_curve"][0]


def test_label_noise_is_symmetric_and_exact() -> None:
    y = torch.arange(1000) % 10
    noisy, flipped = tailr._flip(y, 0.4, 10, seed=3)
    assert int(flipped.sum()) == 400
    assert bool((noisy[flipped] != y[flipped]).all())
    assert bool((noisy[~flipped] == y[~flipped]).all())
    counts = torch.bincount((noisy[flipped] - y[flipped]) % 10, minlength=10)
    assert int(counts[0]) == 0
    assert int(counts[1:].min()) > 20  # every wrong class is used


def test_oracle_log_prob_matches_sampling_distribution() -> None:
    oracle = tailr._Oracle(5, 0.5, seed=0)
    seqs = oracle.sample(4, 3, seed=1)
    lp = oracle.log_prob(list(seqs))
    for s, v in zip(seqs, lp):
        ref = oracle.log_start[s[0]] + oracle.log_trans[s[0], s[1]] + oracle.log_trans[s[1], s[2]]
        assert abs(float(ref) - float(v)) < 1e-5
    assert torch.allclose(oracle.log_trans.exp().sum(1), torch.ones(5, dtype=torch.float64))


def test_unknown_method_rejected(tmp_path: Path) -> None:
    cfg = tailr.Config(noisy=tailr.NoisyConfig(methods=("ce", "mse")))
    with pytest.raises(ValueError, match="unknown method 'mse'"):
        tailr.run(cfg, tmp_path)


@pytest.mark.slow
def test_quick_preset(tmp_path: Path) -> None:
    res = tailr.run(tailr.PRESETS["quick"], tmp_path)
    assert {c.id for c in res.claims} == set(tailr.CLAIMS)
    assert all(c.evidence for c in res.claims)
