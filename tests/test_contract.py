"""One battery of checks over every public op, loss, regularizer, module and method (see ``tests/_contract.py``)."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from _contract import (
    BAD_VALUES,
    EXEMPT,
    KNOWN_FAILURES,
    LAYERS,
    PENDING,
    REGISTRY,
    TEMPERATURES,
    Call,
    Entry,
    get_arg,
    with_arg,
)

ENTRIES = list(REGISTRY.values())
DTYPES = {"float32": torch.float32, "float64": torch.float64}
ALL_IDS: set[str] = set()  # every test id of this file, to check that KNOWN_FAILURES names existing tests


def _cases(test: str, cases: list[tuple[Any, ...]], ids: list[str]) -> list[Any]:
    """``pytest.param`` for each case of ``test``; ids listed in ``KNOWN_FAILURES`` become strict xfails."""
    params = []
    for case, i in zip(cases, ids, strict=True):
        full = f"{test}[{i}]"
        assert full not in ALL_IDS, f"duplicate test id {full}"
        ALL_IDS.add(full)
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[full])] if full in KNOWN_FAILURES else []
        params.append(pytest.param(*case, id=i, marks=marks))
    return params


def _entries(test: str, keep: Callable[[Entry], bool] = lambda e: True) -> list[Any]:
    chosen = [e for e in ENTRIES if keep(e)]
    return _cases(test, [(e,) for e in chosen], [e.name[0] for e in chosen])


def _by_dtype(test: str, keep: Callable[[Entry], bool] = lambda e: True) -> list[Any]:
    chosen = [(e, d) for e in ENTRIES if keep(e) for d in DTYPES]
    return _cases(test, [(e, DTYPES[d]) for e, d in chosen], [f"{e.name[0]}-{d}" for e, d in chosen])


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _result(x: Any) -> Any:
    """What a call returns, read through a tuple (first element) or a dict (``"loss"``)."""
    if isinstance(x, tuple):
        return x[0]
    if isinstance(x, dict):
        return x["loss"]
    return x


def _tensor(x: Any) -> Tensor:
    x = _result(x)
    return torch.tensor(x, dtype=torch.float64) if isinstance(x, float) else x


def _run(e: Entry, c: Call) -> Tensor:
    return _tensor(e.fn(*c.args, **c.kwargs))


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
    stale = sorted({_base_name(n) for e in ENTRIES for n in e.name} - exported)
    assert not stale, f"contract entries for names that are not exported: {stale}"


# ------------------------------------------------------------------------------------------ same answer


def _twin(e: Entry) -> Callable[[Call], Any] | None:
    return e.module if e.module is not None else e.reference


@pytest.mark.parametrize("e", _entries("test_functional_equals_module", lambda e: _twin(e) is not None))
def test_functional_equals_module(e: Entry) -> None:
    c = e.make(torch.float64, _gen())
    twin = _twin(e)
    assert twin is not None
    torch.testing.assert_close(_tensor(twin(c)), _run(e, c))


@pytest.mark.parametrize("e", _entries("test_reduction_laws", lambda e: e.reduction))
def test_reduction_laws(e: Entry) -> None:
    c = e.make(torch.float64, _gen())
    none = _run(e, Call(c.args, {**c.kwargs, "reduction": "none"}))
    torch.testing.assert_close(_run(e, Call(c.args, {**c.kwargs, "reduction": "mean"})), none.mean())
    torch.testing.assert_close(_run(e, Call(c.args, {**c.kwargs, "reduction": "sum"})), none.sum())


# ------------------------------------------------------------------------------------------------ dtypes


@pytest.mark.parametrize(("e", "dtype"), _by_dtype("test_dtype_preserved_and_finite"))
def test_dtype_preserved_and_finite(e: Entry, dtype: torch.dtype) -> None:
    out = _result(e.fn(*(c := e.make(dtype, _gen())).args, **c.kwargs))
    if e.out_dtype == "float":
        assert isinstance(out, float), type(out)
        out = torch.tensor(out)
    else:
        assert out.dtype == (dtype if e.out_dtype == "input" else e.out_dtype)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("e", _entries("test_bf16_autocast_documented_dtype", lambda e: e.autocast is not None))
def test_bf16_autocast_documented_dtype(e: Entry) -> None:
    c = e.make(torch.float32, _gen())
    ref = _run(e, c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _run(e, c)
    assert out.dtype == e.autocast, f"under bf16 autocast: {out.dtype}, documented {e.autocast}"
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref.float(), atol=5e-2, rtol=5e-2)


# ------------------------------------------------------------------------------------------- gradients


def _grad_call(e: Entry) -> tuple[Call, list[int | str]]:
    c = e.make(torch.float64, _gen())
    c = Call(c.args, {**c.kwargs, **e.grad_kwargs})
    keys = list(e.grad_args or e.float_args)
    for k in keys:
        c = with_arg(c, k, get_arg(c, k).detach().clone().requires_grad_(True))
    return c, keys


def _as_fn(e: Entry, c: Call, keys: list[int | str]) -> Any:
    def f(*xs: Tensor) -> Tensor:
        cc = c
        for k, x in zip(keys, xs, strict=True):
            cc = with_arg(cc, k, x)
        return _run(e, cc)

    return f


@pytest.mark.parametrize("e", _entries("test_gradcheck_float64", lambda e: e.grad is not None))
def test_gradcheck_float64(e: Entry) -> None:
    c, keys = _grad_call(e)
    inputs = tuple(get_arg(c, k) for k in keys)
    assert torch.autograd.gradcheck(_as_fn(e, c, keys), inputs, atol=1e-6, rtol=1e-4, fast_mode=e.grad_fast)
    if e.grad == "gradgradcheck":
        assert torch.autograd.gradgradcheck(_as_fn(e, c, keys), inputs, atol=1e-5, rtol=1e-3)


# ------------------------------------------------------------------------------------------- bad input

FLOAT_KINDS = ("int", "bool", "complex", "nan", "inf", "empty", "rank", "batch")
INT_KINDS = ("float", "negative", "large", "empty", "rank", "batch")


def _empty_ok(e: Entry, k: int | str) -> bool:
    return e.empty_ok is True or (isinstance(e.empty_ok, tuple) and k in e.empty_ok)


def _bad_tensor_cases() -> list[tuple[Entry, int | str, str]]:
    cases = []
    for e in ENTRIES:
        for k in e.float_args:
            for kind in FLOAT_KINDS:
                applies = {
                    "inf": k not in e.allow_inf,
                    "empty": not _empty_ok(e, k),
                    "rank": k in e.wrong_rank,
                    "batch": k in e.batch_args,
                }.get(kind, True)
                if applies and kind not in e.skip_bad:
                    cases.append((e, k, kind))
        for k in e.int_args:
            for kind in INT_KINDS:
                applies = {"empty": not _empty_ok(e, k), "batch": k in e.batch_args}.get(kind, True)
                if applies and kind not in e.skip_bad:
                    cases.append((e, k, kind))
    return cases


def _arg_name(e: Entry, k: int | str) -> str:
    return e.float_args[k] if k in e.float_args else e.int_args[k]


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
    if kind == "float":
        return x.to(torch.float32)
    if kind in ("negative", "large"):
        y = x.clone()
        y.view(-1)[0] = -2 if kind == "negative" else 10**6
        return y
    if kind == "empty":
        return x[:0]
    if kind == "rank":
        return e.wrong_rank.get(k, lambda t: t.unsqueeze(0))(x)
    if kind == "batch":
        return x[:-1]
    raise AssertionError(kind)


BAD_TENSORS = _bad_tensor_cases()


@pytest.mark.parametrize(
    ("e", "k", "kind"),
    _cases(
        "test_bad_tensor_rejected_naming_the_argument",
        BAD_TENSORS,
        [f"{e.name[0]}-{_arg_name(e, k)}-{kind}" for e, k, kind in BAD_TENSORS],
    ),
)
def test_bad_tensor_rejected_naming_the_argument(e: Entry, k: int | str, kind: str) -> None:
    c = e.make(torch.float32, _gen())
    # an empty batch is empty in every argument that shares the batch dimension
    keys = e.batch_args if kind == "empty" and k in e.batch_args else (k,)
    bad = c
    for kk in keys:
        bad = with_arg(bad, kk, _corrupt(get_arg(c, kk), kind, e, kk))
    names = [_arg_name(e, kk) for kk in keys]  # an empty batch may be reported for any of its arguments
    with pytest.raises((ValueError, TypeError)) as info:
        _run(e, bad)
    if kind != "batch":  # a size mismatch may name the other argument first
        found = [n for n in names if re.search(rf"\b{re.escape(n)}\b", str(info.value))]
        assert found, f"message does not name {' or '.join(map(repr, names))}: {info.value}"


BAD_HPARAMS = [(e, hp, v, exc) for e in ENTRIES for hp, kind in e.hparams.items() for v, exc in BAD_VALUES[kind]]


@pytest.mark.parametrize(
    ("e", "hp", "value", "exc"),
    _cases(
        "test_bad_hyperparameter_rejected_naming_it",
        BAD_HPARAMS,
        [f"{e.name[0]}-{hp}={v!r}" for e, hp, v, _ in BAD_HPARAMS],
    ),
)
def test_bad_hyperparameter_rejected_naming_it(e: Entry, hp: str, value: Any, exc: type[Exception]) -> None:
    c = e.make(torch.float32, _gen())
    bad = Call(c.args, {**c.kwargs, hp: value})
    for path, call in (("functional", e.fn), ("module", e.module)):
        if call is None:
            continue
        with pytest.raises(exc) as info:
            _tensor(call(*bad.args, **bad.kwargs) if path == "functional" else call(bad))
        assert hp in str(info.value), f"{path}: message does not name {hp!r}: {info.value}"


# --------------------------------------------------------------------------------------- extreme inputs

SCALES = (1e4, 1e30, 1e-30)
SCALE_CASES = [(e, d, s) for e in ENTRIES if e.scale is not None for d in DTYPES for s in SCALES]


@pytest.mark.parametrize(
    ("e", "dtype", "scale"),
    _cases(
        "test_homogeneous_at_extreme_scales",
        [(e, DTYPES[d], s) for e, d, s in SCALE_CASES],
        [f"{e.name[0]}-{d}-{s:g}" for e, d, s in SCALE_CASES],
    ),
)
def test_homogeneous_at_extreme_scales(e: Entry, dtype: torch.dtype, scale: float) -> None:
    assert e.scale is not None
    c = e.make(dtype, _gen())
    ref = _run(e, c)
    scaled = c
    for k in e.float_args:
        scaled = with_arg(scaled, k, get_arg(c, k) * scale)
    out = _run(e, scaled)
    assert torch.isfinite(out).all(), out
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(out.double() / scale**e.scale, ref.double(), atol=tol, rtol=tol)


SPREADS = (1e4, 1e30)
SPREAD_CASES = [(e, s) for e in ENTRIES if e.spread for s in SPREADS]


def _to64(x: Any) -> Any:
    return x.double() if isinstance(x, Tensor) and x.is_floating_point() else x


@pytest.mark.parametrize(
    ("e", "spread"),
    _cases(
        "test_extreme_spread_finite_and_correct",
        SPREAD_CASES,
        [f"{e.name[0]}-{s:g}" for e, s in SPREAD_CASES],
    ),
)
def test_extreme_spread_finite_and_correct(e: Entry, spread: float) -> None:
    c = e.make(torch.float32, _gen())
    for k in e.float_args:
        c = with_arg(c, k, get_arg(c, k) * spread)
    out = _run(e, c)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all(), out
    # the same values in float64: float32 must not have lost the answer to overflow or cancellation
    ref = _run(e, Call([_to64(a) for a in c.args], {k: _to64(v) for k, v in c.kwargs.items()}))
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4 * max(1.0, float(ref.abs().max())))
    if e.temperature_check is not None:
        e.temperature_check(c, out, c.kwargs["temperature"] / spread)


@pytest.mark.parametrize("e", _entries("test_all_ties_finite_with_finite_gradient", lambda e: e.ties_ok))
def test_all_ties_finite_with_finite_gradient(e: Entry) -> None:
    c, keys = _grad_call(e)
    tied = c
    for k in keys:
        x = get_arg(c, k)
        tied = with_arg(tied, k, torch.full_like(x, e.tie_value).requires_grad_(True))
    out = _run(e, tied)
    assert torch.isfinite(out).all()
    if e.differentiable:
        grads = torch.autograd.grad(out.sum(), [get_arg(tied, k) for k in keys], allow_unused=True)
        assert all(g is None or torch.isfinite(g).all() for g in grads)


TEMPERATURE_CASES = [(e, d, t) for e in ENTRIES if "temperature" in e.hparams for d in DTYPES for t in TEMPERATURES]


@pytest.mark.parametrize(
    ("e", "dtype", "temperature"),
    _cases(
        "test_extreme_temperature_finite_and_correct",
        [(e, DTYPES[d], t) for e, d, t in TEMPERATURE_CASES],
        [f"{e.name[0]}-{d}-{t:g}" for e, d, t in TEMPERATURE_CASES],
    ),
)
def test_extreme_temperature_finite_and_correct(e: Entry, dtype: torch.dtype, temperature: float) -> None:
    c = e.make(dtype, _gen())
    c = Call(c.args, {**c.kwargs, "temperature": temperature})
    out = _run(e, c)
    assert out.dtype == dtype
    assert torch.isfinite(out).all(), out
    twin = _twin(e)
    if twin is not None:
        torch.testing.assert_close(_tensor(twin(c)), out)
    if e.temperature_check is not None:
        e.temperature_check(c, out, temperature)


def test_known_failures_name_existing_tests() -> None:
    stale = sorted(set(KNOWN_FAILURES) - ALL_IDS)
    assert not stale, f"KNOWN_FAILURES lists tests that do not exist (remove them): {stale}"
