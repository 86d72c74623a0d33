"""The tailr experiment: the smoke preset runs end to end (default suite); the quick preset is marked slow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from kexue.experiments import tailr
from kexue.experiments._base import KINDS, VERDICTS
from kexue.train import reliability_diagram


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
    # two seeds: every run claim went through a paired t test, records its seeds and its MDE, and reports the
    # activity (mean TaiLr weight) of its TaiLr arm
    for cid in ("memorises_less", "better_calibrated", "ce_overconfident", "gamma1_lower_accuracy", "tweets_high_conf"):
        c = by_id[cid]
        assert c.kind == "claim" and c.seeds == 2 and "paired t" in (c.test or ""), c
        assert c.mde is not None and math.isfinite(c.mde) and c.mde > 0, c
        assert "mean weight" in c.evidence, c
    assert "mean weight" in by_id["tweets_high_conf"].evidence and "best epoch" in by_id["tweets_high_conf"].evidence
    for r in res.metrics["noisy"]["runs"]:
        assert math.isnan(r["mean_weight"]) == (not r["method"].startswith("tailr"))
        if r["noise"] == 0:  # against the clean labels the noisy-label calibration is the clean one
            assert abs(r["overconfidence_noisy"] - r["overconfidence"]) < 1e-5, r
    for r in res.metrics["tweets"]["runs"]:
        assert math.isnan(r["mean_weight"]) == (not r["method"].startswith("tailr"))
        assert 1 <= r["best_epoch"] <= len(r["val_acc_curve"]), r
    lm = res.metrics["lm"]["runs"]
    # γ=1e-7 is MLE by another name: its weights are ~1 (the activity precondition excludes it)
    assert min(r["mean_weight"] for r in lm if r["method"] == "tailr:1e-07:0.2") > 0.99
    arm = res.metrics["lm"]["verdict_arm"]
    for cid in ("lm_less_overestimation", "lm_better_quality", "lm_keeps_coverage"):
        c = by_id[cid]
        if arm is None:
            assert c.verdict == "not testable", c
        else:
            assert max(r["mean_weight"] for r in lm if r["method"] == arm) < tailr.LM_ACTIVE_WEIGHT
            assert c.seeds == 2 and c.mde is not None and "paired t" in (c.test or ""), c
    for cid in ("lm_overestimation_trend", "lm_quality_coverage_tradeoff"):
        c = by_id[cid]
        assert c.verdict == "not testable" or (c.seeds == 2 and c.mde is not None), c
        assert "mean weight" in c.evidence, c
    for p in res.plots:
        assert (tmp_path / p).is_file()
    assert "tailr_reliability.png" in res.plots
    noisy = res.metrics["noisy"]["runs"]
    assert noisy
    for r in noisy:
        for key in ("test_acc", "ece", "ece_noisy", "val_acc_epoch1", "loss_curve"):
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
        assert 1 <= r["best_epoch"] <= len(r["valid_nll_curve"])


def test_noisy_calibration_against_the_noise_distribution() -> None:
    torch.manual_seed(0)
    y = torch.randint(0, 10, (4000,))
    # a model that predicts the clean class with confidence 1 - r (the rest spread evenly) is exactly calibrated
    # against labels with symmetric noise r, and under-confident by r against the clean labels
    r = 0.4
    probs = torch.full((4000, 10), r / 9).scatter(1, y[:, None], 1 - r)
    logits = probs.log()
    ece, over = tailr._noisy_calibration(logits, y, r)
    assert ece < 1e-6 and abs(over) < 1e-6
    ece0, over0 = tailr._noisy_calibration(logits, y, 0.0)
    assert abs(ece0 - reliability_diagram(logits, y).ece) < 1e-6
    torch.testing.assert_close(torch.tensor(over0), torch.tensor(-r), atol=1e-6, rtol=0)
    # a model sure of the clean class is over-confident by r against the noisy labels
    assert abs(tailr._noisy_calibration(logits * 50, y, r)[1] - r) < 1e-6


def test_slopes_over_the_gamma_grid() -> None:
    cfg = tailr.LMConfig(methods=("mle", "tailr:0.001:0.2", "tailr:0.01:0.2", "tailr:0.1:0.2"))
    runs = [
        {"method": m, "seed": s, "v": 5.0 - (2 + s) * math.log10(float(m.split(":")[1]))}
        for s in range(2)
        for m in cfg.methods[1:]
    ]
    torch.testing.assert_close(torch.tensor(tailr._slopes(cfg, runs, lambda r: r["v"])), torch.tensor([-2.0, -3.0]))


def test_best_epoch_restores_the_best_weights(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 1)
    best = tailr._BestEpoch(tmp_path / "m.pt", resume=False)
    for score in (0.1, 0.5, 0.2):
        with torch.no_grad():
            model.weight.fill_(score)
        best.update(model, score)
    assert best.restore(model) == 2
    torch.testing.assert_close(model.weight, torch.full((1, 2), 0.5))


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
