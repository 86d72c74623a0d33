"""losses layer."""

from . import multitask
from .chunked import ChunkedTaiLrLoss, chunked_cross_entropy, chunked_tailr_loss
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
from .hf import ChunkedTaiLrLossFunc, TaiLrLossFunc, hidden_states_collator
from .tailr import TaiLrLoss, tailr_loss, tailr_weight
from .tiled import TiledFlatNCELoss, TiledInfoNCELoss, tiled_flat_nce, tiled_info_nce

__all__ = [
    "ChunkedTaiLrLoss",
    "ChunkedTaiLrLossFunc",
    "FlatNCELoss",
    "InfoNCELoss",
    "NegativeCosineSimilarity",
    "NormalizedMSELoss",
    "TaiLrLoss",
    "TaiLrLossFunc",
    "TiledFlatNCELoss",
    "TiledInfoNCELoss",
    "chunked_cross_entropy",
    "chunked_tailr_loss",
    "flat_nce",
    "flat_nce_from_logits",
    "gather_with_grad",
    "hidden_states_collator",
    "info_nce",
    "info_nce_from_logits",
    "multitask",
    "negative_cosine_similarity",
    "normalized_mse",
    "tailr_loss",
    "tailr_weight",
    "tiled_flat_nce",
    "tiled_info_nce",
]
