"""ops layer."""

from kexue.ops.router import RouterOutput, soft_topk_router
from kexue.ops.topk import ITERATIVE_MAX_K, SoftTopK, soft_topk
from kexue.ops.topk import METHODS as TOPK_METHODS

from .collapse import effective_rank, normalized_std

__all__ = [
    "ITERATIVE_MAX_K",
    "TOPK_METHODS",
    "RouterOutput",
    "SoftTopK",
    "effective_rank",
    "normalized_std",
    "soft_topk",
    "soft_topk_router",
]
