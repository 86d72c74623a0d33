"""nn.Modules with parameters: backbones, heads, encoders."""

from .autoencoder import DCGANAutoencoder
from .cnn import SmallCNN

__all__ = ["DCGANAutoencoder", "SmallCNN"]
