"""ops layer."""

from kexue.ops.topk import METHODS as TOPK_METHODS
from kexue.ops.topk import SoftTopK, soft_topk

__all__ = ["TOPK_METHODS", "SoftTopK", "soft_topk"]
