"""Input validation shared by every public op, loss, regularizer and method.

One module instead of a private helper per file, so that every entry point rejects bad input the same way: a
``TypeError`` for the wrong kind of object or dtype, a ``ValueError`` for a wrong shape or value, and in both cases a
message that names the argument, shows what it got and says what was expected.

Checks that read tensor *values* (``finite=True``) synchronise with the device. They are skipped while
``torch.compile`` traces a function (a data-dependent branch would break the graph), so compiled code validates
shapes and dtypes only; call the function eagerly once to validate values.

This module imports only torch and may be used by every layer.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = [
    "check_choice",
    "check_float_tensor",
    "check_int",
    "check_real",
    "check_reduction",
    "check_same_size",
    "is_compiling",
    "reduce",
]

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


def is_compiling() -> bool:
    """True while ``torch.compile`` (dynamo) traces the caller: value checks are skipped then."""
    compiler = getattr(torch, "compiler", None)
    fn = getattr(compiler, "is_compiling", None)
    return bool(fn()) if fn is not None else False


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{value!r} ({type(value).__name__})"


def check_real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    allow_tensor: bool = False,
) -> float:
    """Validate a real hyperparameter: a finite number (not a bool) in ``[low, high]``; returns it as ``float``.

    With ``allow_tensor=True`` a 0-d floating tensor is accepted too (a learnable hyperparameter) and is returned
    as ``float`` only for the range check; callers keep the tensor themselves.

    Raises:
        TypeError: not a real number (bools, strings, complex and multi-element tensors included).
        ValueError: NaN, infinite, or outside the range.
    """
    if isinstance(value, bool) or (isinstance(value, Tensor) and not allow_tensor):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    if isinstance(value, Tensor):
        if value.numel() != 1 or not value.is_floating_point():
            raise TypeError(f"{name} must be a real number or a 0-d floating tensor, got {_describe(value)}")
        if is_compiling():
            return math.nan
        v = float(value.detach().reshape(()).item())
    elif isinstance(value, numbers.Real):
        v = float(value)
    else:
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if low is not None and (v < low or (v == low and not low_inclusive)):
        raise ValueError(f"{name} must be {'>=' if low_inclusive else '>'} {low}, got {v}")
    if high is not None and (v > high or (v == high and not high_inclusive)):
        raise ValueError(f"{name} must be {'<=' if high_inclusive else '<'} {high}, got {v}")
    return v


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Validate an integer hyperparameter (a Python or numpy integer, not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {_describe(value)}")
    v = int(value)
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}, got {v}")
    return v


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Validate a string option against its allowed values."""
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def check_reduction(reduction: Any) -> str:
    """Validate ``reduction`` (``"mean"``, ``"sum"`` or ``"none"``)."""
    return check_choice("reduction", reduction, REDUCTIONS)


def check_float_tensor(
    name: str,
    x: Any,
    *,
    ndim: int | Sequence[int] | None = None,
    min_ndim: int | None = None,
    allow_empty: bool = False,
    finite: bool = True,
) -> Tensor:
    """Validate a floating-point tensor argument; returns it unchanged.

    Args:
        name: the argument's name, used in the message.
        x: the value to check.
        ndim: required number of dimensions (one value or several allowed ones).
        min_ndim: required minimum number of dimensions.
        allow_empty: accept a tensor with no elements.
        finite: reject NaN and infinite entries (a device sync; skipped under ``torch.compile``).

    Raises:
        TypeError: not a tensor, or an integer, bool or complex dtype.
        ValueError: wrong rank, empty, or non-finite entries.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {_describe(x)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            want = allowed[0] if len(allowed) == 1 else " or ".join(map(str, allowed))
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.dim() < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimension{'s' if min_ndim != 1 else ''}, got shape {tuple(x.shape)}"
        )
    if not allow_empty and x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite and not is_compiling() and x.numel() > 0 and not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_same_size(name_a: str, a: Tensor, name_b: str, b: Tensor, *, dim: int | None = None) -> None:
    """Require equal shapes (``dim=None``) or an equal size along ``dim``."""
    if dim is None:
        if a.shape != b.shape:
            raise ValueError(
                f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
            )
    elif a.shape[dim] != b.shape[dim]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same size along dim {dim}, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def reduce(values: Tensor, reduction: str) -> Tensor:
    """Apply ``reduction`` (``"mean"``, ``"sum"``, ``"none"``) to per-example values."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
