"""losses layer."""

from . import multitask
from .contrastive import (
    FlatNCELoss,
    InfoNCELoss,
    flat_nce,
    flat_nce_from_logits,
    gather_with_grad,
    info_nce,
    info_nce_from_logits,
)
from .cosine import NegativeCosineSimilarity, NormalizedMSELoss, negative_cosine_similarity, normalized_mse
from .hf import TaiLrLossFunc
from .tailr import TaiLrLoss, tailr_loss, tailr_weight

__all__ = [
    "FlatNCELoss",
    "InfoNCELoss",
    "NegativeCosineSimilarity",
    "NormalizedMSELoss",
    "TaiLrLoss",
    "TaiLrLossFunc",
    "flat_nce",
    "flat_nce_from_logits",
    "gather_with_grad",
    "info_nce",
    "info_nce_from_logits",
    "multitask",
    "negative_cosine_similarity",
    "normalized_mse",
    "tailr_loss",
    "tailr_weight",
]
