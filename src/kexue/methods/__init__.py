"""methods layer."""

from .byol import BYOL, cosine_tau, ema_update_
from .simsiam import SimSiam, cosine_schedule

__all__ = ["BYOL", "SimSiam", "cosine_schedule", "cosine_tau", "ema_update_"]
