"""methods layer."""

from .ign import IGN, FrequencyNoise, gaussian_noise, ign_iterate, ign_loss

__all__ = ["IGN", "FrequencyNoise", "gaussian_noise", "ign_iterate", "ign_loss"]
