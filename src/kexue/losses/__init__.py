"""losses layer."""

from .contrastive import (  # noqa: F401
    FlatNCELoss,
    InfoNCELoss,
    flat_nce,
    flat_nce_from_logits,
    gather_with_grad,
    info_nce,
    info_nce_from_logits,
)
