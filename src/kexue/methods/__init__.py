"""methods layer."""

from .ptuning import LMKind, PTuning, Template, extract_features, lm_kind

__all__ = ["LMKind", "PTuning", "Template", "extract_features", "lm_kind"]
