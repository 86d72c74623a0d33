"""The topk experiment: the smoke preset runs end to end (finite metrics, losses go down); quick is slow."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from kexue.experiments import topk
from kexue.train import seed_all


def test_smoke(tmp_path: Path) -> None:
    res = topk.run(topk.PRESETS["smoke"], tmp_path)
    ids = {c.id for c in res.claims}
    assert ids == set(topk.CLAIMS)
    for c in res.claims:
        assert c.kind in ("check", "claim"), c.id
        if c.kind == "claim" and c.verdict != "not testable":
            assert c.seeds == topk.PRESETS["smoke"].moe.seeds and c.test == "paired t" and c.mde is not None, c.id
    kinds = {c.id: c.kind for c in res.claims}
    assert all(kinds[f"moe_{a}_{m}"] == "claim" for m in topk.METHODS for a in ("st", "anneal"))
    assert all(kinds[f"{m}_{p}"] == "check" for m in topk.METHODS for p in topk.PROPS)
    assert set(res.metrics["moe"]) == set(topk.ARMS)
    for arm, runs in res.metrics["moe"].items():
        assert len(runs) == topk.PRESETS["smoke"].moe.seeds
        for r in runs:
            assert math.isfinite(r["loss_last"]), arm
            assert r["loss_last"] < r["loss_first"], arm
            assert 0.0 <= r["test_acc_sparse"] <= 1.0
            assert sum(r["load"]) == pytest.approx(1.0)
            assert (r["off_topk_mass"] > 0) == arm.startswith("anneal_"), arm  # only the annealed arms are dense
    assert (tmp_path / res.plots[0]).exists()
    verdicts = {c.id: c.verdict for c in res.claims}
    assert verdicts["items"] == "not testable"
    # the property cells that do not depend on training are already decided at smoke size
    assert verdicts["gradtopk_sum"] == "reproduced"
    assert verdicts["iterative_range"] == "reproduced"
    # the limit test separates the constructions from the StackExchange iteration (negative control)
    assert verdicts["stackexchange_limit_control"] == "reproduced"
    assert all(verdicts[f"{m}_limit"] == "reproduced" for m in topk.METHODS)
    # Su's unconditional "k = 1 gives softmax" for the Laplace threshold is contradicted and kept
    assert verdicts["laplace_k1_softmax"] == "not reproduced"


def test_limit_test_rejects_a_wrong_limit() -> None:
    assert topk._limit_holds([1e-2, 1e-4, 1e-6, 1e-8, 1e-10])
    assert not topk._limit_holds([0.5, 0.5, 0.5, 0.5, 0.5])  # the StackExchange iteration: 1.5 / 0.5
    assert not topk._limit_holds([1e-2, 1e-6, 1e-5, 1e-8, 1e-10])  # error rises as tau falls
    assert not topk._limit_holds([1e-1, 5e-2, 1e-2, 5e-3, 1e-3])  # decays, but too slowly to be the mask


def test_stackexchange_control_has_the_articles_wrong_limit() -> None:
    import numpy as np

    p = topk._stackexchange(np.array([[3.0, 2.0, 1.0, 4.0]]) / 0.1, 2)[0]
    np.testing.assert_allclose(np.sort(p)[::-1], [1.5, 0.5, 0.0, 0.0], atol=1e-3)


def _model(arm: str, temperature: float = 1.0) -> topk._MoE:
    seed_all(3)
    return topk._MoE(arm, experts=4, k=2, temperature=temperature)


def test_arms_share_their_initialisation() -> None:
    # the paired design: one seed gives every arm the same gate and experts
    ref = _model("hard_topk").state_dict()
    for arm in topk.ARMS[1:]:
        state = _model(arm).state_dict()
        for key in ("router.gate.weight", "router.gate.bias", "experts.weight", "experts.bias"):
            torch.testing.assert_close(state[key], ref[key], rtol=0, atol=0, msg=f"{arm}: {key}")


@pytest.mark.parametrize("arm", ["hard_topk", "st_laplace", "st_gradtopk"])
def test_sparse_forward_uses_only_the_chosen_experts(arm: str) -> None:
    model = _model(arm)
    x = torch.rand(16, 1, 28, 28)
    out, _, idx, _ = model(x)
    w = model.experts.weight.view(4, 10, 784)
    rows_using = [set(idx[i].tolist()) for i in range(16)]
    assert all(len(s) == 2 for s in rows_using)
    # perturb one expert at a time: exactly the rows routed to it move
    for e in range(4):
        with torch.no_grad():
            w[e] += 1.0
            moved = (model(x)[0] - out).abs().amax(-1) > 1e-6
            w[e] -= 1.0
        expect = torch.tensor([e in s for s in rows_using])
        assert torch.equal(moved, expect), (arm, e)


def test_straight_through_router_sends_gradient_to_unchosen_logits() -> None:
    # the smooth backward reaches the gate logits of experts outside the top 2; hard top-k's does not
    x = torch.rand(8, 1, 28, 28)
    grads = {}
    for arm in ("hard_topk", "st_laplace"):
        model = _model(arm)
        h = x.flatten(1)
        logits = model.router.gate(h).detach().requires_grad_(True)
        model.router.gate.forward = lambda _h, lg=logits: lg  # type: ignore[method-assign]
        out, _, idx, _ = model(x)
        out.sum().backward()
        assert logits.grad is not None
        unchosen = torch.ones_like(logits, dtype=torch.bool).scatter(-1, idx, False)
        grads[arm] = logits.grad[unchosen].abs().max()
    assert grads["hard_topk"] == 0
    assert grads["st_laplace"] > 0


def test_annealed_dense_forward_becomes_the_sparse_one() -> None:
    x = torch.rand(32, 1, 28, 28)
    model = _model("anneal_exp", temperature=1.0)
    with torch.no_grad():
        model.router.gate.weight.mul_(50.0)  # spread the logits so that small temperatures saturate
        far = (model(x, sparse=False)[0] - model(x)[0]).abs().max()
        model.router.temperature = 0.02
        near = (model(x, sparse=False)[0] - model(x)[0]).abs().max()
    assert far > 1e-2
    assert near < 1e-4


_NOISE = (0.0, 0.002, -0.001, 0.003, -0.002, 0.001)  # per-seed jitter, so that paired differences vary


def _fake(acc: float, off: float = 0.0, *, shift: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "test_acc_sparse": acc + _NOISE[(i + shift) % len(_NOISE)],
            "test_acc_train_forward": acc,
            "load_cv": 0.1,
            "off_topk_mass": off,
        }
        for i in range(len(_NOISE))
    ]


def _verdicts(moe: dict[str, Any]) -> dict[str, str]:
    return {c.id: c.verdict for c in topk._moe_claims(moe)}


def test_moe_claims_need_the_negative_control_and_sparse_annealing() -> None:
    base = {a: _fake(0.80, shift=int(a != "hard_topk")) for a in topk.ARMS}
    base["frozen"] = _fake(0.70, shift=1)
    v = _verdicts(base)
    assert v["moe_frozen_control"] == "reproduced"
    assert all(v[f"moe_{a}_{m}"] == "reproduced" for m in topk.METHODS for a in ("st", "anneal"))
    # a router 5 points worse is shown worse than the margin
    worse = {**base, "st_exp": _fake(0.75, shift=2)}
    assert _verdicts(worse)["moe_st_exp"] == "not reproduced"
    # if the frozen control is as good as hard top-k the margin cannot separate anything
    no_control = {**base, "frozen": _fake(0.80, shift=3)}
    v = _verdicts(no_control)
    assert v["moe_frozen_control"] != "reproduced"
    assert all(v[f"moe_{a}_{m}"] == "inconclusive" for m in topk.METHODS for a in ("st", "anneal"))
    # an annealed router that did not end sparse is not the router the claim is about
    dense = {**base, "anneal_laplace": _fake(0.80, off=2 * topk.ANNEAL_SPARSE, shift=4)}
    v = _verdicts(dense)
    assert v["moe_anneal_laplace"] == "inconclusive"
    assert v["moe_st_laplace"] == "reproduced"


@pytest.mark.slow
def test_quick(tmp_path: Path) -> None:
    res = topk.run(topk.PRESETS["quick"], tmp_path)
    assert all(c.verdict in ("reproduced", "not reproduced", "inconclusive") for c in res.claims if c.id != "items")
    assert all(c.seeds == topk.PRESETS["quick"].moe.seeds for c in res.claims if c.id.startswith("moe_"))


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [("moe.k", "5", "moe.k"), ("moe.rotations", "0", "moe.rotations"), ("moe.tau_end", "0", "tau_end")],
)
def test_bad_moe_settings_are_rejected(key: str, value: str, match: str) -> None:
    from kexue.experiments._base import ConfigError, apply_overrides

    with pytest.raises(ConfigError, match=match):
        apply_overrides(topk.PRESETS["quick"], {key: value})
