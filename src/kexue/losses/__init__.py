"""losses layer."""

from .tailr import TaiLrLoss, tailr_loss, tailr_weight
from .contrastive import (
    FlatNCELoss,
    InfoNCELoss,
    flat_nce,
    flat_nce_from_logits,
    gather_with_grad,
    info_nce,
    info_nce_from_logits,
)

__all__ = [
    "FlatNCELoss",
    "InfoNCELoss",
    "TaiLrLoss",
    "flat_nce",
    "flat_nce_from_logits",
    "gather_with_grad",
    "info_nce",
    "info_nce_from_logits",
    "tailr_loss",
    "tailr_weight",
]
