"""The topk experiment: the smoke preset runs end to end (finite metrics, losses go down); quick is slow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kexue.experiments import topk


def test_smoke(tmp_path: Path) -> None:
    res = topk.run(topk.PRESETS["smoke"], tmp_path)
    ids = {c.id for c in res.claims}
    assert ids == set(topk.CLAIMS)
    for c in res.claims:
        assert c.kind in ("check", "claim"), c.id
        if c.kind == "claim":
            assert c.seeds is not None and c.seeds >= 1 and c.test, c.id
    kinds = {c.id: c.kind for c in res.claims}
    assert all(kinds[f"moe_{m}"] == "claim" and kinds[f"items_{m}"] == "claim" for m in topk.METHODS)
    assert all(kinds[f"{m}_{p}"] == "check" for m in topk.METHODS for p in topk.PROPS)
    for variant, runs in res.metrics["moe"].items():
        for r in runs:
            assert math.isfinite(r["loss_last"]), variant
            assert r["loss_last"] < r["loss_first"], variant
            assert 0.0 <= r["test_acc"] <= 1.0
    for variant, r in res.metrics["items"].items():
        assert len(r["test_hard_acc"]) == topk.PRESETS["smoke"].items.seeds
        assert all(last < first for first, last in zip(r["loss_first"], r["loss_last"])), variant
    assert (tmp_path / res.plots[0]).exists()
    # the property cells that do not depend on training are already decided at smoke size
    verdicts = {c.id: c.verdict for c in res.claims}
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


@pytest.mark.slow
def test_quick(tmp_path: Path) -> None:
    res = topk.run(topk.PRESETS["quick"], tmp_path)
    assert all(c.verdict in ("reproduced", "not reproduced", "inconclusive") for c in res.claims)
