"""nn.Modules with parameters: backbones, heads, encoders."""

from .autoencoder import DCGANAutoencoder
from .cnn import SmallCNN
from .text import EmbeddingBagClassifier
from .heads import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    SyncBatchNorm1d,
    convert_sync_batchnorm,
)

__all__ = [
    "BYOLPredictionHead",
    "BYOLProjectionHead",
    "DCGANAutoencoder",
    "EmbeddingBagClassifier",
    "SimSiamPredictionHead",
    "SimSiamProjectionHead",
    "SmallCNN",
    "SyncBatchNorm1d",
    "convert_sync_batchnorm",
]
