"""methods layer."""

from .byol import BYOL, cosine_tau, ema_update_
from .simsiam import SimSiam, cosine_schedule
from .ign import IGN, FrequencyNoise, gaussian_noise, ign_iterate, ign_loss

__all__ = [
    "BYOL",
    "FrequencyNoise",
    "IGN",
    "SimSiam",
    "cosine_schedule",
    "cosine_tau",
    "ema_update_",
    "gaussian_noise",
    "ign_iterate",
    "ign_loss",
]
