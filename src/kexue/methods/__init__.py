"""methods layer."""

from .byol import BYOL, cosine_tau, ema_update_
from .ign import IGN, FrequencyNoise, gaussian_noise, ign_iterate, ign_loss
from .ptuning import LMKind, PTuning, Template, extract_features, lm_kind
from .simsiam import SimSiam, cosine_schedule

__all__ = [
    "BYOL",
    "IGN",
    "FrequencyNoise",
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
