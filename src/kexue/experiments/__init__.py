"""Experiments: one module per article, discovered by name.

Each public module in this package (a name not starting with ``_``), except the statistics module ``stats``, is an
experiment; see ``_base`` for the contract. ``available()`` lists them in report order (``ORDER`` in the module,
then the name).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from . import stats
from ._base import (
    Claim,
    ConfigError,
    Result,
    apply_overrides,
    better,
    check,
    claim,
    compare,
    mean_std,
    not_run,
    not_worse,
    within,
)

__all__ = [
    "Claim",
    "ConfigError",
    "Result",
    "apply_overrides",
    "available",
    "better",
    "check",
    "claim",
    "compare",
    "get",
    "mean_std",
    "not_run",
    "not_worse",
    "stats",
    "within",
]


# Public modules of this package that are tools for experiments, not experiments.
_SUPPORT = frozenset({"stats"})


def _names() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_") and m.name not in _SUPPORT]


def available() -> list[str]:
    """Names of all experiments, in report order."""
    return sorted(_names(), key=lambda n: (getattr(get(n), "ORDER", 100), n))


def get(name: str) -> ModuleType:
    """Import the experiment module ``name``.

    Raises:
        ValueError: no such experiment (the message lists the available ones).
    """
    known = _names()
    if name not in known:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(sorted(known))}")
    return importlib.import_module(f"{__name__}.{name}")
