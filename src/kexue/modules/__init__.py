"""nn.Modules with parameters: backbones, heads, encoders."""

from .cnn import SmallCNN

__all__ = ["SmallCNN"]
