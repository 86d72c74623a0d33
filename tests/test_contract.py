"""One battery of checks over every public op, loss, regularizer and method (see ``tests/_contract.py``)."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest
import torch
from torch import Tensor

from _contract import BAD_VALUES, EXEMPT, LAYERS, PENDING, REGISTRY, Call, Entry, get_arg, with_arg

ENTRIES = list(REGISTRY.values())
IDS = [e.name[0] for e in ENTRIES]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _out(x: Any) -> Tensor:
    """The tensor a call returns (the first element of a tuple, ``"loss"`` of a dict)."""
    if isinstance(x, tuple):
        return x[0]
    if isinstance(x, dict):
        return x["loss"]
    return x


def _run(e: Entry, c: Call) -> Tensor:
    return _out(e.fn(*c.args, **c.kwargs))


def _base_name(n: str) -> str:
    return n.split("[", 1)[0]


def test_registry_covers_every_export() -> None:
    exported: set[str] = set()
    for layer in LAYERS:
        mod = importlib.import_module(layer)
        exported |= set(getattr(mod, "__all__", []))
    covered = {_base_name(n) for e in ENTRIES for n in e.name} | set(EXEMPT)
    missing = sorted(exported - covered)
    assert not missing, f"public exports without a contract entry (add them to tests/_contract.py): {missing}"
    assert not PENDING, f"contract entries still pending: {sorted(PENDING)}"


@pytest.mark.parametrize("e", [e for e in ENTRIES if e.module is not None], ids=lambda e: e.name[0])
def test_functional_equals_module(e: Entry) -> None:
    c = e.make(torch.float64, _gen())
    assert e.module is not None
    torch.testing.assert_close(_out(e.module(c)), _run(e, c))


@pytest.mark.parametrize("e", [e for e in ENTRIES if e.reduction], ids=lambda e: e.name[0])
def test_reduction_laws(e: Entry) -> None:
    c = e.make(torch.float64, _gen())
    none = _run(e, Call(c.args, {**c.kwargs, "reduction": "none"}))
    torch.testing.assert_close(_run(e, Call(c.args, {**c.kwargs, "reduction": "mean"})), none.mean())
    torch.testing.assert_close(_run(e, Call(c.args, {**c.kwargs, "reduction": "sum"})), none.sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("e", ENTRIES, ids=IDS)
def test_dtype_preserved_and_finite(e: Entry, dtype: torch.dtype) -> None:
    out = _run(e, e.make(dtype, _gen()))
    assert out.dtype == dtype
    assert torch.isfinite(out).all()


def _grad_call(e: Entry) -> tuple[Call, list[int | str]]:
    c = e.make(torch.float64, _gen())
    keys = list(e.grad_args or e.float_args)
    for k in keys:
        c = with_arg(c, k, get_arg(c, k).detach().clone().requires_grad_(True))
    return c, keys


def _as_fn(e: Entry, c: Call, keys: list[int | str]) -> Any:
    def f(*xs: Tensor) -> Tensor:
        cc = c
        for k, x in zip(keys, xs):
            cc = with_arg(cc, k, x)
        return _run(e, cc)

    return f


@pytest.mark.parametrize("e", [e for e in ENTRIES if e.grad], ids=lambda e: e.name[0])
def test_gradcheck_float64(e: Entry) -> None:
    c, keys = _grad_call(e)
    inputs = tuple(get_arg(c, k) for k in keys)
    assert torch.autograd.gradcheck(_as_fn(e, c, keys), inputs, atol=1e-6, rtol=1e-4)
    if e.grad == "gradgradcheck":
        assert torch.autograd.gradgradcheck(_as_fn(e, c, keys), inputs, atol=1e-5, rtol=1e-3)


def _bad_tensor_cases() -> list[tuple[Entry, int | str, str]]:
    cases = []
    for e in ENTRIES:
        for k in e.float_args:
            kinds = ["int", "bool", "complex", "nan"] + ([] if k in e.allow_inf else ["inf"])
            if not e.empty_ok:
                kinds.append("empty")
            if k in e.wrong_rank:
                kinds.append("rank")
            if k in e.batch_args:
                kinds.append("batch")
            cases += [(e, k, kind) for kind in kinds]
    return cases


def _corrupt(x: Tensor, kind: str, e: Entry, k: int | str) -> Tensor:
    if kind == "int":
        return (x * 10).long()
    if kind == "bool":
        return x > 0
    if kind == "complex":
        return x.to(torch.complex64)
    if kind in ("nan", "inf"):
        y = x.clone()
        y.view(-1)[0] = float(kind)
        return y
    if kind == "empty":
        return x[:0]
    if kind == "rank":
        return e.wrong_rank[k](x)
    if kind == "batch":
        return x[:-1]
    raise AssertionError(kind)


BAD_TENSORS = _bad_tensor_cases()


@pytest.mark.parametrize(
    ("e", "k", "kind"), BAD_TENSORS, ids=[f"{e.name[0]}-{e.float_args[k]}-{kind}" for e, k, kind in BAD_TENSORS]
)
def test_bad_tensor_rejected_naming_the_argument(e: Entry, k: int | str, kind: str) -> None:
    c = e.make(torch.float32, _gen())
    bad = with_arg(c, k, _corrupt(get_arg(c, k), kind, e, k))
    name = e.float_args[k]
    with pytest.raises((ValueError, TypeError)) as info:
        _run(e, bad)
    if kind != "batch":  # a size mismatch may name the other argument first
        assert re.search(rf"\b{re.escape(name)}\b", str(info.value)), f"message does not name {name!r}: {info.value}"


BAD_HPARAMS = [(e, hp, v, exc) for e in ENTRIES for hp, kind in e.hparams.items() for v, exc in BAD_VALUES[kind]]


@pytest.mark.parametrize(
    ("e", "hp", "value", "exc"), BAD_HPARAMS, ids=[f"{e.name[0]}-{hp}={v!r}" for e, hp, v, _ in BAD_HPARAMS]
)
def test_bad_hyperparameter_rejected_naming_it(e: Entry, hp: str, value: Any, exc: type[Exception]) -> None:
    c = e.make(torch.float32, _gen())
    with pytest.raises(exc) as info:
        _run(e, Call(c.args, {**c.kwargs, hp: value}))
    assert hp in str(info.value), f"message does not name {hp!r}: {info.value}"


@pytest.mark.parametrize("scale", [1e4, 1e30, 1e-30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("e", [e for e in ENTRIES if e.scale == "invariant"], ids=lambda e: e.name[0])
def test_scale_invariant_at_extreme_scales(e: Entry, dtype: torch.dtype, scale: float) -> None:
    c = e.make(dtype, _gen())
    ref = _run(e, c)
    scaled = c
    for k in e.float_args:
        scaled = with_arg(scaled, k, get_arg(c, k) * scale)
    out = _run(e, scaled)
    assert torch.isfinite(out).all(), out
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("e", [e for e in ENTRIES if e.ties_ok], ids=lambda e: e.name[0])
def test_all_ties_finite_with_finite_gradient(e: Entry) -> None:
    c, keys = _grad_call(e)
    tied = c
    for k in keys:
        x = get_arg(c, k)
        tied = with_arg(tied, k, torch.full_like(x, 0.5).requires_grad_(True))
    out = _run(e, tied)
    assert torch.isfinite(out).all()
    grads = torch.autograd.grad(out.sum(), [get_arg(tied, k) for k in keys], allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)
