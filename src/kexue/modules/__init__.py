"""nn.Modules with parameters: backbones, heads, encoders."""

from .autoencoder import DCGANAutoencoder
from .cnn import SmallBNCNN, SmallCNN
from .heads import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    SyncBatchNorm1d,
    convert_sync_batchnorm,
)
from .prompt import PromptEncoder, PromptKind, TokenRows, splice_prompts
from .router import SoftTopKRouter
from .text import EmbeddingBagClassifier

__all__ = [
    "BYOLPredictionHead",
    "BYOLProjectionHead",
    "DCGANAutoencoder",
    "EmbeddingBagClassifier",
    "PromptEncoder",
    "PromptKind",
    "SimSiamPredictionHead",
    "SimSiamProjectionHead",
    "SmallBNCNN",
    "SmallCNN",
    "SoftTopKRouter",
    "SyncBatchNorm1d",
    "TokenRows",
    "convert_sync_batchnorm",
    "splice_prompts",
]
