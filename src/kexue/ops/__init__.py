"""ops layer."""

from .collapse import effective_rank, normalized_std

__all__ = ["effective_rank", "normalized_std"]
