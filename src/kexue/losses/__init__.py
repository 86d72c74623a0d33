"""losses layer."""

from .tailr import TaiLrLoss, tailr_loss, tailr_weight

__all__ = ["TaiLrLoss", "tailr_loss", "tailr_weight"]
