"""Input validation shared by the multi-task package: task losses, per-task constants, hyperparameters.

Built on :mod:`kexue._validate`. Two kinds of input are treated differently on purpose:

* *data* (task losses, gradients, Gram matrices, parameters, targets) must already be a floating-point tensor:
  an integer, bool or complex tensor is a ``TypeError`` (silently promoting or truncating it hid bugs);
* *hyperparameter vectors* (weights, normalisers, priors, initial losses, denominators) are numbers chosen by
  the user, so a list of ints or an integer tensor is converted to the default float dtype, like
  :func:`kexue._validate.check_real` accepts an ``int``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from kexue._validate import check_int, check_real, is_compiling

Losses = Sequence[Tensor] | Mapping[str, Tensor] | Tensor
"""``n`` scalar task losses: a sequence, a ``name -> loss`` mapping, or an ``(n,)`` tensor."""


def loss_items(losses: Losses) -> list[Tensor]:
    """The individual scalar losses as given (not ``stack(losses)[i]``).

    Differentiating ``stack(losses)[i]`` would send zero gradients through every other task's head (the
    backward of ``torch.stack`` feeds all its inputs); the original tensors keep each per-task pass to its own
    graph.
    """
    if isinstance(losses, Tensor):
        return list(losses.unbind(0))
    return list(losses.values()) if isinstance(losses, Mapping) else list(losses)


def stack_losses(
    losses: Losses, scheme: str, *, num_tasks: int | None = None, positive: bool = False, eps: float = 0.0
) -> Tensor:
    """Validate task losses and stack them into a differentiable ``(n,)`` tensor.

    Raises:
        TypeError: ``losses`` is not a tensor/sequence/mapping of tensors, or an entry is not floating point.
        ValueError: empty, an entry that is not a scalar, the wrong number of tasks, a NaN or infinite loss, or
            (``positive=True``) a loss ``<= 0`` (``< 0`` when ``eps > 0``).
    """
    if isinstance(losses, Tensor):
        if losses.dim() != 1:
            raise ValueError(
                f"{scheme}: a tensor of losses must be 1-D (one entry per task), got shape {tuple(losses.shape)}"
            )
        if not losses.is_floating_point():
            raise TypeError(f"{scheme}: losses must have a floating-point dtype, got {losses.dtype}")
        stacked = losses
        names: list[Any] = list(range(losses.shape[0]))
    else:
        if not isinstance(losses, (Sequence, Mapping)) or isinstance(losses, (str, bytes)):
            raise TypeError(
                f"{scheme}: losses must be a sequence or mapping of scalar tensors or a 1-D tensor, "
                f"got {type(losses).__name__}"
            )
        items = list(losses.values()) if isinstance(losses, Mapping) else list(losses)
        names = list(losses.keys()) if isinstance(losses, Mapping) else list(range(len(items)))
        for name, loss in zip(names, items):
            if not isinstance(loss, Tensor):
                raise TypeError(f"{scheme}: losses[{name!r}] must be a torch.Tensor, got {type(loss).__name__}")
            if loss.dim() != 0:
                raise ValueError(
                    f"{scheme}: losses[{name!r}] has shape {tuple(loss.shape)}, expected a scalar (0-d) tensor; "
                    "reduce it first (e.g. .mean())"
                )
            if not loss.is_floating_point():
                raise TypeError(f"{scheme}: losses[{name!r}] must have a floating-point dtype, got {loss.dtype}")
        if not items:
            raise ValueError(f"{scheme}: losses is empty, expected one scalar loss per task")
        stacked = torch.stack(items)
    if stacked.numel() == 0:
        raise ValueError(f"{scheme}: losses is empty, expected one scalar loss per task")
    if num_tasks is not None and stacked.shape[0] != num_tasks:
        raise ValueError(f"{scheme}: got {stacked.shape[0]} task losses, but the strategy was built for {num_tasks}")
    if is_compiling():
        return stacked
    v = stacked.detach()
    finite = torch.isfinite(v)
    # one device sync for both checks: the value checks below only run when something is wrong
    bad = ~finite
    if positive:
        # eps > 0 makes a zero loss legal (its weight is then 1/eps); a negative loss never is.
        bad = bad | ((v <= 0) if eps <= 0 else (v < 0))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        if not bool(finite[i]):
            raise ValueError(
                f"{scheme}: losses[{names[i]!r}] is {float(v[i])}; task losses must be finite (an overflow in the "
                "forward pass is not something GradScaler can fix)"
            )
        need = "> 0" if eps <= 0 else ">= 0"
        raise ValueError(
            f"{scheme} needs task losses {need} (it divides by or takes the log of them), got "
            f"losses[{names[i]!r}]={float(v[i]):.6g}; shift that loss by a constant (e.g. loss - lower_bound + 1), "
            "keeping in mind that this scheme is not shift invariant, so the shift changes the weighting"
        )
    return stacked


def check_num_tasks(num_tasks: Any) -> int:
    """``num_tasks``: an int >= 1."""
    return check_int("num_tasks", num_tasks, low=1)


def check_eps(eps: Any, name: str = "eps") -> float:
    """A finite ``eps >= 0``."""
    return check_real(name, eps, low=0.0)


def check_flag(name: str, value: Any) -> bool:
    """A ``bool`` option (``1`` or ``"yes"`` are rejected so that a misplaced positional argument is caught)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r} ({type(value).__name__})")
    return value


def check_gamma(gamma: Any) -> float:
    """The power-mean exponent: any real number, ``+-inf`` included (the max/min limits); not NaN."""
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise TypeError(f"gamma must be a real number, got {gamma!r} ({type(gamma).__name__})")
    g = float(gamma)
    if math.isnan(g):
        raise ValueError("gamma must not be NaN")
    return g


def constant_vector(values: Any, name: str, n: int | None, *, positive: bool) -> Tensor:
    """Validate per-task constants (a sequence of reals or a 1-D tensor); returns a detached float copy.

    Integer values are converted to the default float dtype (they are hyperparameters, not data); bool and
    complex values are rejected.

    Raises:
        TypeError: not numbers, or a bool/complex tensor.
        ValueError: not 1-D, the wrong length, NaN/inf entries, or entries ``<= 0`` (``positive``) / ``< 0``.
    """
    if isinstance(values, Tensor):
        if values.dtype == torch.bool or values.is_complex():
            raise TypeError(f"{name} must be real numbers, got a tensor of dtype {values.dtype}")
        t = values.detach().clone()
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
    else:
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(f"{name} must be a sequence of numbers or a 1-D tensor, got {type(values).__name__}")
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"{name}[{i}] must be a real number, got {v!r} ({type(v).__name__})")
        t = torch.tensor([float(v) for v in values], dtype=torch.get_default_dtype())
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one entry per task), got shape {tuple(t.shape)}")
    if n is not None and t.numel() != n:
        raise ValueError(f"{name} must have one entry per task ({n}), got {t.numel()}")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    if positive and not bool((t > 0).all()):
        raise ValueError(f"{name} must be > 0, got {t.tolist()}")
    if not positive and not bool((t >= 0).all()):
        raise ValueError(f"{name} must be >= 0, got {t.tolist()}")
    return t
