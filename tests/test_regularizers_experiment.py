"""Regularizers experiment: the smoke run carries every evidence field (kind, seeds, test, MDE, activity), and the
pieces of the design (relative perturbation sites, activity preconditions, the choice of rho, the ramp-up) do
what the protocol says."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from kexue.experiments import _base, get
from kexue.experiments import regularizers as R
from kexue.modules import EmbeddingBagClassifier


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
    cfg = exp.PRESETS["smoke"]
    res = exp.run(cfg, tmp_path)
    m = res.metrics
    n = cfg.n_seeds
    assert set(m) >= {"equivalences", "mnist", "text", "cpu_seconds_total"}
    assert _finite(m["mnist"]["test_accuracy"]) and _finite(m["text"]["test_accuracy"])
    assert all(len(v) == n for v in m["mnist"]["test_accuracy"].values())
    assert all(len(v) == n for v in m["text"]["test_accuracy"].values())
    first, last = m["mnist"]["loss_first_last_epoch"]["supervised"][0]
    assert last < first

    # Every claim carries its evidence fields; checks are counted apart.
    ids = {c.id for c in res.claims}
    assert ids == set(exp.CLAIMS)
    assert all(c.verdict in ("reproduced", "not reproduced", "inconclusive") for c in res.claims)
    for c in res.claims:
        d = c.to_dict()
        assert d["kind"] in ("check", "claim"), c.id
        if c.kind == "claim":
            assert d["seeds"] == n and d["test"] == "paired t", c.id
            assert isinstance(d["mde"], float) and d["mde"] >= 0, c.id
            assert "activity" in c.evidence, c.id  # each arm's activity is in the evidence
    assert {c.id for c in res.claims if c.kind == "check"} == {
        "noise_laplacian",
        "consistency_gp",
        "rademacher",
        "fgm_gp",
        "power_iteration",
        "finite_difference",
    }

    # Activity fields: every regularised arm, every seed, finite.
    mn, tx = m["mnist"], m["text"]
    assert set(mn["activity_kl"]) == set(R.MNIST_ARMS) - {"supervised"}
    assert set(tx["activity"]) == {"fgm", "gp"} and set(tx["activity_kl"]) == {"vat_global", "vat_per_sample"}
    for acts in (mn["activity_kl"], tx["activity"], tx["activity_kl"]):
        assert all(len(v) == n and _finite(v) for v in acts.values()), acts
    assert all(v >= 0 for v in mn["activity_kl"]["vat_r1"] + tx["activity_kl"]["vat_per_sample"])  # KL >= 0
    assert len(mn["entmin_activity"]) == n and _finite(mn["entmin_activity"])

    # The choice of rho: every arm x grid value x selection seed scored on validation; the chosen rho is the best.
    grid = list(cfg.text.rho_grid)
    sel = tx["selection"]
    assert sel["rho_grid"] == grid and len(sel["seeds"]) == cfg.text.selection_seeds
    assert not set(sel["seeds"]) & {cfg.seed + s for s in range(n)}  # selection never reuses a final seed
    for arm in R.TEXT_ARMS:
        assert [len(v) for v in sel["val_accuracy"][arm]] == [cfg.text.selection_seeds] * len(grid)
        assert tx["rho"][arm] == R._argmax_rho(grid, sel["val_score"][arm])

    # Preconditions: "FGM ~ GP" and "EntMin >= VAT" cannot pass unless the compared things act.
    verdicts = {c.id: c.verdict for c in res.claims}
    if min(tx["activity"]["fgm"] + tx["activity"]["gp"]) < R.ACTIVITY_MIN:
        assert verdicts["text_fgm_approx_gp"] == "inconclusive"
    if min(mn["entmin_activity"]) < R.ACTIVITY_MIN:
        assert verdicts["mnist_entmin"] == "inconclusive"
    # The equivalence claims are theorems checked in float64: they must hold even at smoke size.
    eq = {c.id: c.verdict for c in res.claims if c.kind == "check"}
    assert all(v == "reproduced" for v in eq.values()), eq
    for p in res.plots:
        assert (tmp_path / p).is_file()
    json.dumps(m, default=str)


def test_precondition_turns_a_vacuous_verdict_inconclusive() -> None:
    same = [0.80, 0.81, 0.82, 0.80, 0.81]
    c = _base.within("x", "a ~ b", "src", same, [v + 1e-4 for v in same], margin=0.01, paired=True)
    assert c.verdict == "reproduced"  # the accuracies alone would pass
    assert R._require_activity(c, met=False).verdict == "inconclusive"
    assert R._require_activity(c, met=True).verdict == "reproduced"


def test_argmax_rho_breaks_ties_towards_the_smaller_radius() -> None:
    assert R._argmax_rho([0.001, 0.003, 0.01], [0.6, 0.7, 0.65]) == 0.003
    assert R._argmax_rho([0.001, 0.003, 0.01], [0.7, 0.6, 0.7]) == 0.001


def test_entmin_ramp() -> None:
    assert R._ramp(0, 300, 0.5) == pytest.approx(math.exp(-5))
    assert R._ramp(75, 300, 0.5) == pytest.approx(math.exp(-5 * 0.25))
    assert R._ramp(150, 300, 0.5) == 1.0 and R._ramp(299, 300, 0.5) == 1.0
    assert R._ramp(0, 300, 0.0) == 1.0


@pytest.mark.parametrize("mode", ["token", "sample"])
def test_relative_site_is_in_units_of_the_embedding_norm(mode: str) -> None:
    """The perturbed site is the embedding divided by its own norm (per token or per review), so a radius rho
    there is rho times that norm; the clean forward is the plain classifier's."""
    torch.manual_seed(0)
    bag = EmbeddingBagClassifier(50, 2, dim=8, hidden=8)
    model = R._RelativeSite(bag, mode)  # type: ignore[arg-type]
    ids = torch.randint(2, 50, (3, 6))
    ids[0, 4:] = 0  # padding
    seen: list[torch.Tensor] = []
    model.site.register_forward_hook(lambda _m, _a, out: seen.append(out.detach()))
    torch.testing.assert_close(model(ids), bag(ids))
    z = seen[0]
    if mode == "token":
        norms = z.norm(dim=1).reshape(3, 6)
        torch.testing.assert_close(norms, (ids != 0).float())  # unit rows, padding rows 0
    else:
        torch.testing.assert_close(z.reshape(3, -1).norm(dim=1), torch.ones(3))


@pytest.mark.slow
def test_quick_preset(tmp_path: Path) -> None:
    exp = get("regularizers")
    res = exp.run(exp.PRESETS["quick"], tmp_path)
    assert len(res.claims) == len(exp.CLAIMS)
