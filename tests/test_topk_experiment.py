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
    for variant, runs in res.metrics["moe"].items():
        for r in runs:
            assert math.isfinite(r["loss_last"]), variant
            assert r["loss_last"] < r["loss_first"], variant
            assert 0.0 <= r["test_acc"] <= 1.0
    for variant, r in res.metrics["items"].items():
        assert r["loss_last"] < r["loss_first"], variant
    assert (tmp_path / res.plots[0]).exists()
    # the property cells that do not depend on training are already decided at smoke size
    verdicts = {c.id: c.verdict for c in res.claims}
    assert verdicts["gradtopk_sum"] == "reproduced"
    assert verdicts["iterative_range"] == "reproduced"


@pytest.mark.slow
def test_quick(tmp_path: Path) -> None:
    res = topk.run(topk.PRESETS["quick"], tmp_path)
    assert all(c.verdict in ("reproduced", "not reproduced", "inconclusive") for c in res.claims)
