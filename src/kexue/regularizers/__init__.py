"""regularizers layer."""

from ._site import DoubleBackwardError, dropout_disabled, find_embedding, frozen_batchnorm_stats
from .adversarial import FGM, PGD, fgm_loss, pgd_loss
from .gradient_penalty import (
    GradientPenaltyLoss,
    SmoothnessPenalty,
    gradient_penalty_loss,
    smoothness_penalty,
)
from .noise import (
    NoiseConsistencyLoss,
    NoisyLoss,
    consistency_divergence,
    noise_consistency_loss,
    noisy_loss,
    perturb,
)
from .vat import VAT, conditional_entropy, probe_radius, vat_direction, vat_loss

__all__ = [
    "FGM",
    "PGD",
    "VAT",
    "DoubleBackwardError",
    "GradientPenaltyLoss",
    "NoiseConsistencyLoss",
    "NoisyLoss",
    "SmoothnessPenalty",
    "conditional_entropy",
    "consistency_divergence",
    "dropout_disabled",
    "fgm_loss",
    "find_embedding",
    "frozen_batchnorm_stats",
    "gradient_penalty_loss",
    "noise_consistency_loss",
    "noisy_loss",
    "perturb",
    "pgd_loss",
    "probe_radius",
    "smoothness_penalty",
    "vat_direction",
    "vat_loss",
]
