"""DCGAN-style convolutional autoencoder for 28x28 images, the network f of an Idempotent Generative Network.

IGN (Shocher et al., ICLR 2024, arXiv 2311.01462; kexue.fm/archives/9969) uses one network whose input and
output have the shape of an image: the encoder is the DCGAN discriminator body down to a 1x1 latent, the
decoder is the DCGAN generator with a tanh output, for data scaled to [-1, 1].
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from kexue._validate import check_choice, check_float_tensor, check_int

__all__ = ["DCGANAutoencoder"]

Norm = Literal["batch", "group", "none"]


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        # 8 groups when they divide the width, else one group per pair of channels
        groups = 8 if channels % 8 == 0 else max(1, channels // 2)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


class DCGANAutoencoder(nn.Module):
    """DCGAN encoder to a ``latent_dim x 1 x 1`` code, DCGAN decoder back to the image, tanh output.

    Layout for ``image_size=28`` and width ``w``::

        conv4x4/2 (C -> w) 28->14, LeakyReLU(0.2)
        conv4x4/2 (w -> 2w) 14->7, norm, LeakyReLU(0.2)
        conv7x7   (2w -> latent) 7->1                      # the 1x1 latent, no activation
        convT7x7  (latent -> 2w) 1->7, norm, ReLU
        convT4x4/2 (2w -> w) 7->14, norm, ReLU
        convT4x4/2 (w -> C) 14->28, tanh

    As in DCGAN there is no normalisation on the first encoder layer nor on the output layer.

    Args:
        in_channels: image channels ``C`` (1 for MNIST).
        width: channels ``w`` of the first conv (DCGAN uses 64).
        latent_dim: channels of the 1x1 bottleneck.
        norm: ``"batch"`` (DCGAN), ``"group"`` (batch-independent: a sample's output does not depend on the
            rest of the batch, which suits IGN's separate calls on x, z and f(z)) or ``"none"``.
        image_size: 28 (default) or 32 (the 7x7 bottleneck conv becomes 8x8).

    Shapes:
        input ``(B, C, H, W)`` in [-1, 1] -> output ``(B, C, H, W)`` in (-1, 1).

    Raises:
        TypeError: a size that is not an int; an input that is not a floating-point tensor.
        ValueError: a size below 1, an unknown ``norm``, ``image_size`` other than 28 or 32; an input of another
            shape, empty, or with NaN/inf entries.

    Example:
        >>> import torch
        >>> DCGANAutoencoder(width=8, latent_dim=16)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(
        self,
        in_channels: int = 1,
        *,
        width: int = 64,
        latent_dim: int = 128,
        norm: Norm = "batch",
        image_size: int = 28,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels, low=1)
        check_int("width", width, low=1)
        check_int("latent_dim", latent_dim, low=1)
        check_choice("norm", norm, ("batch", "group", "none"))
        if check_int("image_size", image_size) not in (28, 32):
            raise ValueError(f"image_size must be 28 or 32, got {image_size}")
        side = image_size // 4  # after two stride-2 convs
        self.in_channels, self.width, self.latent_dim, self.norm, self.image_size = (
            in_channels,
            width,
            latent_dim,
            norm,
            image_size,
        )
        bias = norm == "none"  # a bias before a normalisation layer is redundant
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=bias),
            _norm(norm, 2 * width),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, latent_dim, side, 1, 0),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 2 * width, side, 1, 0, bias=bias),
            _norm(norm, 2 * width),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=bias),
            _norm(norm, width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, in_channels, 4, 2, 1),
            nn.Tanh(),
        )

    def _check(self, name: str, x: Tensor, shape: tuple[int, ...]) -> Tensor:
        # non-empty: batch normalisation has no statistics of an empty batch
        check_float_tensor(name, x, ndim=4)
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"{name} must have shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
        return x

    def encode(self, x: Tensor) -> Tensor:
        """Latent code ``(B, latent_dim, 1, 1)`` of images ``(B, C, H, W)``."""
        return self.encoder(self._check("x", x, (self.in_channels, self.image_size, self.image_size)))

    def decode(self, code: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in (-1, 1) from codes ``(B, latent_dim, 1, 1)``."""
        return self.decoder(self._check("code", code, (self.latent_dim, 1, 1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encode(x))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, width={self.width}, latent_dim={self.latent_dim}, norm={self.norm!r}"
