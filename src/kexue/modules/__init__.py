"""nn.Modules with parameters: backbones, heads, encoders."""

from .cnn import SmallCNN
from .text import EmbeddingBagClassifier

__all__ = ["EmbeddingBagClassifier", "SmallCNN"]

from .heads import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    SyncBatchNorm1d,
    convert_sync_batchnorm,
)

__all__ += [
    "BYOLPredictionHead",
    "BYOLProjectionHead",
    "SimSiamPredictionHead",
    "SimSiamProjectionHead",
    "SyncBatchNorm1d",
    "convert_sync_batchnorm",
]
