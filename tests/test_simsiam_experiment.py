"""The simsiam experiment: the article's toy ODE against its exact limits, and the smoke preset end to end."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from kexue.experiments import simsiam as exp
from kexue.experiments._base import KINDS, VERDICTS, claim


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


def test_paper_lr_rule_and_weak_augmentations() -> None:
    cfg = exp.PRESETS["quick"]
    assert exp._lr(cfg) == pytest.approx(0.05 * cfg.batch_size / 256)  # lr = 0.05 x batch / 256
    assert exp._lr(exp.PRESETS["full"]) == pytest.approx(0.1)
    weak, train = exp._augment(0.25), exp._augment(1.0)
    assert weak.flip_p == 0 and weak.crop_scale == pytest.approx((0.8, 1.0))
    assert train.flip_p == 0.5 and train.crop_scale == pytest.approx((0.2, 1.0))


def test_random_init_is_each_seeds_own_initialisation() -> None:
    """The paired learning claims compare a trained encoder with the very network it started from."""
    cfg = exp.PRESETS["smoke"]
    for variant in ("baseline", "byol", "mean_view"):
        torch.manual_seed(3)
        model = exp._build(variant, cfg)
        torch.manual_seed(3)
        ref = exp._backbone(cfg)
        for (n, p), q in zip(model.backbone.named_parameters(), ref.parameters()):  # type: ignore[union-attr]
            torch.testing.assert_close(p, q, msg=f"{variant}: {n}")


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Linear(64, 8, bias=False)

    def project(self, x: Tensor) -> Tensor:
        return self.w(x.flatten(1))


def test_expansion_ratio_of_a_linear_map_is_two_over_one_plus_one_over_m() -> None:
    """For linear F, E||F(T2x)-F(T1x)||^2 / E||F(Tx)-F(xbar_M)||^2 = 2 / (1 + 1/M) exactly in expectation."""
    cfg = replace(exp.PRESETS["smoke"], expansion_repeats=64, expansion_views=4)
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    r = exp._expansion_ratio(cfg, _Linear(), x, seed=0, strength=1.0)
    assert r == pytest.approx(2 / (1 + 1 / 4), rel=0.05)


def test_inconclusive_claims_say_why() -> None:
    c = claim("baseline_learns", "s", "src", holds=None, evidence="e", seeds=3, mde=0.067)
    assert "exceeds the effect 0.02" in exp._explain(c).evidence
    c = claim("mean_view_features", "s", "src", holds=None, evidence="e", seeds=3, mde=0.05)
    assert "no effect size" in exp._explain(c).evidence
    done = claim("baseline_learns", "s", "src", holds=True, evidence="e", seeds=3, mde=0.067)
    assert exp._explain(done).evidence == "e"


def test_smoke_preset(tmp_path: Path) -> None:
    cfg = exp.PRESETS["smoke"]
    res = exp.run(cfg, tmp_path)
    by_id = {c.id: c for c in res.claims}
    assert set(by_id) == set(exp.CLAIMS)  # every article claim is reported, tested or marked not testable
    assert all(
        by_id[i].verdict == "reproduced" and by_id[i].kind == "check" for i in exp.CLAIMS if i.startswith("ode_")
    )
    for c in res.claims:
        assert c.kind in KINDS and c.verdict in VERDICTS, c
        assert "spec" not in c.source and "spec " not in c.evidence, c
        if c.kind == "claim" and c.verdict != "not testable":
            assert c.test and c.seeds == cfg.seeds and c.mde is not None, c
    for cid in ("baseline_learns", "byol_learns", "no_stopgrad_collapses", "expansion_ratio", "random_init_prior",
                "predictor_is_fast", "mean_view_avoids_collapse"):  # fmt: skip
        assert by_id[cid].test is not None and "paired t" in by_id[cid].test, by_id[cid]
    # arms not in the smoke preset are reported as not testable, with the reason
    for cid in ("no_predictor_collapses", "frozen_predictor_fails", "fixed_pred_lr_not_worse"):
        assert by_id[cid].verdict == "not testable" and "not run" in by_id[cid].evidence, by_id[cid]
    assert "0.4 points" in by_id["fixed_pred_lr_not_worse"].evidence
    # the learning claims carry the paired confidence interval of the gain over the own random init
    assert {"diff", "ci_low", "ci_high", "mde"} <= set(by_id["baseline_learns"].measured)
    runs = res.metrics["runs"]
    for v in cfg.variants:
        for key in ("knn", "probe", "z_probe", "std", "erank", "final_loss"):
            assert len(runs[v][key]) == cfg.seeds and all(math.isfinite(x) for x in runs[v][key]), (v, key)
    for arm in ("random_init", "pixels"):
        assert all(0.1 < a < 1 for a in res.metrics[arm]["probe"]), arm
    assert set(runs["baseline"]["expansion_ratio"]) == {str(s) for s in cfg.expansion_strengths}
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
    by_id = {c.id: c for c in res.claims}
    assert set(by_id) == set(exp.CLAIMS)
    for c in res.claims:
        if c.kind == "claim" and c.verdict != "not testable":
            assert c.seeds is not None and c.seeds >= 3 and c.mde is not None, c
