"""losses layer."""

from .cosine import NegativeCosineSimilarity, NormalizedMSELoss, negative_cosine_similarity, normalized_mse

__all__ = ["NegativeCosineSimilarity", "NormalizedMSELoss", "negative_cosine_similarity", "normalized_mse"]
