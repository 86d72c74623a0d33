"""Strategy registry: :data:`STRATEGIES` (name -> class) and :func:`make_strategy`."""

from __future__ import annotations

from typing import Any

from ._inputs import check_num_tasks
from .base import MultiTaskStrategy
from .gradient_level import MGDA, GradientNormalization, L2DecayAuxiliary, PrimaryAuxiliaryProjection
from .gradnorm import GradNorm
from .loss_level import (
    DynamicWeightAverage,
    InitialLossWeighting,
    LogSum,
    PowerMean,
    PriorLossWeighting,
    RealTimeWeighting,
    UncertaintyWeighting,
    WeightedSum,
)

__all__ = ["STRATEGIES", "make_strategy"]

STRATEGIES: dict[str, type[MultiTaskStrategy]] = {
    "equal": WeightedSum,
    "fixed": WeightedSum,
    "initial": InitialLossWeighting,
    "prior": PriorLossWeighting,
    "realtime": RealTimeWeighting,
    "log": LogSum,
    "power_mean": PowerMean,
    "uncertainty": UncertaintyWeighting,
    "dwa": DynamicWeightAverage,
    "gradient_normalization": GradientNormalization,
    "gradnorm": GradNorm,
    "mgda": MGDA,
    "projection": PrimaryAuxiliaryProjection,
    "l2_auxiliary": L2DecayAuxiliary,
}
"""Strategy name -> class; every class takes ``num_tasks`` then keyword-only hyperparameters."""


def make_strategy(name: str, num_tasks: int, **kwargs: Any) -> MultiTaskStrategy:
    """Build a strategy from its name in :data:`STRATEGIES`.

    Args:
        name: e.g. ``"realtime"``, ``"gradient_normalization"``, ``"mgda"``.
        num_tasks: number of task losses it will receive (an int >= 1).
        **kwargs: the class's hyperparameters (``"fixed"`` needs ``weights``, ``"prior"`` needs ``prior``).

    Returns:
        The strategy module.

    Raises:
        ValueError: an unknown name (the message lists the valid ones), ``"fixed"`` without weights, or an
            invalid hyperparameter (each class validates its own).
        TypeError: a hyperparameter of the wrong type or an unknown keyword.

    Example:
        >>> make_strategy("power_mean", 3, gamma=2.0)
        PowerMean(num_tasks=3, gamma=2.0)
    """
    if not isinstance(name, str) or name not in STRATEGIES:
        raise ValueError(f"unknown multi-task strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    check_num_tasks(num_tasks)
    if name == "fixed" and "weights" not in kwargs:
        raise ValueError("strategy 'fixed' needs weights=[...] (one per task)")
    return STRATEGIES[name](num_tasks, **kwargs)
