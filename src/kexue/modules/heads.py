"""Projection and prediction heads of SimSiam and BYOL, and a batch norm synchronised across processes.

The heads follow the papers' architecture sentences (quoted in each docstring) with the papers' default sizes;
pass smaller sizes for small encoders. :class:`SyncBatchNorm1d` is a drop-in ``BatchNorm1d`` that computes the
batch statistics over all processes of the default group (any backend, CPU included --
``torch.nn.SyncBatchNorm`` only runs on GPUs); :func:`convert_sync_batchnorm` swaps it into a module.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from kexue._validate import check_float_tensor, check_int, check_real

__all__ = [
    "BYOLPredictionHead",
    "BYOLProjectionHead",
    "SimSiamPredictionHead",
    "SimSiamProjectionHead",
    "SyncBatchNorm1d",
    "convert_sync_batchnorm",
]


def _positive(**dims: int) -> None:
    for k, v in dims.items():
        check_int(k, v, low=1)  # rejects bools and floats too (TypeError)


def _check_x(x: Tensor) -> Tensor:
    """A head's input: a floating ``(B, D)`` batch, non-empty and finite (one device sync; skipped under
    ``torch.compile``). A NaN here would otherwise spread through BatchNorm's batch statistics to every row."""
    return check_float_tensor("x", x, ndim=2)


class SimSiamProjectionHead(nn.Module):
    """SimSiam's projection MLP: ``(Linear(bias=False) -> BN -> ReLU) x (L-1) -> Linear -> BN(affine=False)``.

    Chen & He 2021 (https://arxiv.org/abs/2011.10566), Sec. 4: "The projection MLP (in f) has BN applied to
    each fully-connected (fc) layer, including its output fc. Its output fc has no ReLU. The hidden fc is
    2048-d. This MLP has 3 layers." The official code turns the output BN's affine off (Table 3: 68.2 vs
    68.1) and freezes the output fc's bias, which a following BN cancels anyway; here that fc has no bias.

    Args:
        in_dim: backbone feature size.
        hidden_dim: hidden width (2048 in the paper).
        out_dim: output size ``d`` (2048 in the paper).
        num_layers: fc layers (3 on ImageNet, 2 in the paper's CIFAR set-up).

    Shapes:
        ``(B, in_dim) -> (B, out_dim)``.

    Raises:
        TypeError: ``x`` not floating point; a size not an integer.
        ValueError: ``x`` not ``(B, D)``, empty or with NaN/inf entries; a size < 1.

    Example:
        >>> SimSiamProjectionHead(128, 64, 64)(torch.randn(4, 128)).shape
        torch.Size([4, 64])
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 2048, *, num_layers: int = 3) -> None:
        super().__init__()
        _positive(in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim, num_layers=num_layers)
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(num_layers - 1):
            layers += [
                nn.Linear(d, hidden_dim, bias=False),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
            ]
            d = hidden_dim
        layers += [nn.Linear(d, out_dim, bias=False), nn.BatchNorm1d(out_dim, affine=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(_check_x(x))


class SimSiamPredictionHead(nn.Module):
    """SimSiam's bottleneck predictor: ``Linear(d, d/4, bias=False) -> BN -> ReLU -> Linear(d/4, d)``.

    Chen & He 2021, Sec. 4: "The prediction MLP (h) has BN applied to its hidden fc layers. Its output fc
    does not have BN (ablation in Sec. 4.4) or ReLU. This MLP has 2 layers. The dimension of h's input and
    output (z and p) is d = 2048, and h's hidden layer's dimension is 512, making h a bottleneck structure."

    Args:
        dim: input and output size ``d``.
        hidden_dim: bottleneck width; default ``dim // 4`` (512 for ``d = 2048``).

    Shapes:
        ``(B, dim) -> (B, dim)``.

    Raises:
        TypeError: ``x`` not floating point; a size not an integer.
        ValueError: ``x`` not ``(B, D)``, empty or with NaN/inf entries; a size < 1.

    Example:
        >>> SimSiamPredictionHead(64).net[0]
        Linear(in_features=64, out_features=16, bias=False)
    """

    def __init__(self, dim: int = 2048, hidden_dim: int | None = None) -> None:
        super().__init__()
        _positive(dim=dim)
        hidden = hidden_dim if hidden_dim is not None else max(dim // 4, 1)
        _positive(hidden_dim=hidden)
        self.net = nn.Sequential(
            nn.Linear(dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(_check_x(x))


class BYOLProjectionHead(nn.Module):
    """BYOL's projector: ``Linear(in, 4096) -> BN -> ReLU -> Linear(4096, 256)``.

    Grill et al. 2020 (https://arxiv.org/abs/2006.07733), Sec. 3.3: "the representation y is projected to a
    smaller space by a multi-layer perceptron (MLP) g_theta ... This MLP consists in a linear layer with
    output size 4096 followed by batch normalization, rectified linear units (ReLU), and a final linear layer
    with output dimension 256."

    Args:
        in_dim: input size.
        hidden_dim: hidden width (4096).
        out_dim: output size (256).

    Raises:
        TypeError: ``x`` not floating point; a size not an integer.
        ValueError: ``x`` not ``(B, D)``, empty or with NaN/inf entries; a size < 1.

    Example:
        >>> BYOLProjectionHead(128, 64, 16)(torch.randn(4, 128)).shape
        torch.Size([4, 16])
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> None:
        super().__init__()
        _positive(in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim)
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(_check_x(x))


class BYOLPredictionHead(BYOLProjectionHead):
    """BYOL's predictor, the projector's architecture mapping ``out_dim -> out_dim``.

    Grill et al. 2020, Sec. 3.3: "the predictor q_theta uses the same architecture as g_theta."

    Args:
        dim: input and output size (256).
        hidden_dim: hidden width (4096).

    Example:
        >>> BYOLPredictionHead(16, 64)(torch.randn(4, 16)).shape
        torch.Size([4, 16])
    """

    def __init__(self, dim: int = 256, hidden_dim: int = 4096) -> None:
        super().__init__(dim, hidden_dim, dim)


class SyncBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics are those of the batch concatenated over all processes.

    Outside training, or without an initialised process group of more than one rank, it is exactly
    ``nn.BatchNorm1d``. Under DDP it all-reduces (with autograd, via ``torch.distributed.nn``) first the
    per-channel sums and counts, then the centred sums of squares (two passes, so no ``E[x^2] - E[x]^2``
    cancellation), so the forward and the gradient equal those of one process holding the whole batch. Unlike
    ``torch.nn.SyncBatchNorm`` it works on any backend, gloo on CPU included. Running statistics use the
    unbiased global variance, as ``BatchNorm1d`` does.

    Args:
        num_features: ``C``.
        eps: added to the variance (finite, > 0).
        momentum, affine, track_running_stats, device, dtype: as ``nn.BatchNorm1d``.

    Shapes:
        ``(B, C)`` (``(B, C, L)`` too outside synchronised training, as ``nn.BatchNorm1d``).

    Raises:
        TypeError: ``x`` not floating point; ``eps`` not a real number.
        ValueError: ``x`` of another rank, empty or with NaN/inf entries; ``eps`` not finite and > 0.

    Example:
        >>> SyncBatchNorm1d(8)(torch.randn(4, 8)).shape
        torch.Size([4, 8])
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_int("num_features", num_features, low=1)
        check_real("eps", eps, low=0.0, low_inclusive=False)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        synced = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        check_float_tensor("x", x, ndim=2 if synced else (2, 3))
        if not synced:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        local = torch.cat([x.sum(dim=0), x.new_full((1,), float(x.shape[0]))])  # (C + 1,)
        total = all_reduce(local)  # differentiable SUM over ranks
        n = total[c]
        mean = total[:c] / n  # (C,)
        sq = all_reduce(((x - mean) ** 2).sum(dim=0))  # (C,)
        var = sq / n  # biased, used to normalise
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1  # type: ignore[operator,assignment]
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)  # type: ignore[arg-type]
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * (sq.detach() / (n.detach() - 1).clamp_min(1)))
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm1d`` in ``module`` by a :class:`SyncBatchNorm1d` with the same state.

    Returns:
        the converted module (the same object when ``module`` itself is not a BatchNorm1d).

    Example:
        >>> type(convert_sync_batchnorm(nn.Sequential(nn.BatchNorm1d(3)))[0]).__name__
        'SyncBatchNorm1d'
    """
    if type(module) is nn.BatchNorm1d:
        new = SyncBatchNorm1d(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        ref = module.weight if module.affine else module.running_mean
        return new.to(ref.device, ref.dtype) if ref is not None else new
    for name, child in module.named_children():
        setattr(module, name, convert_sync_batchnorm(child))
    return module
