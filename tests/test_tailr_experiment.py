"""The tailr experiment: the smoke preset runs end to end (default suite); the quick preset is marked slow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from kexue.experiments import tailr
from kexue.experiments._base import VERDICTS


def _finite(x: object) -> bool:
    if isinstance(x, float):
        return math.isfinite(x)
    if isinstance(x, list):
        return all(_finite(v) for v in x)
    return True


def test_smoke_preset(tmp_path: Path) -> None:
    res = tailr.run(tailr.PRESETS["smoke"], tmp_path)
    assert {c.id for c in res.claims} == set(tailr.CLAIMS)
    assert all(c.verdict in VERDICTS for c in res.claims)
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
