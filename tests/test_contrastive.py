"""Tests for kexue.losses.contrastive: InfoNCE, stable InfoNCE, FlatNCE (https://kexue.fm/archives/8586)."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from _reference_contrastive import log_sum_neg_minus_pos, per_anchor, spec_example, xi_over_sg_xi
from kexue.losses import (
    FlatNCELoss,
    InfoNCELoss,
    contrastive,
    flat_nce,
    flat_nce_from_logits,
    gather_with_grad,
    info_nce,
    info_nce_from_logits,
)

F64 = torch.float64


def _fn(kind: str):  # type: ignore[no-untyped-def]
    if kind == "flat":
        return lambda q, k, **kw: flat_nce(q, k, **kw)
    return lambda q, k, **kw: info_nce(q, k, stable=kind == "stable", **kw)


# ----------------------------------------------------------------------------------------- references


@given(
    b=st.integers(2, 6),
    d=st.integers(2, 6),
    m=st.integers(0, 3),
    tau=st.sampled_from([0.05, 0.1, 0.5, 1.0]),
    symmetric=st.booleans(),
    kind=st.sampled_from(["plain", "stable", "flat"]),
    seed=st.integers(0, 2**16),
)
def test_matches_naive_loop(b: int, d: int, m: int, tau: float, symmetric: bool, kind: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(b, d, generator=g, dtype=F64), torch.randn(b, d, generator=g, dtype=F64)
    n = torch.randn(m, d, generator=g, dtype=F64) if m else None
    got = _fn(kind)(q, k, temperature=tau, negatives=n, symmetric=symmetric, reduction="none")
    ref = per_anchor(q, k, temperature=tau, negatives=n, symmetric=symmetric, kind=kind)
    torch.testing.assert_close(got, ref)


def test_unnormalized_dot_products_match_loop() -> None:
    q, k = torch.randn(5, 4, dtype=F64), torch.randn(5, 4, dtype=F64)
    for kind in ("plain", "stable", "flat"):
        got = _fn(kind)(q, k, temperature=0.7, normalize=False, reduction="none")
        torch.testing.assert_close(got, per_anchor(q, k, temperature=0.7, kind=kind, normalize=False))


def test_plain_equals_cross_entropy_and_stable_in_float64() -> None:
    q, k = torch.randn(16, 8, dtype=F64), torch.randn(16, 8, dtype=F64)
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.1
    ce = F.cross_entropy(logits, torch.arange(16))
    torch.testing.assert_close(info_nce(q, k), ce)
    torch.testing.assert_close(info_nce(q, k, stable=True), ce)
    torch.testing.assert_close(info_nce_from_logits(logits, torch.arange(16)), ce)
    torch.testing.assert_close(info_nce_from_logits(logits, torch.arange(16), stable=True), ce)


def test_from_logits_respects_masked_candidates() -> None:
    logits = torch.randn(4, 6, dtype=F64)
    logits[:, 5] = float("-inf")  # a masked column changes nothing
    target = torch.tensor([0, 2, 4, 1])
    before = logits.clone()
    flat_nce_from_logits(logits, target)
    info_nce_from_logits(logits, target, stable=True)
    torch.testing.assert_close(logits, before)  # the user's logits are never masked in place
    torch.testing.assert_close(
        flat_nce_from_logits(logits, target, reduction="none"), log_sum_neg_minus_pos(logits[:, :5], target)
    )
    torch.testing.assert_close(
        info_nce_from_logits(logits, target, stable=True), F.cross_entropy(logits[:, :5], target)
    )


# ----------------------------------------------------------------------------------------- FlatNCE gradient


def test_flat_gradient_equals_xi_over_sg_xi_and_log_form() -> None:
    logits = torch.randn(5, 7, dtype=F64, requires_grad=True)
    target = torch.tensor([0, 3, 6, 2, 2])
    (g_ours,) = torch.autograd.grad(flat_nce_from_logits(logits, target, reduction="sum"), logits)
    (g_sg,) = torch.autograd.grad(xi_over_sg_xi(logits, target).sum(), logits)
    (g_log,) = torch.autograd.grad(log_sum_neg_minus_pos(logits, target).sum(), logits)
    torch.testing.assert_close(g_ours, g_sg)
    torch.testing.assert_close(g_ours, g_log)
    # the value is log xi, the value of the paper's form is 1
    torch.testing.assert_close(
        flat_nce_from_logits(logits, target, reduction="none").detach(),
        log_sum_neg_minus_pos(logits, target).detach(),
    )


def test_flat_gradient_equals_flatclr_form_on_embeddings() -> None:
    """FlatCLR: loss = exp(v - v.detach()).mean() with v = logsumexp(neg - pos); same gradient as ours."""
    q = torch.randn(6, 5, dtype=F64, requires_grad=True)
    k = torch.randn(6, 5, dtype=F64, requires_grad=True)
    z = F.normalize(torch.cat([q, k]), dim=1)
    sim = z @ z.T / 0.1
    n = 6
    pos = torch.cat([torch.arange(n) + n, torch.arange(n)])
    rows = []
    for i in range(2 * n):
        keep = [j for j in range(2 * n) if j not in (i, int(pos[i]))]
        rows.append(sim[i, keep] - sim[i, pos[i]])  # negatives minus the positive
    v = torch.logsumexp(torch.stack(rows), dim=1)
    ref = torch.exp(v - v.detach()).mean()
    g_ref = torch.autograd.grad(ref, (q, k))
    g_ours = torch.autograd.grad(flat_nce(q, k, symmetric=True), (q, k))
    torch.testing.assert_close(g_ours, g_ref)


@given(b=st.integers(2, 8), tau=st.sampled_from([0.05, 0.1, 0.5]), seed=st.integers(0, 2**16))
def test_per_anchor_gradients_parallel_with_ratio(b: int, tau: float, seed: int) -> None:
    """grad log(1 + xi) = xi / (1 + xi) * grad log xi: cosine 1 per anchor, norm ratio (1 + xi) / xi."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, 16, generator=g, dtype=F64, requires_grad=True)
    k = torch.randn(b, 16, generator=g, dtype=F64)
    (g_flat,) = torch.autograd.grad(flat_nce(q, k, temperature=tau, reduction="sum"), q)
    (g_info,) = torch.autograd.grad(info_nce(q, k, temperature=tau, reduction="sum"), q)
    cos = F.cosine_similarity(g_flat, g_info, dim=1)
    torch.testing.assert_close(cos, torch.ones(b, dtype=F64))
    xi = flat_nce(q, k, temperature=tau, reduction="none").detach().exp()
    torch.testing.assert_close(g_flat.norm(dim=1) / g_info.norm(dim=1), (1 + xi) / xi)


# ----------------------------------------------------------------------------------------- float error


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a / a.abs().max(), b / b.abs().max()  # F.cosine_similarity floors norms at 1e-8
    return float(a @ b / (a.norm() * b.norm()))


def _spec_case(k: int, tau: float, dtype: torch.dtype, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    # seed 1 draws xi ~ 8e-8 < float32 epsilon: 1 + xi rounds to 1 (seed 0 gives xi ~ 2e-7, a partial failure)
    x, pos, negs = spec_example(k, tau, seed=1)
    q = x.to(dtype)[None].requires_grad_()  # unit vectors, scores cos / tau; gradient w.r.t. the anchor
    loss = _fn(kind)(q, pos.to(dtype)[None], temperature=tau, negatives=negs.to(dtype), normalize=False)
    (grad,) = torch.autograd.grad(loss, q)
    return loss.detach().double(), grad.double()[0]


def test_float32_plain_infonce_fails_where_stable_and_flat_do_not() -> None:
    """Spec 4.3: tau=0.05, K=16, positive cosine 0.98 -> float32 InfoNCE returns 0 and a wrong gradient."""
    l64, g64 = _spec_case(16, 0.05, F64, "plain")
    assert 1e-8 < float(l64) < 6e-8 * 2  # xi below float32 epsilon: 1 + xi rounds to 1
    l32, g32 = _spec_case(16, 0.05, torch.float32, "plain")
    assert float(l32) == 0.0
    assert float(_cos(g32, g64)) < 0.5  # the positive lost its pull
    s32, sg32 = _spec_case(16, 0.05, torch.float32, "stable")
    s64, _ = _spec_case(16, 0.05, F64, "stable")
    torch.testing.assert_close(s64, l64)  # stable == plain in float64
    assert abs(float(s32) / float(l64) - 1) < 1e-4
    assert float(_cos(sg32, g64)) > 1 - 1e-6
    f32, fg32 = _spec_case(16, 0.05, torch.float32, "flat")
    f64, fg64 = _spec_case(16, 0.05, F64, "flat")
    assert abs(float(f32) - float(f64)) < 1e-4
    assert float(_cos(fg32, fg64)) > 1 - 1e-6


def test_no_underflow_when_margin_exceeds_float32_exp_range() -> None:
    """Pitfall: forming xi with exp underflows when s_i - s_t < -104; log-sum-exp of differences does not."""
    logits = torch.tensor([[0.0, -150.0, -160.0]], requires_grad=True)
    loss = flat_nce_from_logits(logits, torch.tensor([0]))
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss)
    assert float(loss.detach()) == pytest.approx(-150 + torch.log1p(torch.exp(torch.tensor(-10.0))))
    assert torch.isfinite(grad).all()
    assert float(grad[0, 0]) == -1.0


@pytest.mark.parametrize("kind", ["plain", "stable", "flat"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_bf16_autocast_finite(kind: str, symmetric: bool) -> None:
    q = torch.randn(32, 16, requires_grad=True)
    k = torch.randn(32, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = _fn(kind)(q @ torch.eye(16), k, temperature=0.05, symmetric=symmetric)
    loss.backward()
    assert torch.isfinite(loss)
    assert q.grad is not None
    assert torch.isfinite(q.grad).all()
    assert loss.dtype == torch.float32


def test_float32_inputs_keep_dtype_and_float64_works() -> None:
    for dtype in (torch.float32, F64):
        q, k = torch.randn(4, 3, dtype=dtype), torch.randn(4, 3, dtype=dtype)
        assert info_nce(q, k).dtype == dtype
        assert flat_nce(q, k).dtype == dtype
    q = torch.randn(4, 3)
    torch.testing.assert_close(info_nce(q, q.double()), info_nce(q.double(), q.double()))  # promotes


# ----------------------------------------------------------------------------------------- laws & gradcheck


@pytest.mark.parametrize("kind", ["plain", "stable", "flat"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_reduction_laws(kind: str, symmetric: bool) -> None:
    q, k, n = torch.randn(6, 4), torch.randn(6, 4), torch.randn(3, 4)
    f = _fn(kind)
    none = f(q, k, negatives=n, symmetric=symmetric, reduction="none")
    assert none.shape == ((12,) if symmetric else (6,))
    torch.testing.assert_close(f(q, k, negatives=n, symmetric=symmetric, reduction="mean"), none.mean())
    torch.testing.assert_close(f(q, k, negatives=n, symmetric=symmetric, reduction="sum"), none.sum())


@pytest.mark.parametrize("kind", ["plain", "stable", "flat"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_gradcheck(kind: str, symmetric: bool) -> None:
    q = torch.randn(4, 3, dtype=F64, requires_grad=True)
    k = torch.randn(4, 3, dtype=F64, requires_grad=True)
    n = torch.randn(2, 3, dtype=F64, requires_grad=True)
    f = _fn(kind)
    assert torch.autograd.gradcheck(
        lambda a, b, c: f(a, b, negatives=c, symmetric=symmetric, temperature=0.5, reduction="none"),
        (q, k, n),
    )


@pytest.mark.parametrize("kind", ["stable", "flat"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_gradgradcheck_on_embeddings(kind: str, symmetric: bool) -> None:
    """The embedding functions' fused log-sum-exp backward is differentiable again (a loss in a gradient penalty)."""
    g = torch.Generator().manual_seed(0)
    q, k, n = (torch.randn(r, 3, dtype=F64, generator=g, requires_grad=True) for r in (4, 4, 2))
    f = _fn(kind)
    assert torch.autograd.gradgradcheck(
        lambda a, b, c: f(a, b, negatives=c, symmetric=symmetric, temperature=0.5, reduction="none"), (q, k, n)
    )


def test_gradcheck_from_logits() -> None:
    logits = torch.randn(3, 5, dtype=F64, requires_grad=True)
    t = torch.tensor([1, 0, 4])
    assert torch.autograd.gradcheck(lambda x: flat_nce_from_logits(x, t, reduction="none"), (logits,))
    assert torch.autograd.gradgradcheck(lambda x: flat_nce_from_logits(x, t), (logits,))
    assert torch.autograd.gradcheck(lambda x: info_nce_from_logits(x, t, stable=True, reduction="none"), (logits,))
    assert torch.autograd.gradgradcheck(lambda x: info_nce_from_logits(x, t, stable=True), (logits,))


def test_modules_match_functionals_and_log_infonce() -> None:
    q, k = torch.randn(5, 4), torch.randn(5, 4)
    torch.testing.assert_close(
        InfoNCELoss(temperature=0.2, symmetric=True, stable=True)(q, k),
        info_nce(q, k, temperature=0.2, symmetric=True, stable=True),
    )
    m = FlatNCELoss(temperature=0.2)
    torch.testing.assert_close(m(q, k), flat_nce(q, k, temperature=0.2))
    assert m.last_info_nce is not None
    torch.testing.assert_close(m.last_info_nce, info_nce(q, k, temperature=0.2, stable=True))
    assert "temperature=0.2" in repr(m)
    loss, info = flat_nce(q, k, return_info_nce=True)
    assert not info.requires_grad
    assert float(loss) < float(info)


# ----------------------------------------------------------------------------------------- errors


def test_errors() -> None:
    q = torch.randn(4, 3)
    with pytest.raises(ValueError, match="key must have the shape"):
        info_nce(q, torch.randn(5, 3))
    with pytest.raises(ValueError, match="key must have the shape"):
        flat_nce(q, torch.randn(4, 2))
    with pytest.raises(ValueError, match="query must have 2 dimensions"):
        info_nce(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match="negatives must have shape"):
        info_nce(q, q, negatives=torch.randn(2, 5))
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        info_nce(q, q, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        FlatNCELoss(temperature=-1.0)
    with pytest.raises(TypeError, match="query must have a floating-point dtype"):
        info_nce(torch.ones(4, 3, dtype=torch.long), q)
    with pytest.raises(ValueError, match="no negatives: a batch of 1"):
        info_nce(q[:1], q[:1])
    with pytest.raises(ValueError, match="no negatives: a batch of 1"):
        flat_nce(q[:1], q[:1], symmetric=True)
    info_nce(q[:1], q[:1], negatives=torch.randn(3, 3))  # explicit negatives make a batch of one fine
    bad = q.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="query contains NaN"):
        info_nce(bad, q)
    with pytest.raises(ValueError, match="key contains NaN"):
        flat_nce(q, bad)
    with pytest.raises(ValueError, match="reduction must be"):
        info_nce(q, q, reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2 columns"):
        info_nce_from_logits(torch.randn(3, 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="target values must lie in"):
        flat_nce_from_logits(torch.randn(3, 4), torch.tensor([0, 1, 4]))
    with pytest.raises(TypeError, match="target must be an int64"):
        flat_nce_from_logits(torch.randn(3, 4), torch.zeros(3))
    with pytest.raises(ValueError, match=r"target must have shape \(3,\)"):
        info_nce_from_logits(torch.randn(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="logits contains NaN"):
        info_nce_from_logits(torch.full((2, 3), float("nan")), torch.zeros(2, dtype=torch.long))


# ----------------------------------------------------------------------------------------- distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CASES = [
    (kind, symmetric, with_neg)
    for kind in ("plain", "stable", "flat")
    for symmetric in (False, True)
    for with_neg in (False, True)
]


def _data(world: int, b: int = 3, d: int = 5, m: int = 2) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(7)
    return tuple(torch.randn(world * n, d, generator=g, dtype=F64) for n in (b, b, m))


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        q_all, k_all, n_all = _data(world)
        b, m = q_all.shape[0] // world, n_all.shape[0] // world
        results = {}
        for kind, symmetric, with_neg in CASES:
            q = q_all[rank * b : (rank + 1) * b].clone().requires_grad_()
            k = k_all[rank * b : (rank + 1) * b].clone().requires_grad_()
            n = n_all[rank * m : (rank + 1) * m].clone().requires_grad_() if with_neg else None
            loss = _fn(kind)(q, k, negatives=n, symmetric=symmetric, gather=True, temperature=0.3)
            loss.backward()
            total = loss.detach().clone()
            dist.all_reduce(total)
            results[(kind, symmetric, with_neg)] = (
                total / world,
                q.grad / world,  # DDP averages gradients over ranks
                k.grad / world,
                None if n is None else n.grad / world,
            )
        g = gather_with_grad(torch.full((2, 1), float(rank), requires_grad=True))
        results["gathered"] = g.detach()
        torch.save(results, Path(out) / f"rank{rank}.pt")
        _mismatch_checks(rank, out)  # last: before the shape check, this part aborted the processes
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One 2-process gloo run (spawned, not forked) shared by the distributed tests: (folder, failure or "")."""
    out = tmp_path_factory.mktemp("dist")
    try:
        torch.multiprocessing.start_processes(
            _worker, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method="spawn"
        )
    except Exception as e:  # a killed worker: the tests below report it
        return out, f"{type(e).__name__}: {e}"
    return out, ""


def test_gather_two_processes_equals_single_process(two_ranks: tuple[Path, str]) -> None:
    world = 2
    tmp_path = two_ranks[0]
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    torch.testing.assert_close(res[0]["gathered"], torch.tensor([[0.0], [0.0], [1.0], [1.0]]))
    q_all, k_all, n_all = _data(world)
    b, m = q_all.shape[0] // world, n_all.shape[0] // world
    for case in CASES:
        kind, symmetric, with_neg = case
        q, k = q_all.clone().requires_grad_(), k_all.clone().requires_grad_()
        n = n_all.clone().requires_grad_() if with_neg else None
        loss = _fn(kind)(q, k, negatives=n, symmetric=symmetric, temperature=0.3)
        loss.backward()
        for r in range(world):
            r_loss, r_gq, r_gk, r_gn = res[r][case]
            torch.testing.assert_close(r_loss, loss.detach(), msg=f"{case} loss")
            torch.testing.assert_close(r_gq, q.grad[r * b : (r + 1) * b], msg=f"{case} dq rank {r}")
            torch.testing.assert_close(r_gk, k.grad[r * b : (r + 1) * b], msg=f"{case} dk rank {r}")
            if n is not None:
                torch.testing.assert_close(r_gn, n.grad[r * m : (r + 1) * m], msg=f"{case} dn rank {r}")


def _mismatch_checks(rank: int, out: str) -> None:
    g = torch.Generator().manual_seed(rank)
    b = 3 - rank  # rank 0 holds 3 rows, rank 1 holds 2: a gather would abort (gloo) instead of raising
    q, k = torch.randn(b, 5, generator=g, dtype=F64), torch.randn(b, 5, generator=g, dtype=F64)
    calls = {
        "info": lambda: info_nce(q, k, gather=True),
        "flat_symmetric": lambda: flat_nce(q, k, gather=True, symmetric=True),
        "gather_with_grad": lambda: gather_with_grad(q),
        # equal batches, but only rank 0 passes a memory bank: also unequal collectives
        "negatives": lambda: info_nce(
            q[:2], k[:2], gather=True, negatives=torch.randn(2, 5, dtype=F64) if rank == 0 else None
        ),
    }
    errors = {}
    for name, call in calls.items():
        try:
            call()
            errors[name] = "no error"
        except ValueError as e:
            errors[name] = str(e)
    # the group is still usable after the errors: an equal-shape call works on every rank
    loss = flat_nce(q[:2], k[:2], gather=True, symmetric=True)
    torch.save({"errors": errors, "finite": bool(torch.isfinite(loss))}, Path(out) / f"mismatch{rank}.pt")


def test_gather_unequal_shapes_raise_on_every_rank(two_ranks: tuple[Path, str]) -> None:
    """Unequal per-rank batches used to kill both processes (gloo SIGABRT); now every rank raises ValueError."""
    out, failure = two_ranks
    assert not failure, failure
    for r in range(2):
        res = torch.load(out / f"mismatch{r}.pt", weights_only=False)
        errors = res["errors"]
        for name in ("info", "flat_symmetric"):
            assert "query: (3, 5) float64 on rank 0, (2, 5) float64 on rank 1" in errors[name], errors[name]
        assert "x: (3, 5) float64 on rank 0, (2, 5) float64 on rank 1" in errors["gather_with_grad"]
        assert "negatives: (2, 5) float64 on rank 0, None on rank 1" in errors["negatives"]
        assert res["finite"]


# ----------------------------------------------------------------------------------------- scale safety


SCALES = [(torch.float32, s) for s in (1e20, 1e30, 1e-20, 1e-30)] + [(F64, s) for s in (1e200, 1e-200)]


@pytest.mark.parametrize(("dtype", "scale"), SCALES)
@pytest.mark.parametrize("kind", ["plain", "stable", "flat"])
def test_embeddings_of_any_finite_scale(dtype: torch.dtype, scale: float, kind: str) -> None:
    """The cosine scores used to overflow/underflow (norm > 1e19 or < 1e-19 in float32): the loss became log B."""
    g = torch.Generator().manual_seed(0)
    q, k, n = (torch.randn(b, 6, generator=g, dtype=dtype) for b in (4, 4, 2))
    for symmetric in (False, True):
        kw = {"negatives": n, "symmetric": symmetric, "temperature": 0.2, "reduction": "none"}
        want = _fn(kind)(q, k, **kw)
        qs = (q * scale).requires_grad_()
        got = _fn(kind)(qs, k * scale, **{**kw, "negatives": n * scale})
        torch.testing.assert_close(got, want)
        assert not torch.allclose(got, torch.full_like(got, math.log(got.numel())))  # not the uniform answer
        (gq,) = torch.autograd.grad(got.sum(), qs)
        q1 = q.clone().requires_grad_()
        (g1,) = torch.autograd.grad(_fn(kind)(q1, k, **kw).sum(), q1)
        torch.testing.assert_close(gq * scale, g1)  # d/dq of a scale-free loss scales as 1/scale


# ----------------------------------------------------------------------------------------- masked rows


@pytest.mark.parametrize("fn", [info_nce_from_logits, flat_nce_from_logits])
@pytest.mark.parametrize("what", ["whole row", "positive only"])
def test_masked_positive_is_rejected_naming_the_row(fn, what: str) -> None:  # type: ignore[no-untyped-def]
    """A row without a finite positive score used to give NaN or +inf (and NaN gradients)."""
    logits = torch.randn(4, 5, dtype=F64)
    target = torch.tensor([0, 1, 2, 3])
    if what == "whole row":
        logits[2] = -math.inf
    else:
        logits[2, 2] = -math.inf
    with pytest.raises(ValueError, match=r"logits rows \[2\] \(1 of 4\) have a masked positive"):
        fn(logits, target)
    if fn is info_nce_from_logits:
        with pytest.raises(ValueError, match=r"rows \[2\]"):
            fn(logits, target, stable=True)


@pytest.mark.parametrize("stable", [False, True])
def test_info_nce_row_without_negatives_is_zero_with_zero_gradient(stable: bool) -> None:
    """log(1 + 0) = 0 exactly; the stable form used to return a NaN gradient for that row."""
    logits = torch.randn(3, 5, dtype=F64)
    target = torch.tensor([0, 1, 4])
    logits[1, [0, 2, 3, 4]] = -math.inf  # row 1 keeps only its positive
    x = logits.clone().requires_grad_()
    loss = info_nce_from_logits(x, target, stable=stable, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert float(loss[1].detach()) == 0.0
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad[1], torch.zeros(5, dtype=F64))
    keep = torch.tensor([0, 2])
    torch.testing.assert_close(loss[keep], F.cross_entropy(logits[keep], target[keep], reduction="none"))


def test_flat_nce_row_without_negatives_is_rejected_naming_the_row() -> None:
    logits = torch.randn(3, 5, dtype=F64)
    logits[0, 1:] = -math.inf
    with pytest.raises(ValueError, match=r"logits rows \[0\] \(1 of 3\) have every negative masked"):
        flat_nce_from_logits(logits, torch.tensor([0, 1, 2]))


def test_from_logits_rejects_plus_inf_and_empty() -> None:
    logits = torch.randn(2, 3)
    logits[1, 2] = math.inf
    for fn in (info_nce_from_logits, flat_nce_from_logits):
        with pytest.raises(ValueError, match=r"logits contains NaN or \+inf"):
            fn(logits, torch.tensor([0, 1]))
        with pytest.raises(ValueError, match="logits must not be empty"):
            fn(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


# ----------------------------------------------------------------------------------------- extremes & options


@pytest.mark.parametrize("spread", [1e4, 1e30])
def test_from_logits_extreme_spread_matches_float64(spread: float) -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 6, generator=g) * spread
    target = torch.tensor([0, 1, 2, 3])
    for fn, kw in ((info_nce_from_logits, {}), (info_nce_from_logits, {"stable": True}), (flat_nce_from_logits, {})):
        x = logits.clone().requires_grad_()
        got = fn(x, target, reduction="none", **kw)
        (grad,) = torch.autograd.grad(got.sum(), x)
        want = fn(logits.double(), target, reduction="none", **kw)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize("temperature", [1e-30, 1e-6, 1e6, 1e30])
@pytest.mark.parametrize("kind", ["plain", "stable", "flat"])
def test_tiny_and_huge_temperature_finite_and_right(temperature: float, kind: str) -> None:
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    qq = q.clone().requires_grad_()
    got = _fn(kind)(qq, k, temperature=temperature, reduction="none")
    (grad,) = torch.autograd.grad(got.sum(), qq)
    # float64 reference through log-sum-exp (the naive loop's exp overflows at scores of 1e30)
    s = F.normalize(q.double(), dim=1) @ F.normalize(k.double(), dim=1).T / temperature
    pos = s.diagonal()
    neg = torch.logsumexp(s.masked_fill(torch.eye(4, dtype=torch.bool), -math.inf), dim=1) - pos
    want = {"plain": torch.logsumexp(s, dim=1) - pos, "stable": F.softplus(neg), "flat": neg}[kind]
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(grad).all()


def test_overflowing_scores_name_the_temperature() -> None:
    q = torch.randn(3, 4)
    with pytest.raises(ValueError, match="temperature=1e-40 is too small"):
        info_nce(q, q.flip(0), temperature=1e-40)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"temperature": math.inf}, ValueError, "temperature must be finite"),
        ({"temperature": math.nan}, ValueError, "temperature must be finite"),
        ({"temperature": -0.1}, ValueError, "temperature must be > 0"),
        ({"temperature": "0.1"}, TypeError, "temperature must be a real number"),
        ({"eps": -1e-12}, ValueError, "eps must be > 0"),
        ({"eps": 0.0}, ValueError, "eps must be > 0"),
        ({"eps": math.nan}, ValueError, "eps must be finite"),
        ({"eps": 2.0}, ValueError, "eps must be <= 1"),
        ({"reduction": None}, ValueError, "reduction must be one of"),
    ],
)
def test_hyperparameters_validated(kwargs: dict, error: type, match: str) -> None:
    q = torch.randn(4, 3)
    for fn in (info_nce, flat_nce):
        with pytest.raises(error, match=match):
            fn(q, q, **kwargs)
    for module in (InfoNCELoss, FlatNCELoss):
        with pytest.raises(error, match=match):
            module(**kwargs)


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_embeddings_are_named(bad: str) -> None:
    q, k = torch.randn(4, 3), torch.randn(4, 3)
    k[2, 1] = float(bad)
    for fn in (info_nce, flat_nce):
        with pytest.raises(ValueError, match="key contains NaN or infinite values"):
            fn(q, k)
    with pytest.raises(TypeError, match="negatives must have a floating-point dtype"):
        info_nce(q, q, negatives=torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="key must have a floating-point dtype"):
        flat_nce(q, torch.ones(4, 3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="query must not be empty"):
        info_nce(torch.zeros(0, 3), torch.zeros(0, 3))


def test_gradcheck_from_logits_with_masked_candidates() -> None:
    logits = torch.randn(3, 5, dtype=F64)
    logits[0, 3] = -math.inf
    logits[2, [0, 1, 3, 4]] = -math.inf  # row 2 keeps only its positive (column 2)
    x = logits.requires_grad_()
    t = torch.tensor([1, 0, 2])
    assert torch.autograd.gradcheck(lambda a: info_nce_from_logits(a, t, stable=True, reduction="none"), (x,))
    assert torch.autograd.gradgradcheck(lambda a: info_nce_from_logits(a, t, stable=True), (x,))
    assert torch.autograd.gradcheck(lambda a: flat_nce_from_logits(a[:2], t[:2], reduction="none"), (x,))


# ----------------------------------------------------------------------------------------- one-node path


@pytest.mark.parametrize("kind", ["stable", "flat"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_one_node_path_equals_the_recorded_ops_bit_for_bit(
    kind: str, symmetric: bool, reduction: str, dtype: torch.dtype
) -> None:
    """Normalised embeddings without explicit negatives go through one autograd node whose backward applies the
    recorded nodes' formulas by hand: values and gradients equal the composed ops exactly, an all-zero row and
    scales of 1e±30 included."""
    g = torch.Generator().manual_seed(0)
    q0, k0 = (torch.randn(6, 5, dtype=dtype, generator=g) for _ in range(2))
    q0[2], k0[1], k0[4] = 0.0, k0[1] * 1e30, k0[4] * 1e-30
    w = torch.rand(6 * (1 + symmetric), dtype=dtype, generator=g)
    kw = {"temperature": 0.07, "symmetric": symmetric, "eps": 1e-12}
    q, k = q0.clone().requires_grad_(), k0.clone().requires_grad_()
    got = _fn(kind)(q, k, reduction=reduction, **kw)
    assert type(got.grad_fn).__name__ == "_UnitNCEBackward"  # the path under test was taken
    got_grads = torch.autograd.grad((got * (w if reduction == "none" else w[0])).sum(), (q, k), retain_graph=True)
    again = torch.autograd.grad((got * (w if reduction == "none" else w[0])).sum(), (q, k))  # saved tensors intact
    rq, rk = q0.clone().requires_grad_(), k0.clone().requires_grad_()
    scores = contrastive._embedding_logits(rq, rk, negatives=None, normalize=True, gather=False, **kw)  # type: ignore[arg-type]
    want, _ = contrastive._embedding_loss(scores, kind, reduction)
    want_grads = torch.autograd.grad((want * (w if reduction == "none" else w[0])).sum(), (rq, rk))
    exact = {"rtol": 0.0, "atol": 0.0, "equal_nan": True}
    torch.testing.assert_close(got, want, **exact)
    for a, b, c in zip(got_grads, again, want_grads, strict=True):
        torch.testing.assert_close(a, c, **exact)
        torch.testing.assert_close(b, c, **exact)


@pytest.mark.parametrize("kind", ["stable", "flat"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_one_node_path_gradcheck_and_gradgradcheck(kind: str, symmetric: bool) -> None:
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(4, 3, dtype=F64, generator=g, requires_grad=True) for _ in range(2))
    f = _fn(kind)
    assert type(f(q, k, symmetric=symmetric).grad_fn).__name__ == "_UnitNCEBackward"
    fn = lambda a, b: f(a, b, symmetric=symmetric, temperature=0.5, reduction="none")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k))
    assert torch.autograd.gradgradcheck(fn, (q, k))
    # one input without gradient: the other's still flows, in first and second order
    fk = lambda a: f(a, k.detach(), symmetric=symmetric, temperature=0.5)  # noqa: E731
    assert torch.autograd.gradgradcheck(fk, (q,))
