"""methods layer."""

from .byol import BYOL, cosine_tau, ema_update_
from .simsiam import SimSiam, cosine_schedule
from .ign import IGN, FrequencyNoise, gaussian_noise, ign_iterate, ign_loss
from .ptuning import LMKind, PTuning, Template, extract_features, lm_kind

__all__ = [
    "BYOL",
    "FrequencyNoise",
    "IGN",
    "LMKind",
    "PTuning",
    "SimSiam",
    "Template",
    "cosine_schedule",
    "cosine_tau",
    "ema_update_",
    "extract_features",
    "gaussian_noise",
    "ign_iterate",
    "ign_loss",
    "lm_kind",
]
