"""The ptuning experiment: the smoke preset (a tiny random-init Llama) runs end to end; quick (SmolLM2) is slow."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

from kexue.data import DataError
from kexue.experiments import ptuning
from kexue.experiments._base import KINDS, VERDICTS


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    out = tmp_path_factory.mktemp("ptuning")
    try:
        return ptuning.run(ptuning.PRESETS["smoke"], out), out
    except DataError as e:  # pragma: no cover - data cache missing
        pytest.skip(str(e))


def test_smoke_runs_every_arm_on_the_shared_test_set_and_training_lowers_the_loss(smoke: tuple[Any, Path]) -> None:
    res, out = smoke
    cfg = ptuning.PRESETS["smoke"]
    row = res.metrics["accuracy"]["imdb/gpt/n8"]
    assert set(row) == {"zeroshot_t0", "zeroshot_t1", "probe", "pt_none", "pt_mlp", "pt_lstm", "pt_su", "pt_su_aux"}
    for cell in row.values():
        assert all(math.isfinite(a) and 0 <= a <= 1 for a in cell["seeds"])
    # every run keeps its per-review answers on the same test reviews
    assert all(len(r["correct"]) == cfg.n_test for r in res.metrics["runs"].values())
    trained = [r for r in res.metrics["runs"].values() if "loss" in r]
    assert len(trained) == 5 * cfg.seeds
    assert all(len(r["loss"]) == cfg.steps and all(math.isfinite(x) for x in r["loss"]) for r in trained)
    assert all(r["drift"] > 0 for r in trained)  # every prompt left the template
    # a random-init LM barely reacts to its input, so only ask that some run's loss went down
    assert min(r["loss"][-1] - r["loss"][0] for r in trained) < 0
    assert (out / res.plots[0]).is_file()


def test_smoke_claims_record_seeds_mde_and_test(smoke: tuple[Any, Path]) -> None:
    res, _ = smoke
    assert {c.id for c in res.claims} == set(ptuning.CLAIMS)
    by_id = {c.id: c for c in res.claims}
    for c in res.claims:
        assert c.kind in KINDS and c.verdict in VERDICTS, c
        if c.kind == "claim" and c.verdict != "not testable":
            assert c.test and c.seeds == ptuning.PRESETS["smoke"].seeds and c.mde is not None, c
    # the template start and the cached review are exact, and the checks say so
    assert by_id["init_equals_template"].verdict == "reproduced"
    assert by_id["cached_suffix_exact"].verdict == "reproduced"
    # smoke runs the prefix arms, so Su's prefix and auxiliary-loss claims are decided, not skipped
    assert by_id["prefix_matters"].verdict != "not testable"
    assert by_id["aux_lm_helps"].verdict != "not testable"
    for cid in ("ptuning_vs_handwritten_bert", "gpt_close_to_bert"):
        assert by_id[cid].verdict == "not testable" and "MLM head" in by_id[cid].evidence


def test_cached_review_scores_equal_the_full_forward_and_a_wrong_offset_does_not() -> None:
    try:
        lm, tok = ptuning._tiny_model()
    except DataError as e:  # pragma: no cover - data cache missing
        pytest.skip(str(e))
    lm.requires_grad_(False)
    T = 6
    pt = ptuning._make_pt(lm, tok, "pt_mlp", T, 0.0)
    sx = ptuning._Suffix(pt, T)
    g = torch.Generator().manual_seed(0)
    texts = torch.randint(100, 5000, (3, T), generator=g).tolist()
    cache = ptuning._encode_prefix(lm, torch.tensor([sx.head + t for t in texts]))
    rows = torch.arange(3)
    with torch.no_grad():
        got = ptuning._suffix_scores(lm, cache, rows, sx.embeds().expand(3, -1, -1), pt.label_ids)
        ref = pt.predict(ptuning._enc_dict(pt, texts))
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        # negative control: the suffix one position too far to the right scores differently
        wrong = ptuning._Cache(cache.keys[..., 1:, :], cache.values[..., 1:, :], cache.pooled)
        shifted = ptuning._suffix_scores(lm, wrong, rows, sx.embeds().expand(3, -1, -1), pt.label_ids)
        assert not torch.allclose(shifted, ref, atol=1e-5)


def test_suffix_layout_rejects_prompts_before_the_text() -> None:
    try:
        lm, tok = ptuning._tiny_model()
    except DataError as e:  # pragma: no cover - data cache missing
        pytest.skip(str(e))
    pt = ptuning._make_pt(lm, tok, "pt_su", 6, 0.0)
    with pytest.raises(ValueError, match="not a suffix layout"):
        ptuning._Suffix(pt, 6)


@pytest.mark.slow
def test_quick_preset_real_model(tmp_path: Path) -> None:
    res = ptuning.run(ptuning.PRESETS["quick"], tmp_path)
    by_id = {c.id: c for c in res.claims}
    assert by_id["init_equals_template"].verdict == "reproduced"
    assert by_id["cached_suffix_exact"].verdict == "reproduced"
    runs = res.metrics["runs"]
    assert all(len(r["correct"]) == 400 for r in runs.values())
    c = by_id["ptuning_vs_handwritten_gpt"]
    assert c.seeds == 3 and c.mde is not None and c.test


def test_joint_suffix_training_equals_separate_runs() -> None:
    """The runs share one batched forward per step; Adam is per parameter and the losses are summed, so each run's
    prompt ends where it would alone (up to float rounding of the batched matmuls)."""
    try:
        lm, tok = ptuning._tiny_model()
    except DataError as e:  # pragma: no cover - data cache missing
        pytest.skip(str(e))
    lm.requires_grad_(False)
    T = 6
    cfg = ptuning.Config(models="tiny", steps=5, batch_size=2, lr=1e-2, text_tokens=T)
    g = torch.Generator().manual_seed(0)
    pool = torch.randint(100, 5000, (8, T), generator=g).tolist()
    y = torch.tensor([0, 1] * 4)

    def make(arm: str, seed: int) -> Any:
        torch.manual_seed(seed)
        pt = ptuning._make_pt(lm, tok, arm, T, 0.0)
        rows = torch.arange(8)
        return ptuning._Run(f"{arm}/{seed}", arm, 8, seed, pt, rows, ptuning._plan(rows, 5, 2, seed), [], [])

    def train(runs: list[Any]) -> None:
        sfx = [ptuning._Suffix(r.pt, T) for r in runs]
        cache = ptuning._encode_prefix(lm, torch.tensor([sfx[0].head + t for t in pool]))
        ptuning._train_suffix(lm, runs, sfx, cache, y, cfg)

    joint = [make("pt_none", 0), make("pt_mlp", 1)]
    train(joint)
    for r in joint:
        alone = make(r.arm, r.seed)
        train([alone])
        torch.testing.assert_close(alone.pt.prompt(), r.pt.prompt(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.tensor(alone.losses), torch.tensor(r.losses), rtol=1e-4, atol=1e-5)
    # and the prompts did move (the comparison is not between two untouched starts)
    start = make("pt_none", 0).pt.prompt()
    assert not torch.allclose(joint[0].pt.prompt(), start, atol=1e-3)
