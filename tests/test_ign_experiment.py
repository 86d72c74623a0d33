"""The IGN experiment: the smoke preset runs end to end with the claims' bookkeeping, the Frechet distance matches
its closed form, the stacked ring MLP equals separate MLPs, and the quick preset is a slow test."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from kexue.experiments import get
from kexue.experiments._base import KINDS, VERDICTS
from kexue.experiments._ign_ring import RingConfig, StackedMLP, ring_metrics


def test_frechet_distance_closed_form(gen: torch.Generator) -> None:
    fd = get("ign").frechet_distance
    a = torch.randn(4000, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(4000, 3, generator=gen, dtype=torch.float64) * 2 + 1
    # N(0, I) vs N(1, 4I) in 3-d: |mu|^2 + tr(I + 4I - 2 * 2I) = 3 + 3 = 6
    assert abs(fd(a, b) - 6.0) < 0.3
    assert abs(fd(a, a)) < 1e-6


def test_stacked_mlp_rows_meet_only_their_model(gen: torch.Generator) -> None:
    f = StackedMLP((2, 8, 2), [0, 1, 2])
    x = torch.randn(3 * 5, 2, generator=gen)
    y = f(x)
    for s in range(3):
        h = torch.relu(x[5 * s : 5 * s + 5] @ f.weights[0][s] + f.biases[0][s])
        torch.testing.assert_close(y[5 * s : 5 * s + 5], h @ f.weights[1][s] + f.biases[1][s])
    # the same seed gives the same initial model, whatever the other seeds are
    torch.testing.assert_close(StackedMLP((2, 8, 2), [1]).weights[0][0], f.weights[0][1])


def test_ring_metrics_counts_modes() -> None:
    cfg = RingConfig(n_eval=800)
    ang = torch.arange(800) % 8 * (2 * math.pi / 8)
    on_ring = 2.0 * torch.stack([ang.cos(), ang.sin()], -1)
    one_mode = torch.tensor([[2.0, 0.0]]).repeat(800, 1)
    m = ring_metrics(cfg, torch.cat([on_ring, one_mode, torch.zeros(800, 2)]))
    assert m["modes"] == [8, 1, 0] and m["collapsed"] == [False, True, True]
    assert m["hq"] == [1.0, 1.0, 0.0]


def test_smoke_preset(tmp_path: Path) -> None:
    exp = get("ign")
    cfg = exp.PRESETS["smoke"]
    res = exp.run(cfg, tmp_path)
    assert [c.id for c in res.claims] == list(exp.CLAIMS)
    for c in res.claims:
        assert c.kind in KINDS and c.verdict in VERDICTS, c
        if c.kind == "claim":
            assert c.test and c.mde is not None, c
            if c.id in ("one_step_samples", "mode_collapse"):
                assert c.seeds == cfg.seeds, c
            elif c.id != "idempotent":
                assert c.seeds == cfg.ring.seeds, c
    by_id = {c.id: c for c in res.claims}
    assert by_id["single_loss_gradients"].kind == "check"
    assert by_id["single_loss_gradients"].verdict == "reproduced"
    # every ring arm's activity (initial vs final) is recorded and named in the evidence
    for arm in exp.RING_ARMS:
        r = res.metrics["ring"][arm]
        assert len(r["final"]["modes"]) == cfg.ring.seeds and len(r["init"]["hq"]) == cfg.ring.seeds
    assert "wgan_gp" in by_id["gan_no_more_stable"].evidence and "Fisher" in by_id["gan_no_more_stable"].test
    for r in res.metrics["mnist"]:
        assert r["history"][-1]["loss"] < r["history"][0]["loss"]
        assert math.isfinite(r["one_step"]["fd"])
    for p in res.plots:
        assert (tmp_path / p).is_file()


@pytest.mark.slow
def test_quick_preset(tmp_path: Path) -> None:
    exp = get("ign")
    res = exp.run(exp.PRESETS["quick"], tmp_path)
    assert all(c.verdict in VERDICTS for c in res.claims)
