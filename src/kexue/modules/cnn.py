"""Small convolutional networks for grey images, shared by the experiments."""

from __future__ import annotations

from torch import Tensor, nn

from kexue._validate import check_float_tensor, check_int, check_real

__all__ = ["SmallBNCNN", "SmallCNN"]


class SmallCNN(nn.Module):
    """Two conv blocks and an MLP head: the baseline classifier/encoder of the image experiments.

    ``conv(5x5, w) -> ReLU -> maxpool -> conv(5x5, 2w) -> ReLU -> maxpool -> flatten -> linear(feature_dim)
    -> ReLU -> linear(num_classes)``, a LeNet-style network that reaches about 99% on MNIST in a few epochs on
    a CPU.

    Args:
        in_channels: input channels.
        num_classes: output logits; 0 makes the network an encoder returning ``feature_dim`` features.
        width: channels of the first conv block (the second has ``2 * width``).
        feature_dim: width of the penultimate layer.
        image_size: input height/width (square).
        dropout: dropout before the last layer.

    Shapes:
        input ``(B, in_channels, image_size, image_size)`` -> ``(B, num_classes)`` (or ``(B, feature_dim)``).

    Raises:
        TypeError: a size that is not an int, ``dropout`` not a real number; an input that is not a
            floating-point tensor.
        ValueError: sizes below 1 (``num_classes`` below 0), ``dropout`` outside ``[0, 1]``, an ``image_size`` too
            small for the two blocks; an input of another shape, or with NaN/inf entries.

    Example:
        >>> import torch
        >>> SmallCNN()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        *,
        width: int = 32,
        feature_dim: int = 128,
        image_size: int = 28,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels, low=1)
        check_int("num_classes", num_classes, low=0)
        check_int("width", width, low=1)
        check_int("feature_dim", feature_dim, low=1)
        check_int("image_size", image_size, low=1)
        check_real("dropout", dropout, low=0.0, high=1.0)
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"image_size={image_size} is too small for two 5x5 conv + pool blocks (needs >= 16)")
        self.in_channels, self.image_size = in_channels, image_size
        self.num_classes = num_classes
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * side * side, feature_dim),
            nn.ReLU(),
        )
        self.head: nn.Module = (
            nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes)) if num_classes else nn.Identity()
        )

    def _check(self, x: Tensor) -> Tensor:
        # Conv2d accepts an unbatched (C, H, W) image and any spatial size; the flatten -> linear step then fails
        # far from the cause or, for a 3-D batch of one-channel images, silently reads the batch as channels.
        check_float_tensor("x", x, ndim=4, allow_empty=True)
        want = (self.in_channels, self.image_size, self.image_size)
        if tuple(x.shape[1:]) != want:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, want))}), got {tuple(x.shape)}")
        return x

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(B, feature_dim)``."""
        return self.body(self._check(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(self._check(x)))


class SmallBNCNN(nn.Module):
    """Three conv-BatchNorm-ReLU blocks and global average pooling: a small encoder for self-supervised learning.

    ``[conv(3x3, w) -> BN -> ReLU -> maxpool] -> [conv(3x3, 2w) -> BN -> ReLU -> maxpool] -> conv(3x3, 4w) -> BN
    -> ReLU -> global average pool``, returning ``4 * width`` features. It is the BatchNorm counterpart of
    :class:`SmallCNN` for SimSiam/BYOL: SimSiam's ablation (Chen & He 2021, https://arxiv.org/abs/2011.10566,
    Table 3) finds that without BatchNorm the optimisation fails (34.6% against 68.1%), so a BN-free encoder
    does not test the method. The convolutions have no bias (each is followed by BN, as in ResNets), and the
    global pooling makes the network accept any image size from 4x4 up.

    Args:
        in_channels: input channels.
        width: channels of the first block (the next two have ``2 * width`` and ``4 * width``).

    Shapes:
        input ``(B, in_channels, H, W)`` with ``H, W >= 4`` -> ``(B, 4 * width)``.

    Raises:
        TypeError: a size that is not an int; an input that is not a floating-point tensor.
        ValueError: sizes below 1; an input of another rank or channel count, smaller than 4x4, or with NaN/inf
            entries.

    Example:
        >>> import torch
        >>> SmallBNCNN(width=8)(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 32])
    """

    def __init__(self, in_channels: int = 1, *, width: int = 16) -> None:
        super().__init__()
        check_int("in_channels", in_channels, low=1)
        check_int("width", width, low=1)
        self.in_channels, self.width = in_channels, width
        self.feature_dim = 4 * width

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.body = nn.Sequential(
            *block(in_channels, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: Tensor) -> Tensor:
        check_float_tensor("x", x, ndim=4)
        if x.shape[1] != self.in_channels or min(x.shape[-2:]) < 4:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W) with H, W >= 4, got {tuple(x.shape)}")
        return self.body(x)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, width={self.width}, feature_dim={self.feature_dim}"
