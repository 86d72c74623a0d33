"""SimSiam / BYOL: losses, heads, collapse diagnostics, stop-gradient, EMA, ablation flags, and a real
2-process DDP step compared with one process on the concatenated batch."""

from __future__ import annotations

import copy
import gc
import math
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kexue.losses import (
    NegativeCosineSimilarity,
    NormalizedMSELoss,
    negative_cosine_similarity,
    normalized_mse,
)
from kexue.methods import BYOL, SimSiam, cosine_schedule, cosine_tau, ema_update_
from kexue.modules import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    SyncBatchNorm1d,
    convert_sync_batchnorm,
)
from kexue.ops import effective_rank, normalized_std

# ---------------------------------------------------------------- losses


def _naive_neg_cos(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    out = []
    for i in range(p.shape[0]):
        num = sum(float(p[i, j]) * float(z[i, j]) for j in range(p.shape[1]))
        den = math.sqrt(sum(float(v) ** 2 for v in p[i])) * math.sqrt(sum(float(v) ** 2 for v in z[i]))
        out.append(-num / den)
    return torch.tensor(out, dtype=torch.float64)


def test_negative_cosine_matches_naive_loop(gen: torch.Generator) -> None:
    p, z = (
        torch.randn(5, 7, generator=gen, dtype=torch.float64),
        torch.randn(5, 7, generator=gen, dtype=torch.float64),
    )
    ref = _naive_neg_cos(p, z)
    torch.testing.assert_close(negative_cosine_similarity(p, z, reduction="none"), ref)
    torch.testing.assert_close(normalized_mse(p, z, reduction="none"), 2 + 2 * ref)


@given(
    b=st.integers(2, 6),
    d=st.integers(2, 9),
    seed=st.integers(0, 10_000),
    scale=st.floats(1e-3, 1e3),
)
def test_loss_bounds_and_reductions(b: int, d: int, seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    p, z = torch.randn(b, d, generator=g) * scale, torch.randn(b, d, generator=g)
    nc = negative_cosine_similarity(p, z, reduction="none")
    nm = normalized_mse(p, z, reduction="none")
    assert nc.shape == (b,)
    assert bool((nc >= -1 - 1e-5).all() and (nc <= 1 + 1e-5).all())
    assert bool((nm >= -1e-5).all() and (nm <= 4 + 1e-5).all())
    torch.testing.assert_close(negative_cosine_similarity(p, z), nc.mean())
    torch.testing.assert_close(negative_cosine_similarity(p, z, reduction="sum"), nc.sum())
    torch.testing.assert_close(NormalizedMSELoss(reduction="sum")(p, z), nm.sum())
    # extremes: identical -> -1 / 0, opposite -> +1 / 4, invariant to positive scaling
    torch.testing.assert_close(negative_cosine_similarity(p, 3 * p), torch.tensor(-1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalized_mse(p, -p), torch.tensor(4.0), atol=1e-5, rtol=0)


def test_loss_gradcheck_float64(gen: torch.Generator) -> None:
    p = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    z = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: negative_cosine_similarity(a, b), (p, z))
    assert torch.autograd.gradcheck(lambda a, b: normalized_mse(a, b, reduction="none"), (p, z))
    assert torch.autograd.gradgradcheck(lambda a, b: normalized_mse(a, b), (p, z))


def test_loss_errors() -> None:
    with pytest.raises(ValueError, match="same shape"):
        negative_cosine_similarity(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="reduction"):
        normalized_mse(torch.ones(2, 3), torch.ones(2, 3), reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction"):
        NegativeCosineSimilarity(reduction="max")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"prediction must be a torch\.Tensor"):
        normalized_mse([1.0], torch.ones(1))  # type: ignore[arg-type]


# ---------------------------------------------------------------- collapse diagnostics


@pytest.mark.parametrize("d", [4, 16, 64])
def test_normalized_std_isotropic_gaussian_is_one_over_sqrt_d(d: int, gen: torch.Generator) -> None:
    z = torch.randn(20_000, d, generator=gen, dtype=torch.float64) * 3.0 + 0.0
    assert abs(float(normalized_std(z)) * math.sqrt(d) - 1) < 0.02


def test_collapse_metrics_constant_and_line(gen: torch.Generator) -> None:
    const = torch.randn(1, 8, generator=gen).expand(50, 8).contiguous()
    assert float(normalized_std(const)) == pytest.approx(0.0, abs=1e-6)
    assert float(effective_rank(const)) == 0.0
    line = torch.randn(50, 1, generator=gen) * torch.randn(1, 8, generator=gen)
    assert float(effective_rank(line)) == pytest.approx(1.0, abs=1e-4)


def test_effective_rank_isotropic_and_dtype(gen: torch.Generator) -> None:
    z = torch.randn(20_000, 10, generator=gen, dtype=torch.float64)
    r = effective_rank(z)
    assert r.dtype == torch.float64
    assert 9.9 < float(r) <= 10.0
    # two equal-variance directions and nothing else -> exactly 2
    two = torch.zeros(4, 5, dtype=torch.float64)
    two[0, 0], two[1, 0], two[2, 1], two[3, 1] = 1, -1, 1, -1
    assert float(effective_rank(two)) == pytest.approx(2.0)


def test_collapse_metric_errors() -> None:
    with pytest.raises(ValueError, match="z must have 2 dimensions"):
        normalized_std(torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        effective_rank(torch.zeros(1, 4))


# ---------------------------------------------------------------- heads


def test_simsiam_heads_match_paper_shapes() -> None:
    proj = SimSiamProjectionHead(2048)
    lin = [m for m in proj.modules() if isinstance(m, nn.Linear)]
    bns = [m for m in proj.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [(m.in_features, m.out_features) for m in lin] == [(2048, 2048)] * 3
    assert len(bns) == 3  # BN on every fc, the output one without affine
    assert bns[-1].affine is False
    assert all(b.affine for b in bns[:-1])
    assert not isinstance(proj.net[-1], nn.ReLU)  # output fc has no ReLU
    assert sum(isinstance(m, nn.ReLU) for m in proj.modules()) == 2
    pred = SimSiamPredictionHead()
    lin = [m for m in pred.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(2048, 512), (512, 2048)]  # d/4 bottleneck
    assert isinstance(pred.net[-1], nn.Linear)  # no BN, no ReLU on the output
    assert sum(isinstance(m, nn.BatchNorm1d) for m in pred.modules()) == 1
    cifar = SimSiamProjectionHead(512, num_layers=2)
    assert sum(isinstance(m, nn.Linear) for m in cifar.modules()) == 2


def test_byol_heads_match_paper_shapes() -> None:
    proj, pred = BYOLProjectionHead(2048), BYOLPredictionHead()
    for head, dims in ((proj, [(2048, 4096), (4096, 256)]), (pred, [(256, 4096), (4096, 256)])):
        lin = [m for m in head.modules() if isinstance(m, nn.Linear)]
        assert [(m.in_features, m.out_features) for m in lin] == dims
        assert sum(isinstance(m, nn.BatchNorm1d) for m in head.modules()) == 1
    assert BYOLProjectionHead(8, 16, 4)(torch.randn(3, 8)).shape == (3, 4)


def test_head_errors() -> None:
    with pytest.raises(ValueError, match="hidden_dim"):
        SimSiamProjectionHead(8, 0)
    with pytest.raises(ValueError, match="num_layers"):
        SimSiamProjectionHead(8, 8, 8, num_layers=0)


@pytest.mark.parametrize(
    "head",
    [
        SimSiamProjectionHead(6, 8, 8, num_layers=2),
        SimSiamPredictionHead(6, 4),
        BYOLProjectionHead(6, 8, 4),
        BYOLPredictionHead(6, 8),
        SyncBatchNorm1d(6),
    ],
    ids=lambda h: type(h).__name__,
)
def test_heads_name_a_bad_x(head: nn.Module) -> None:
    """Before: a NaN spread through the batch statistics to every row, an int or 1-D x failed deep inside."""
    x = torch.randn(4, 6)
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        head(bad)
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        head(x.long())
    with pytest.raises(ValueError, match="x must have 2"):
        head(x[0])
    with pytest.raises(ValueError, match="x must not be empty"):
        head(x[:0])


def test_sync_batchnorm_eps_and_3d_input(gen: torch.Generator) -> None:
    for eps, error in ((float("nan"), ValueError), (float("inf"), ValueError), (True, TypeError), ("1", TypeError)):
        with pytest.raises(error, match="eps"):
            SyncBatchNorm1d(4, eps=eps)  # type: ignore[arg-type]
    # (B, C, L) stays valid outside synchronised training, as for nn.BatchNorm1d (convert_sync_batchnorm
    # converts every BatchNorm1d, those after a Conv1d included)
    x = torch.randn(3, 4, 5, generator=gen)
    torch.testing.assert_close(SyncBatchNorm1d(4)(x), nn.BatchNorm1d(4)(x))


def test_sync_batchnorm_single_process_is_batchnorm(gen: torch.Generator) -> None:
    bn = nn.BatchNorm1d(5)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
    net = nn.Sequential(nn.Linear(3, 5), bn)
    conv = convert_sync_batchnorm(copy.deepcopy(net))
    assert isinstance(conv[1], SyncBatchNorm1d)
    x = torch.randn(7, 3, generator=gen)
    torch.testing.assert_close(conv(x), net(x))
    torch.testing.assert_close(conv[1].running_var, net[1].running_var)
    assert convert_sync_batchnorm(nn.BatchNorm1d(2, affine=False).double()).running_mean.dtype == torch.float64


# ---------------------------------------------------------------- systems


def _backbone(d_in: int = 12, d_out: int = 10) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, d_out), nn.ReLU())


def _simsiam(**kw: object) -> SimSiam:
    torch.manual_seed(3)
    return SimSiam(_backbone(), 10, dim=8, hidden_dim=16, **kw)  # type: ignore[arg-type]


def _views(b: int = 16, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(b, 12, generator=g, dtype=dtype), torch.randn(b, 12, generator=g, dtype=dtype)


def _grads(m: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def test_simsiam_stop_gradient_only_on_target_branch() -> None:
    x1, x2 = _views(dtype=torch.float64)
    m = _simsiam().double()
    m(x1, x2)["loss"].backward()
    got = _grads(m)
    # reference: the targets computed as constants by a separate forward of an identical copy
    ref = copy.deepcopy(m)
    ref.zero_grad()
    with torch.no_grad():
        c1, c2 = copy.deepcopy(ref).project(x1), copy.deepcopy(ref).project(x2)
    z1, z2 = ref.project(x1), ref.project(x2)
    loss = 0.5 * negative_cosine_similarity(ref.predictor(z1), c2) + 0.5 * negative_cosine_similarity(
        ref.predictor(z2), c1
    )
    loss.backward()
    want = _grads(ref)
    assert got.keys() == want.keys()
    assert len(got) == len(list(m.parameters()))  # every online param gets a grad
    for n in got:
        torch.testing.assert_close(got[n], want[n])
    assert all(float(g.abs().sum()) > 0 for n, g in got.items() if "running" not in n)


def test_no_stop_gradient_changes_only_the_gradient() -> None:
    x1, x2 = _views()
    a, b = _simsiam(), _simsiam(stop_gradient=False)
    oa, ob = a(x1, x2), b(x1, x2)
    torch.testing.assert_close(oa["loss"], ob["loss"])  # same forward
    oa["loss"].backward()
    ob["loss"].backward()
    ga, gb = _grads(a), _grads(b)
    torch.testing.assert_close(ga["predictor.net.0.weight"], gb["predictor.net.0.weight"])  # predictor: no change
    assert not torch.allclose(ga["backbone.0.weight"], gb["backbone.0.weight"])  # encoder gets the extra term


def test_predictor_none_and_frozen() -> None:
    x1, x2 = _views()
    none = _simsiam(predictor="none")
    assert isinstance(none.predictor, nn.Identity)
    out = none(x1, x2)
    torch.testing.assert_close(out["p1"], out["z1"])
    assert [g["name"] for g in none.parameter_groups()] == ["encoder"]

    mlp, frozen = _simsiam(), _simsiam(predictor="frozen")
    torch.testing.assert_close(mlp(x1, x2)["loss"], frozen(x1, x2)["loss"])  # same init, same forward
    assert all(not p.requires_grad for p in frozen.predictor.parameters())
    assert [g["name"] for g in frozen.parameter_groups()] == ["encoder"]
    before = copy.deepcopy(frozen.predictor.state_dict())
    opt = torch.optim.SGD(frozen.parameters(), lr=0.5)
    frozen(x1, x2)["loss"].backward()
    opt.step()
    after = frozen.predictor.state_dict()
    for k, v in before.items():
        if "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(after[k], v)  # weights stay at their random init
    assert all(p.grad is None for p in frozen.predictor.parameters())
    with pytest.raises(ValueError, match="predictor"):
        _simsiam(predictor="linear")


def test_fix_predictor_lr_flag_and_schedule() -> None:
    for fix in (True, False):
        m = _simsiam(fix_predictor_lr=fix)
        groups = m.parameter_groups()
        assert [g["fix_lr"] for g in groups] == [False, fix]
        n_params = sum(len(g["params"]) for g in groups)
        assert n_params == len(list(m.parameters()))
        opt = torch.optim.SGD(groups, lr=0.1)
        sched = cosine_schedule(opt, 4)
        for _ in range(2):
            opt.step()
            sched.step()
        enc, pred = opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]
        assert enc == pytest.approx(0.05)  # half way down the cosine
        assert pred == pytest.approx(0.1 if fix else 0.05)
    with pytest.raises(ValueError, match="total_steps"):
        cosine_schedule(opt, 0)


def test_asymmetric_loss_is_one_term() -> None:
    x1, x2 = _views()
    m = _simsiam(symmetric=False)
    out = m(x1, x2)
    torch.testing.assert_close(out["loss"], negative_cosine_similarity(out["p1"], out["z2"]))
    assert out["p2"].numel() == 0
    sym = _simsiam()(x1, x2)
    torch.testing.assert_close(out["z1"], sym["z1"])


def test_simsiam_loss_range_and_monitors() -> None:
    x1, x2 = _views()
    out = _simsiam()(x1, x2)
    assert -1.0 <= float(out["loss"].detach()) <= 1.0
    assert 0.0 < float(out["std"]) <= 1.0
    with pytest.raises(ValueError, match="same shape"):
        _simsiam()(x1, x2[:4])


def test_byol_gradients_only_online_and_target_is_copy() -> None:
    torch.manual_seed(0)
    m = BYOL(_backbone(), 10, hidden_dim=16, dim=8)
    for (n, p), (_, q) in zip(m.backbone.named_parameters(), m.target_backbone.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=n)
    x1, x2 = _views()
    out = m(x1, x2)
    assert 0.0 <= float(out["loss"]) <= 8.0
    out["loss"].backward()
    for n, p in m.named_parameters():
        if n.startswith("target_"):
            assert not p.requires_grad, n
            assert p.grad is None, n
        else:
            assert p.grad is not None, n
            assert float(p.grad.abs().sum()) > 0, n
    assert len(m.parameter_groups()[0]["params"]) == sum(1 for n, _ in m.named_parameters() if "target" not in n)


def test_cosine_tau_closed_form() -> None:
    assert cosine_tau(0, 10) == pytest.approx(0.996)
    assert cosine_tau(5, 10) == pytest.approx(1 - 0.004 * 0.5)
    assert cosine_tau(10, 10) == 1.0
    assert cosine_tau(99, 10) == 1.0
    with pytest.raises(ValueError, match="total_steps"):
        cosine_tau(1, 0)


def test_ema_update_closed_form(gen: torch.Generator) -> None:
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    target = copy.deepcopy(online)
    with torch.no_grad():
        for p in target.parameters():
            p.normal_(generator=gen)
    xi0 = [p.clone() for p in target.parameters()]
    theta = [p.clone() for p in online.parameters()]
    tau, k = 0.9, 5
    for _ in range(k):
        ema_update_(target, online, tau=tau)
    for t, a, b in zip(target.parameters(), xi0, theta, strict=True):
        torch.testing.assert_close(t, tau**k * a + (1 - tau**k) * b)  # geometric closed form
    with pytest.raises(ValueError, match="tau"):
        ema_update_(target, online, tau=1.5)
    with pytest.raises(ValueError, match="buffers"):
        ema_update_(target, online, tau=0.5, buffers="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="structure"):
        ema_update_(target, nn.Linear(3, 4), tau=0.5)


@pytest.mark.parametrize("policy", ["copy", "ema", "own"])
def test_ema_buffer_policy(policy: str, gen: torch.Generator) -> None:
    online, target = nn.BatchNorm1d(4), nn.BatchNorm1d(4)
    online(torch.randn(8, 4, generator=gen) * 3 + 2)  # online running stats move
    target(torch.randn(8, 4, generator=gen) - 5)  # the target's own running stats
    t_mean, o_mean = target.running_mean.clone(), online.running_mean.clone()
    o_nbt = online.num_batches_tracked.clone()
    online.num_batches_tracked += 4
    ema_update_(target, online, tau=0.75, buffers=policy)  # type: ignore[arg-type]
    want = {"copy": o_mean, "ema": 0.75 * t_mean + 0.25 * o_mean, "own": t_mean}[policy]
    torch.testing.assert_close(target.running_mean, want)
    if policy != "own":
        assert int(target.num_batches_tracked) == int(o_nbt) + 4
    else:
        assert int(target.num_batches_tracked) == 1


def test_byol_update_target_through_fit() -> None:
    from kexue.train import fit

    torch.manual_seed(0)
    m = BYOL(_backbone(), 10, hidden_dim=16, dim=8, tau_base=0.9)
    x = torch.randn(64, 12)
    total = 4
    taus: list[float] = []

    def step(model: nn.Module, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        (xb,) = batch
        return model(xb + 0.1 * torch.randn_like(xb), xb + 0.1 * torch.randn_like(xb))

    fit(
        m,
        [x],
        epochs=1,
        batch_size=16,
        optimizer=lambda mod: torch.optim.SGD(mod.parameter_groups(), lr=0.05),
        step=step,
        after_step=lambda mod, k: taus.append(mod.update_target(k, total)),
        device="cpu",
        progress=False,
    )
    assert taus == pytest.approx([cosine_tau(k, total, base=0.9) for k in range(1, total + 1)])
    # tau reached 1 at the last step; the target moved during training and differs from the online net
    assert not torch.allclose(m.target_projector.net[0].weight, m.projector.net[0].weight)


def test_float64_end_to_end() -> None:
    x1, x2 = _views(dtype=torch.float64)
    for m in (_simsiam().double(), BYOL(_backbone(), 10, hidden_dim=16, dim=8).double()):
        out = m(x1, x2)
        assert out["loss"].dtype == torch.float64
        out["loss"].backward()


# ---------------------------------------------------------------- DDP: 2 real processes, gloo, CPU


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make(kind: str, sync: bool) -> nn.Module:
    torch.manual_seed(11)
    if kind == "simsiam":
        m: nn.Module = SimSiam(_backbone(), 10, dim=8, hidden_dim=16, sync_batchnorm=sync)
    else:
        m = BYOL(_backbone(), 10, hidden_dim=16, dim=8, sync_batchnorm=sync)
    return m.double()


def _one_step(model: nn.Module, step_model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameter_groups(), lr=0.5, momentum=0.9, weight_decay=1e-4)  # type: ignore[operator]
    opt.zero_grad()
    step_model(x1, x2)["loss"].backward()
    opt.step()


def _ddp_worker(rank: int, port: int, out: str, x1: torch.Tensor, x2: torch.Tensor) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        half = x1.shape[0] // 2
        sl = slice(rank * half, (rank + 1) * half)
        for kind in ("simsiam", "byol"):
            m = _make(kind, sync=True)
            ddp = nn.parallel.DistributedDataParallel(m)
            _one_step(m, ddp, x1[sl], x2[sl])
            if rank == 0:
                torch.save(m.state_dict(), Path(out) / f"{kind}.pt")
            # Free the DDP wrapper while the process group is alive: a Reducer destroyed after
            # destroy_process_group tears down the gloo group while holding the GIL, and a gloo worker thread
            # that needs the GIL then deadlocks the exit.
            del ddp, m
            gc.collect()
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_equal_one_process_on_concatenated_batch(tmp_path: Path) -> None:
    x1, x2 = _views(b=16, dtype=torch.float64)
    # spawn, not fork: a forked child can inherit a held OpenMP/intra-op thread-pool lock and hang forever.
    mp.start_processes(
        _ddp_worker, args=(_free_port(), str(tmp_path), x1, x2), nprocs=2, join=True, start_method="spawn"
    )
    for kind in ("simsiam", "byol"):
        ref = _make(kind, sync=False)
        _one_step(ref, ref, x1, x2)
        got = torch.load(tmp_path / f"{kind}.pt")
        want = ref.state_dict()
        assert got.keys() == want.keys()
        moved = 0
        for k, v in want.items():
            torch.testing.assert_close(got[k], v, rtol=1e-9, atol=1e-10, msg=f"{kind}: {k}")
            moved += int(k.endswith("weight") and not torch.equal(v, _make(kind, sync=False).state_dict()[k]))
        assert moved > 0


# ---------------------------------------------------------------- scale safety, validation, batch of one

SCALES = [(torch.float32, s) for s in (1e20, 1e30, 1e-20, 1e-30)] + [(torch.float64, s) for s in (1e200, 1e-200)]


@pytest.mark.parametrize(("dtype", "scale"), SCALES)
def test_cosine_losses_at_any_finite_scale(dtype: torch.dtype, scale: float, gen: torch.Generator) -> None:
    """The squared norm used to overflow/underflow in F.normalize: D(p, p) came out 0 instead of -1."""
    p, z = torch.randn(5, 8, generator=gen, dtype=dtype), torch.randn(5, 8, generator=gen, dtype=dtype)
    ps = p * scale
    one = torch.tensor(1.0, dtype=dtype)
    torch.testing.assert_close(negative_cosine_similarity(ps, ps), -one)
    torch.testing.assert_close(normalized_mse(ps, -ps), 4 * one)
    torch.testing.assert_close(
        negative_cosine_similarity(ps, z, reduction="none"), negative_cosine_similarity(p, z, reduction="none")
    )
    torch.testing.assert_close(normalized_mse(z, ps, reduction="none"), normalized_mse(z, p, reduction="none"))
    a = ps.clone().requires_grad_()
    (g_s,) = torch.autograd.grad(negative_cosine_similarity(a, z), a)
    b = p.clone().requires_grad_()
    (g_1,) = torch.autograd.grad(negative_cosine_similarity(b, z), b)
    torch.testing.assert_close(g_s * scale, g_1)  # exact gradient: a scale-free loss, d/dp scales as 1/scale


@pytest.mark.parametrize(("dtype", "scale"), SCALES)
def test_collapse_monitors_at_any_finite_scale(dtype: torch.dtype, scale: float, gen: torch.Generator) -> None:
    """normalized_std used to report 0 (collapse) and effective_rank NaN or 0 for embeddings of norm 1e±20."""
    z = torch.randn(64, 6, generator=gen, dtype=dtype)
    torch.testing.assert_close(normalized_std(z * scale), normalized_std(z))
    torch.testing.assert_close(effective_rank(z * scale), effective_rank(z))
    assert float(effective_rank(z * scale)) > 5.0
    const = (torch.randn(1, 6, generator=gen, dtype=dtype) * scale).expand(10, 6).contiguous()
    assert float(effective_rank(const)) == 0.0
    assert float(normalized_std(const)) == 0.0


def test_collapse_monitors_half_precision(gen: torch.Generator) -> None:
    z = torch.randn(256, 4, generator=gen)
    for dtype in (torch.bfloat16, torch.float16):
        r = effective_rank(z.to(dtype))  # no half-precision SVD on CPU: computed in float32
        assert r.dtype == dtype
        torch.testing.assert_close(r.float(), effective_rank(z), rtol=2e-2, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eps": -1.0}, ValueError, "eps must be > 0"),
        ({"eps": 0.0}, ValueError, "eps must be > 0"),
        ({"eps": float("nan")}, ValueError, "eps must be finite"),
        ({"eps": float("inf")}, ValueError, "eps must be finite"),
        ({"eps": 2.0}, ValueError, "eps must be <= 1"),
        ({"eps": "1e-8"}, TypeError, "eps must be a real number"),
        ({"dim": 1.0}, TypeError, "dim must be an integer"),
        ({"dim": 2}, ValueError, r"dim must be in \[-2, 1\], got 2"),
    ],
)
def test_cosine_loss_options_validated(kwargs: dict, error: type, match: str) -> None:
    p = torch.randn(3, 4)
    for fn in (negative_cosine_similarity, normalized_mse):
        with pytest.raises(error, match=match):
            fn(p, p, **kwargs)
    if "dim" not in kwargs or isinstance(kwargs["dim"], float):
        for module in (NegativeCosineSimilarity, NormalizedMSELoss):
            with pytest.raises(error, match=match):
                module(**kwargs)


@pytest.mark.parametrize(
    ("prediction", "error", "match"),
    [
        (torch.ones(3, 4, dtype=torch.long), TypeError, "prediction must have a floating-point dtype"),
        (torch.ones(3, 4, dtype=torch.bool), TypeError, "prediction must have a floating-point dtype"),
        (torch.ones(3, 4, dtype=torch.complex64), TypeError, "prediction must have a floating-point dtype"),
        (torch.zeros(0, 4), ValueError, "prediction must not be empty"),
        (torch.tensor(1.0), ValueError, "prediction must have at least 1 dimension\\b"),
        (torch.tensor([[1.0, float("nan")]]), ValueError, "prediction contains NaN"),
        (torch.tensor([[1.0, float("inf")]]), ValueError, "prediction contains NaN"),
    ],
)
def test_cosine_loss_bad_inputs(prediction: torch.Tensor, error: type, match: str) -> None:
    target = torch.ones(prediction.shape) if prediction.dim() else torch.tensor(1.0)
    for fn in (negative_cosine_similarity, normalized_mse):
        with pytest.raises(error, match=match):
            fn(prediction, target)


def test_collapse_monitor_bad_inputs() -> None:
    for fn in (normalized_std, effective_rank):
        with pytest.raises(TypeError, match="z must have a floating-point dtype"):
            fn(torch.ones(4, 3, dtype=torch.long))
        with pytest.raises(ValueError, match="z contains NaN"):
            fn(torch.tensor([[1.0, 2.0], [float("inf"), 0.0]]))
        with pytest.raises(ValueError, match="z must not be empty"):
            fn(torch.zeros(3, 0))
        with pytest.raises(ValueError, match="eps must be finite"):
            fn(torch.randn(3, 2), eps=float("inf"))
    with pytest.raises(ValueError, match="eps must be > 0"):
        normalized_std(torch.randn(3, 2), eps=-1.0)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        effective_rank(torch.randn(3, 2), eps=-1.0)


@pytest.mark.parametrize("kind", ["simsiam", "byol"])
def test_batch_of_one_works_in_eval_and_is_named_in_train(kind: str) -> None:
    """Eval on one example used to fail naming an internal tensor ("z needs at least 2 rows")."""
    torch.manual_seed(0)
    m: nn.Module = _simsiam() if kind == "simsiam" else BYOL(_backbone(), 10, hidden_dim=16, dim=8)
    x1, x2 = _views(b=4)
    m.train()
    m(x1, x2)  # fills the BatchNorm running statistics
    m.eval()
    one = m(x1[:1], x2[:1])
    assert torch.isfinite(one["loss"])
    assert math.isnan(float(one["std"]))  # a spread needs two examples
    full = m(x1, x2)
    torch.testing.assert_close(one["z1"], full["z1"][:1])  # eval: per-example, batch-independent
    m.train()
    with pytest.raises(ValueError, match="batch size 1 in train mode"):
        m(x1[:1], x2[:1])
    with pytest.raises(TypeError, match=r"x1 must be a torch\.Tensor"):
        m([1.0], x2)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["simsiam", "byol"])
def test_loss_and_monitors_are_float32_under_autocast(kind: str) -> None:
    """Decided: the heads run in bf16 under autocast, the loss is a reduction computed in float32 (as
    F.cross_entropy). Before: the loss was bf16, rounded to 3 digits."""
    m: nn.Module = _simsiam() if kind == "simsiam" else BYOL(_backbone(), 10, hidden_dim=16, dim=8)
    x1, x2 = _views()
    ref = m(x1, x2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x1, x2)
    assert out["z1"].dtype == torch.bfloat16  # the heads' output: autocast's choice, left alone
    for key in ("loss", "std", "cos"):
        assert out[key].dtype == torch.float32, key
        torch.testing.assert_close(out[key], ref[key].detach(), atol=5e-2, rtol=5e-2)
    out["loss"].backward()


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: SimSiam(_backbone(), 10, dim=8, hidden_dim=8, num_proj_layers=0), ValueError, "num_proj_layers"),
        (lambda: SimSiam(_backbone(), 10, dim=8, hidden_dim=8, pred_hidden_dim=0), ValueError, "pred_hidden_dim"),
        (lambda: SimSiam(_backbone(), 10, dim=8, hidden_dim=8, pred_hidden_dim=2.0), TypeError, "pred_hidden_dim"),  # type: ignore[arg-type]
        (lambda: BYOL(_backbone(), 0, hidden_dim=8, dim=8), ValueError, "feature_dim must be >= 1"),
        (lambda: SimSiamProjectionHead(True, 4, 4), TypeError, "in_dim must be an integer"),  # type: ignore[arg-type]
        (lambda: SimSiamProjectionHead(4, 4, 4, num_layers=1.5), TypeError, "num_layers must be an integer"),  # type: ignore[arg-type]
        (lambda: SimSiamPredictionHead(0), ValueError, "dim must be >= 1"),
        (lambda: BYOLProjectionHead(8, 2.0, 4), TypeError, "hidden_dim must be an integer"),  # type: ignore[arg-type]
        (
            lambda: SimSiam(_backbone(), 10, dim=8, hidden_dim=8, predictor="mlp2"),
            ValueError,
            "predictor must be one of",
        ),  # type: ignore[arg-type]
        (
            lambda: BYOL(_backbone(), 10, hidden_dim=8, dim=8, tau_base=float("nan")),
            ValueError,
            "tau_base must be finite",
        ),
        (lambda: BYOL(_backbone(), 10, hidden_dim=8, dim=8, tau_base=1.5), ValueError, "tau_base must be <= 1"),
        (lambda: cosine_tau(1, 10, base=float("inf")), ValueError, "base must be finite"),
        (lambda: cosine_tau(1, 2.5), TypeError, "total_steps must be an integer"),  # type: ignore[arg-type]
        (lambda: ema_update_(nn.Linear(2, 2), nn.Linear(2, 2), tau=float("nan")), ValueError, "tau must be finite"),
        (
            lambda: cosine_schedule(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0), True),
            TypeError,
            "total_steps must be an integer",
        ),  # type: ignore[arg-type]
    ],
)
def test_method_and_head_hyperparameters_validated(build, error: type, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        build()
