"""The ptuning experiment: the smoke preset (tiny random-init LMs) runs end to end; quick (real LMs) is
slow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from kexue.data import DataError
from kexue.experiments import ptuning
from kexue.experiments._base import KINDS, VERDICTS


def _finite_accuracies(metrics: dict) -> list[float]:
    out = []
    for row in metrics["accuracy"].values():
        for cell in row.values():
            out += cell["seeds"]
    return out


def test_smoke_runs_and_training_lowers_the_loss(tmp_path: Path) -> None:
    try:
        res = ptuning.run(ptuning.PRESETS["smoke"], tmp_path)
    except DataError as e:  # pragma: no cover - data cache missing
        pytest.skip(str(e))
    accs = _finite_accuracies(res.metrics)
    assert accs
    assert all(math.isfinite(a) and 0 <= a <= 1 for a in accs)
    assert {"imdb/bert/n8", "imdb/gpt/n8", "chinese/gpt/n8"} <= set(res.metrics["accuracy"])
    trained = [r for r in res.metrics["runs"].values() if "loss" in r]
    assert trained
    assert all(all(math.isfinite(x) for x in r["loss"]) for r in trained)
    assert min(r["loss"][-1] - r["loss"][0] for r in trained) < 0
    assert {c.id for c in res.claims} == set(ptuning.CLAIMS)
    for c in res.claims:
        assert c.kind in KINDS and c.verdict in VERDICTS, c
        if c.kind == "claim" and c.verdict != "not testable":
            assert c.test and c.seeds is not None and c.mde is not None, c
    # every run keeps its per-review answers, aligned with the test set
    assert all(len(r["correct"]) == ptuning.PRESETS["smoke"].n_test for r in res.metrics["runs"].values())
    by_id = {c.id: c for c in res.claims}
    # random-init tiny models are at chance: the BERT-side claims say "not testable", with the numbers
    for cid in ("ptuning_vs_handwritten_bert", "gpt_close_to_bert"):
        if by_id[cid].verdict == "not testable":
            assert "chance" in by_id[cid].evidence
    assert (tmp_path / res.plots[0]).is_file()
    # resume reuses every finished run
    again = ptuning.run(ptuning.PRESETS["smoke"], tmp_path, resume=True)
    assert again.metrics["accuracy"] == res.metrics["accuracy"]


@pytest.mark.slow
def test_quick_preset_real_models(tmp_path: Path) -> None:
    res = ptuning.run(ptuning.PRESETS["quick"], tmp_path)
    accs = _finite_accuracies(res.metrics)
    assert accs
    assert all(math.isfinite(a) for a in accs)
    assert len(res.claims) == 3
