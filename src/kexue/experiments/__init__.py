"""Experiments: one module per article, discovered by name.

Each public module in this package (a name not starting with ``_``) is an experiment; see ``_base`` for the
contract. ``available()`` lists them in report order (``ORDER`` in the module, then the name).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from ._base import Claim, ConfigError, Result, apply_overrides, claim, compare, mean_std

__all__ = [
    "Claim",
    "ConfigError",
    "Result",
    "apply_overrides",
    "available",
    "claim",
    "compare",
    "get",
    "mean_std",
]


def available() -> list[str]:
    """Names of all experiments, in report order."""
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted(names, key=lambda n: (getattr(get(n), "ORDER", 100), n))


def get(name: str) -> ModuleType:
    """Import the experiment module ``name``.

    Raises:
        ValueError: no such experiment (the message lists the available ones).
    """
    known = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    if name not in known:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(sorted(known))}")
    return importlib.import_module(f"{__name__}.{name}")
