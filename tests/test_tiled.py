"""Tests of kexue.losses.tiled: InfoNCE / FlatNCE streamed over candidate tiles.

The reference is the dense ``info_nce`` / ``flat_nce`` of kexue.losses.contrastive (tested against naive loops in
test_contrastive.py): same value and gradients for every option, at tile sizes that divide the number of
candidates and ones that do not; across two gloo processes against the single-process dense loss.
"""

from __future__ import annotations

import doctest
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import kexue.losses.tiled as tiled_module
from kexue.losses import (
    TiledFlatNCELoss,
    TiledInfoNCELoss,
    flat_nce,
    info_nce,
    tiled_flat_nce,
    tiled_info_nce,
)

F64 = torch.float64
KINDS = ["plain", "stable", "flat"]


def _tiled(kind: str, q: torch.Tensor, k: torch.Tensor, **kw: Any) -> torch.Tensor:
    if kind == "flat":
        return tiled_flat_nce(q, k, **kw)
    return tiled_info_nce(q, k, stable=kind == "stable", **kw)


def _dense(kind: str, q: torch.Tensor, k: torch.Tensor, **kw: Any) -> torch.Tensor:
    kw.pop("tile_size", None)
    if kind == "flat":
        return flat_nce(q, k, **kw)
    return info_nce(q, k, stable=kind == "stable", **kw)


def _inputs(gen: torch.Generator, b: int = 5, d: int = 4, m: int = 3, dtype: torch.dtype = F64) -> list[torch.Tensor]:
    return [torch.randn(n, d, generator=gen, dtype=dtype).requires_grad_() for n in (b, b, m)]


def _grads(out: torch.Tensor, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=out.dtype)
    return torch.autograd.grad(out, inputs, w)


# ----------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("with_neg", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_equals_dense(kind: str, symmetric: bool, with_neg: bool, reduction: str, gen: torch.Generator) -> None:
    """Candidates: 5 (+3), 10 (+3) when symmetric; tiles of 1, 3, 4 and 7 split them unevenly."""
    q, k, n = _inputs(gen)
    inputs = [q, k, n] if with_neg else [q, k]
    kw: dict[str, Any] = dict(temperature=0.3, symmetric=symmetric, reduction=reduction)
    kw["negatives"] = n if with_neg else None
    ref = _dense(kind, q, k, **kw)
    ref_grads = _grads(ref, inputs)
    for tile in (1, 3, 4, 7, 1024):
        out = _tiled(kind, q, k, tile_size=tile, **kw)
        torch.testing.assert_close(out, ref, msg=f"tile {tile}")
        for got, want, name in zip(_grads(out, inputs), ref_grads, ("query", "key", "negatives")):
            torch.testing.assert_close(got, want, msg=f"d{name}, tile {tile}")


@pytest.mark.parametrize("kind", KINDS)
def test_raw_dot_products_and_temperature(kind: str, gen: torch.Generator) -> None:
    q, k, _ = _inputs(gen, b=6)
    kw: dict[str, Any] = dict(temperature=2.5, normalize=False, reduction="sum")
    ref = _dense(kind, q, k, **kw)
    out = _tiled(kind, q, k, tile_size=4, **kw)
    torch.testing.assert_close(out, ref)
    for got, want in zip(_grads(out, [q, k]), _grads(ref, [q, k])):
        torch.testing.assert_close(got, want)


def test_flat_gradient_is_that_of_xi_over_detached_xi(gen: torch.Generator) -> None:
    """FlatNCE's stop-gradient, written as in the paper: grad of xi / sg(xi), xi summed over the negatives."""
    q, k, _ = _inputs(gen, b=6)
    s = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.2
    xi = (s - s.diagonal()[:, None]).exp().masked_fill(torch.eye(6, dtype=torch.bool), 0).sum(1)
    paper = (xi / xi.detach()).sum()
    out = tiled_flat_nce(q, k, temperature=0.2, tile_size=4, reduction="sum")
    torch.testing.assert_close(out, xi.log().sum())
    for got, want in zip(torch.autograd.grad(out, [q, k]), torch.autograd.grad(paper, [q, k])):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("symmetric", [False, True])
def test_gradcheck(kind: str, symmetric: bool, gen: torch.Generator) -> None:
    q, k, n = (x.detach().requires_grad_() for x in _inputs(gen, b=3, d=3, m=2))

    def f(q: torch.Tensor, k: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return _tiled(kind, q, k, negatives=n, symmetric=symmetric, tile_size=2, temperature=0.5, reduction="none")

    assert torch.autograd.gradcheck(f, (q, k, n))


def test_reduction_laws_and_info_nce_value(gen: torch.Generator) -> None:
    q, k, _ = _inputs(gen)
    for kind in KINDS:
        none = _tiled(kind, q, k, tile_size=2, reduction="none", symmetric=True)
        assert none.shape == (10,)
        torch.testing.assert_close(_tiled(kind, q, k, tile_size=2, symmetric=True), none.mean())
        torch.testing.assert_close(_tiled(kind, q, k, tile_size=2, symmetric=True, reduction="sum"), none.sum())
    loss, info = tiled_flat_nce(q, k, tile_size=3, return_info_nce=True)
    torch.testing.assert_close(info, tiled_info_nce(q, k, tile_size=3, stable=True).detach())
    assert bool(loss < info)  # log xi < log(1 + xi)


# ----------------------------------------------------------------------------------------- memory, dtypes, extremes


def _max_saved(fn: Any) -> int:
    """The largest tensor (in elements) that autograd saves for backward while ``fn`` runs."""
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return max(saved)


def test_no_anchor_by_candidate_tensor_is_kept_for_backward(gen: torch.Generator) -> None:
    """The graph keeps O(B·D) tensors, nothing of the (B, B) scores' size; the dense path does (the check can fail)."""
    b, d = 64, 4
    q, k, _ = _inputs(gen, b=b, d=d, dtype=torch.float32)
    assert _max_saved(lambda: tiled_info_nce(q, k, tile_size=8)) <= b * d
    assert _max_saved(lambda: tiled_flat_nce(q, k, tile_size=8, symmetric=True)) <= 2 * b * d
    assert _max_saved(lambda: info_nce(q, k)) >= b * b


def test_autocast_computes_the_log_sum_exp_in_float32(gen: torch.Generator) -> None:
    q, k, _ = _inputs(gen, b=12, d=16, dtype=torch.float32)
    for kind in KINDS:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = _tiled(kind, q, k, tile_size=5, temperature=0.2)
            ref = _dense(kind, q, k, temperature=0.2)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)
        for got, want in zip(_grads(out, [q, k]), _grads(ref, [q, k])):
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("kind", KINDS)
def test_saturated_and_extreme_scale_inputs_stay_finite(kind: str, gen: torch.Generator) -> None:
    """Near-identical views at temperature 0.01 (xi ~ e^-100) and embeddings of norm 1e30 in float32."""
    q = torch.randn(8, 16, generator=gen)
    k = q + 1e-3 * torch.randn(8, 16, generator=gen)
    for scale in (1.0, 1e30, 1e-30):
        qs, ks = (q * scale).requires_grad_(), (k * scale).requires_grad_()
        out = _tiled(kind, qs, ks, tile_size=3, temperature=0.01)
        ref = _dense(kind, q.double(), k.double(), temperature=0.01)
        assert bool(torch.isfinite(out))
        torch.testing.assert_close(out.double(), ref, rtol=1e-3, atol=1e-6)
        assert all(bool(torch.isfinite(g).all()) for g in torch.autograd.grad(out, [qs, ks]))


# ----------------------------------------------------------------------------------------- module, docs, errors


def test_modules_match_functional(gen: torch.Generator) -> None:
    q, k, n = _inputs(gen)
    crit = TiledInfoNCELoss(temperature=0.2, tile_size=3, symmetric=True, stable=True)
    torch.testing.assert_close(crit(q, k, n), info_nce(q, k, negatives=n, temperature=0.2, symmetric=True, stable=True))
    flat = TiledFlatNCELoss(temperature=0.2, tile_size=3)
    torch.testing.assert_close(flat(q, k), flat_nce(q, k, temperature=0.2))
    assert flat.last_info_nce is not None
    assert "tile_size=3" in repr(crit) and "tile_size=3" in repr(flat)


def test_doctests() -> None:
    assert doctest.testmod(tiled_module, extraglobs={"torch": torch}).failed == 0


@pytest.mark.parametrize(
    ("call", "err", "match"),
    [
        (lambda q, k: tiled_info_nce(q, k, tile_size=0), ValueError, r"tile_size must be >= 1, got 0"),
        (lambda q, k: tiled_flat_nce(q, k, tile_size=2.5), TypeError, r"tile_size must be an integer"),
        (lambda q, k: tiled_info_nce(q, k, tile_size=True), TypeError, r"tile_size must be an integer"),
        (lambda q, k: tiled_info_nce(q, k[:3]), ValueError, r"key must have the shape of query"),
        (lambda q, k: tiled_info_nce(q[0], k[0]), ValueError, r"query must have 2 dimensions"),
        (lambda q, k: tiled_info_nce(q.long(), k), TypeError, r"query must have a floating-point dtype"),
        (lambda q, k: tiled_flat_nce(q, k, temperature=0.0), ValueError, r"temperature must be > 0"),
        (lambda q, k: tiled_flat_nce(q, k, reduction="avg"), ValueError, r"reduction must be one of"),
        (lambda q, k: tiled_info_nce(q, k, negatives=torch.randn(2, 3)), ValueError, r"negatives must have shape"),
        (lambda q, k: tiled_info_nce(q[:1], k[:1]), ValueError, r"no negatives"),
        (lambda q, k: tiled_flat_nce(q.masked_fill(q > 1, float("nan")), k), ValueError, r"query contains NaN"),
        (lambda q, k: tiled_info_nce(q, k, temperature=1e-45), ValueError, r"temperature=1e-45 is too small"),
        (lambda q, k: TiledFlatNCELoss(tile_size=-2), ValueError, r"tile_size must be >= 1"),
    ],
)
def test_bad_inputs(call: Any, err: type[Exception], match: str, gen: torch.Generator) -> None:
    q, k = torch.randn(4, 5, generator=gen) * 3, torch.randn(4, 5, generator=gen)
    with pytest.raises(err, match=match):
        call(q, k)


# ----------------------------------------------------------------------------------------- distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CASES = [(kind, symmetric) for kind in KINDS for symmetric in (False, True)]


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
        for kind, symmetric in CASES:
            q = q_all[rank * b : (rank + 1) * b].clone().requires_grad_()
            k = k_all[rank * b : (rank + 1) * b].clone().requires_grad_()
            n = n_all[rank * m : (rank + 1) * m].clone().requires_grad_() if kind == "stable" else None
            loss = _tiled(kind, q, k, negatives=n, symmetric=symmetric, gather=True, temperature=0.3, tile_size=2)
            loss.backward()
            total = loss.detach().clone()
            dist.all_reduce(total)
            results[(kind, symmetric)] = (
                total / world,
                q.grad / world,  # DDP averages gradients over ranks
                k.grad / world,
                None if n is None else n.grad / world,
            )
        errors = {}
        try:  # unequal batches raise on every rank (the shapes are compared before any gather)
            tiled_info_nce(q_all[: 3 - rank], k_all[: 3 - rank], gather=True)
            errors["uneven"] = "no error"
        except ValueError as e:
            errors["uneven"] = str(e)
        results["errors"] = errors
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gather_two_processes_equals_single_process_dense(tmp_path: Path) -> None:
    """Each rank: its own queries against every rank's keys; averaged over ranks = the dense loss on the whole batch."""
    world = 2
    torch.multiprocessing.start_processes(
        _worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True, start_method="spawn"
    )
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    q_all, k_all, n_all = _data(world)
    b, m = q_all.shape[0] // world, n_all.shape[0] // world
    for case in CASES:
        kind, symmetric = case
        q, k = q_all.clone().requires_grad_(), k_all.clone().requires_grad_()
        n = n_all.clone().requires_grad_() if kind == "stable" else None
        loss = _dense(kind, q, k, negatives=n, symmetric=symmetric, temperature=0.3)
        loss.backward()
        for r in range(world):
            r_loss, r_gq, r_gk, r_gn = res[r][case]
            torch.testing.assert_close(r_loss, loss.detach(), msg=f"{case} loss")
            torch.testing.assert_close(r_gq, q.grad[r * b : (r + 1) * b], msg=f"{case} dq rank {r}")
            torch.testing.assert_close(r_gk, k.grad[r * b : (r + 1) * b], msg=f"{case} dk rank {r}")
            if n is not None:
                torch.testing.assert_close(r_gn, n.grad[r * m : (r + 1) * m], msg=f"{case} dn rank {r}")
    for r in range(world):
        assert "query: (3, 5) float64 on rank 0, (2, 5) float64 on rank 1" in res[r]["errors"]["uneven"]
