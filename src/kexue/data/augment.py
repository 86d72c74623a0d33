"""Batched image augmentations for small grey images, written in plain torch (no torchvision).

Every function takes a batch ``x`` of shape ``(B, C, H, W)`` with values in ``[0, 1]``, draws an independent
random transform per image, and returns a tensor of the same shape, dtype and device. Randomness comes from
``generator`` when given (it must live on ``x``'s device), else from torch's global generator — which
:func:`kexue.train.fit` reseeds every epoch, so augmented training runs are reproducible.

:class:`ContrastiveAugment` composes them into the SimCLR/SimSiam recipe adapted to 28x28 grey images
(Chen et al. 2020, https://arxiv.org/abs/2002.05709, appendix A; Chen & He 2021, https://arxiv.org/abs/2011.10566):
random resized crop, horizontal flip, brightness/contrast jitter, Gaussian blur, optional Gaussian noise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ContrastiveAugment",
    "brightness_contrast",
    "gaussian_blur",
    "gaussian_noise",
    "random_flip",
    "random_resized_crop",
]


def _check(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(
            f"x must be a float tensor of shape (B, C, H, W), got "
            f"{type(x).__name__}{tuple(x.shape) if isinstance(x, Tensor) else ''}"
        )


def _rand(n: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator, device=x.device, dtype=x.dtype)


def random_resized_crop(
    x: Tensor,
    *,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio`` and resize it back to (H, W).

    Implemented as one batched affine ``grid_sample`` (bilinear), so it costs one pass over the batch.
    """
    _check(x)
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {ratio}")
    b = x.shape[0]
    area = scale[0] + (scale[1] - scale[0]) * _rand(b, x, generator)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * _rand(b, x, generator)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)  # crop width as a fraction of the image
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (1 - w) * (2 * _rand(b, x, generator) - 1)  # centre in normalised [-1, 1] coordinates
    cy = (1 - h) * (2 * _rand(b, x, generator) - 1)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = w, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_flip(x: Tensor, *, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image left-right with probability ``p``."""
    _check(x)
    flip = (_rand(x.shape[0], x, generator) < p).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def brightness_contrast(
    x: Tensor,
    *,
    brightness: float = 0.4,
    contrast: float = 0.4,
    p: float = 0.8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """With probability ``p`` scale brightness by U(1-b, 1+b) and contrast by U(1-c, 1+c); clamp to [0, 1]."""
    _check(x)
    b = x.shape[0]
    apply = (_rand(b, x, generator) < p).view(-1, 1, 1, 1)
    fb = (1 + brightness * (2 * _rand(b, x, generator) - 1)).view(-1, 1, 1, 1)
    fc = (1 + contrast * (2 * _rand(b, x, generator) - 1)).view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    y = ((x * fb - mean * fb) * fc + mean * fb).clamp(0, 1)
    return torch.where(apply, y, x)


def gaussian_blur(
    x: Tensor,
    *,
    sigma: tuple[float, float] = (0.1, 1.5),
    p: float = 0.5,
    kernel_size: int = 5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """With probability ``p`` blur with a Gaussian of per-image ``sigma ~ U(sigma)`` (separable, depthwise)."""
    _check(x)
    if kernel_size % 2 != 1 or kernel_size < 3:
        raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}")
    b, c, hgt, wid = x.shape
    s = sigma[0] + (sigma[1] - sigma[0]) * _rand(b, x, generator)  # (B,)
    half = kernel_size // 2
    t = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None, :] ** 2) / (2 * s[:, None] ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # (B, K): one kernel per image
    k = k.repeat_interleave(c, dim=0)  # (B*C, K)
    y = x.reshape(1, b * c, hgt, wid)
    y = F.conv2d(F.pad(y, (half, half, 0, 0), mode="reflect"), k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, half, half), mode="reflect"), k.view(b * c, 1, -1, 1), groups=b * c)
    y = y.view(b, c, hgt, wid)
    apply = (_rand(b, x, generator) < p).view(-1, 1, 1, 1)
    return torch.where(apply, y, x)


def gaussian_noise(x: Tensor, *, std: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    """Add N(0, std^2) pixel noise and clamp to [0, 1]."""
    _check(x)
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + std * noise).clamp(0, 1)


class ContrastiveAugment(nn.Module):
    """The two-view augmentation of SimCLR/SimSiam, adapted to small grey images.

    Args:
        crop_scale: area range of the random resized crop (SimSiam uses (0.2, 1.0)).
        flip_p: probability of a horizontal flip (0 for digits, where a flip changes the class's look).
        brightness: brightness jitter strength.
        contrast: contrast jitter strength.
        jitter_p: probability of applying the jitter.
        blur_p: probability of the Gaussian blur.
        noise_std: std of additive pixel noise (0 disables it).

    Example:
        >>> aug = ContrastiveAugment()
        >>> aug(torch.rand(4, 1, 28, 28)).shape
        torch.Size([4, 1, 28, 28])
    """

    def __init__(
        self,
        *,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        flip_p: float = 0.5,
        brightness: float = 0.4,
        contrast: float = 0.4,
        jitter_p: float = 0.8,
        blur_p: float = 0.5,
        noise_std: float = 0.0,
    ) -> None:
        super().__init__()
        self.crop_scale = crop_scale
        self.flip_p = flip_p
        self.brightness = brightness
        self.contrast = contrast
        self.jitter_p = jitter_p
        self.blur_p = blur_p
        self.noise_std = noise_std

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        y = random_resized_crop(x, scale=self.crop_scale, generator=generator)
        if self.flip_p > 0:
            y = random_flip(y, p=self.flip_p, generator=generator)
        if self.jitter_p > 0:
            y = brightness_contrast(
                y, brightness=self.brightness, contrast=self.contrast, p=self.jitter_p, generator=generator
            )
        if self.blur_p > 0:
            y = gaussian_blur(y, p=self.blur_p, generator=generator)
        if self.noise_std > 0:
            y = gaussian_noise(y, std=self.noise_std, generator=generator)
        return y

    def extra_repr(self) -> str:
        return (
            f"crop_scale={self.crop_scale}, flip_p={self.flip_p}, brightness={self.brightness}, "
            f"contrast={self.contrast}, jitter_p={self.jitter_p}, blur_p={self.blur_p}, noise_std={self.noise_std}"
        )
