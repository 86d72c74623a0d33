"""Image datasets: MNIST, Fashion-MNIST and MultiMNIST, loaded offline from the verified cache.

Every loader returns ``(images, labels)``: images ``float32`` in ``[0, 1]`` of shape ``(N, 1, H, W)`` and labels
``int64`` of shape ``(N,)`` (``(N, 2)`` for MultiMNIST). Splits are fixed: ``"train"`` is 55,000 images of the
official training set, ``"val"`` the other 5,000 (a permutation seeded with 0, the same on every machine),
``"train_full"`` all 60,000 and ``"test"`` the official 10,000.
"""

from __future__ import annotations

import functools
import gzip
import struct
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .sources import DataError, fix_command, require

__all__ = ["Split", "load_fashion_mnist", "load_mnist", "load_multimnist", "read_idx"]

Split = Literal["train", "val", "test", "train_full"]
_SPLITS = ("train", "val", "test", "train_full")
VAL_SIZE = 5000

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def read_idx(path: Path, *, dataset: str = "?") -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into a uint8 array, checking the header against the file size.

    Raises:
        DataError: the file is missing, not IDX, or shorter/longer than its header says.
    """
    fix = fix_command(dataset)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"dataset {dataset!r}: cannot read {path} ({e}). Fix: {fix}") from None
    if len(raw) < 8:
        raise DataError(f"dataset {dataset!r}: {path} is truncated ({len(raw)} bytes). Fix: {fix}")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
        raise DataError(f"dataset {dataset!r}: {path} is not a uint8 IDX file. Fix: {fix}")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"dataset {dataset!r}: {path} has {len(raw)} bytes, its header says {expected}. Fix: {fix}")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@functools.lru_cache(maxsize=8)
def _load_raw(dataset: str, part: str) -> tuple[Tensor, Tensor]:
    folder = require(dataset)
    suffix = ".gz" if dataset == "fashion_mnist" else ""
    x = read_idx(folder / f"{part}-images-idx3-ubyte{suffix}", dataset=dataset)
    y = read_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", dataset=dataset)
    if x.shape[0] != y.shape[0]:
        raise DataError(f"dataset {dataset!r}: {x.shape[0]} images but {y.shape[0]} labels")
    return torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))


def _split(dataset: str, split: str, limit: int | None) -> tuple[Tensor, Tensor]:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if split == "test":
        x, y = _load_raw(dataset, "t10k")
    else:
        x, y = _load_raw(dataset, "train")
        if split != "train_full":
            perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
            idx = perm[-VAL_SIZE:] if split == "val" else perm[:-VAL_SIZE]
            x, y = x[idx], y[idx]
    if limit is not None:
        if limit > x.shape[0]:
            raise ValueError(f"limit={limit} exceeds the {x.shape[0]} examples of {dataset}/{split}")
        x, y = x[:limit], y[:limit]
    return x.unsqueeze(1).float().div_(255.0), y.clone()


def load_mnist(split: Split = "train", *, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """Real MNIST. Returns images ``(N, 1, 28, 28)`` float32 in [0, 1] and labels ``(N,)`` int64.

    Args:
        split: ``"train"`` (55,000), ``"val"`` (5,000), ``"test"`` (10,000) or ``"train_full"`` (60,000).
        limit: keep only the first ``limit`` examples of the split (train/val order is a fixed shuffle, so
            any prefix is a class-balanced random sample). Asking for more than exist raises.

    Raises:
        DataError: the cached files are missing or corrupt (the message gives the fix command).

    Example:
        >>> x, y = load_mnist("test", limit=4)  # doctest: +SKIP
        >>> x.shape, y.dtype
        (torch.Size([4, 1, 28, 28]), torch.int64)
    """
    return _split("mnist", split, limit)


def load_fashion_mnist(split: Split = "train", *, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """Real Fashion-MNIST; same contract as :func:`load_mnist` (class names in ``FASHION_CLASSES``)."""
    return _split("fashion_mnist", split, limit)


def load_multimnist(
    split: Split = "train", *, limit: int | None = None, size: int = 36, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """MultiMNIST built from real MNIST: two digits overlaid on a ``size x size`` canvas.

    Digit A (task 0) is pasted with a random shift towards the top-left corner, digit B (task 1), another image
    of the same split, towards the bottom-right; pixels are combined with ``max`` so strokes overlap heavily, as
    in Sabour et al. (2017) and Sener & Koltun (2018). Shifts and pairings come from ``seed`` (and the split),
    so the dataset is identical on every machine.

    Returns:
        images ``(N, 1, size, size)`` float32 in [0, 1]; labels ``(N, 2)`` int64 (digit A, digit B).
    """
    if size < 28:
        raise ValueError(f"size must be >= 28, got {size}")
    x, y = load_mnist(split, limit=limit)
    n = x.shape[0]
    g = torch.Generator().manual_seed(seed * 1000 + _SPLITS.index(split))
    partner = torch.randperm(n, generator=g)
    room = size - 28
    half = room // 2
    # A lands in the top-left band of shifts [0, half], B in the bottom-right band [room - half, room].
    a_off = torch.randint(0, half + 1, (n, 2), generator=g)
    b_off = torch.randint(room - half, room + 1, (n, 2), generator=g)
    canvas = torch.zeros(n, 1, size, size)
    rows = torch.arange(28)
    for off, imgs in ((a_off, x), (b_off, x[partner])):
        r = (off[:, 0:1] + rows).view(n, 1, 28, 1).expand(n, 1, 28, 28)  # (n, 1, 28, 28) target rows
        c = (off[:, 1:2] + rows).view(n, 1, 1, 28).expand(n, 1, 28, 28)  # target cols
        flat = (r * size + c).reshape(n, -1)
        layer = torch.zeros(n, size * size).scatter_(1, flat, imgs.reshape(n, -1))
        canvas = torch.maximum(canvas, layer.view(n, 1, size, size))
    labels = torch.stack([y, y[partner]], dim=1)
    return canvas, labels
