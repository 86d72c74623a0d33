"""ops layer."""

from kexue.ops.topk import METHODS as TOPK_METHODS
from kexue.ops.topk import SoftTopK, soft_topk

from .collapse import effective_rank, normalized_std

__all__ = [
    "TOPK_METHODS",
    "SoftTopK",
    "effective_rank",
    "normalized_std",
    "soft_topk",
]
