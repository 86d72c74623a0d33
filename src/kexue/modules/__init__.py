"""nn.Modules with parameters: backbones, heads, encoders."""

from .cnn import SmallCNN
from .text import EmbeddingBagClassifier

__all__ = ["EmbeddingBagClassifier", "SmallCNN"]
