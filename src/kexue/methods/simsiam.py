"""SimSiam (Chen & He 2021, https://arxiv.org/abs/2011.10566) with the paper's ablations as flags.

``z_k = f(x_k)`` (backbone + projector), ``p_k = h(z_k)`` (predictor), and the symmetric loss (Eq. 2)

    L = 1/2 D(p1, stopgrad(z2)) + 1/2 D(p2, stopgrad(z1)),   D(p, z) = -cos(p, z).

The stop-gradient is ``z.detach()`` on the target side only: each view's encoder pass still receives gradient
through its own ``p``. Su Jianlin's reading of why this does not collapse (https://kexue.fm/archives/7980):
the predictor is the fast variable, the stop-gradient makes the encoder slow, and the shared factor ``dl/dh``
stops both once the predictor fits.

Ablations (Chen & He 2021, Sec. 4): ``stop_gradient=False`` (Fig. 2, collapses), ``predictor="none"`` (Table
1a, collapses), ``predictor="frozen"`` (Table 1b, random init kept fixed), ``fix_predictor_lr`` (Table 1c; the
official ``--fix-pred-lr``, default on), ``symmetric=False`` (Table 5, ``D(p1, stopgrad(z2))`` only).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from kexue._validate import check_choice, check_int
from kexue.losses.cosine import negative_cosine_similarity
from kexue.modules.heads import (
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    SyncBatchNorm1d,
    convert_sync_batchnorm,
)
from kexue.ops.collapse import normalized_std

__all__ = ["SimSiam", "cosine_schedule"]

PredictorMode = Literal["mlp", "none", "frozen"]


def _uses_batch_statistics_of_one(module: nn.Module) -> bool:
    """Whether some ``BatchNorm1d`` of ``module`` would normalise a batch of one with its own statistics.

    That fails (one value per channel has no variance): in train mode, or in eval mode without running
    statistics. A :class:`SyncBatchNorm1d` under a multi-rank process group pools every rank's batch instead.
    """
    pooled = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    return any(
        isinstance(m, nn.BatchNorm1d)
        and (m.training or m.running_mean is None)
        and not (pooled and isinstance(m, SyncBatchNorm1d))
        for m in module.modules()
    )


def _check_views(model: nn.Module, x1: Tensor, x2: Tensor) -> None:
    """Validate the two augmented views of a Siamese method (SimSiam, BYOL).

    Raises:
        TypeError: a view is not a tensor.
        ValueError: the views differ in shape, have no batch dimension or are empty, or hold a single example
            while a ``BatchNorm1d`` of ``model`` needs batch statistics (train mode).
    """
    for name, x in (("x1", x1), ("x2", x2)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x1.shape != x2.shape:
        raise ValueError(f"x1 and x2 must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    if x1.dim() == 0 or x1.shape[0] == 0:
        raise ValueError(f"x1 and x2 must hold a non-empty batch (B, ...), got shape {tuple(x1.shape)}")
    if x1.shape[0] == 1 and _uses_batch_statistics_of_one(model):
        raise ValueError(
            f"batch size 1 in train mode: BatchNorm needs at least 2 examples per batch to compute batch "
            f"statistics (got x1 of shape {tuple(x1.shape)}); train on batches of >= 2, or call .eval() to "
            "embed single examples"
        )


def _for_loss(x: Tensor) -> Tensor:
    """``x`` in float32 when autocast made it half precision, else unchanged.

    The heads' linear layers run in bf16/fp16 under autocast; the loss and the monitors are reductions, which
    autocast runs in float32 (as ``F.cross_entropy``): a cosine of 3-digit vectors is too coarse to train on.
    """
    if x.dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled(x.device.type):
        return x.float()
    return x


def _check_sizes(**sizes: int | None) -> None:
    """The method's own size arguments, checked before the heads are built so the message names them."""
    for name, value in sizes.items():
        if value is not None:
            check_int(name, value, low=1)


def _monitor_std(z: Tensor) -> Tensor:
    """:func:`normalized_std` of ``z``, NaN for a single example (a spread needs two)."""
    if z.shape[0] < 2:
        return torch.full((), float("nan"), dtype=z.dtype, device=z.device)
    return normalized_std(z)


class SimSiam(nn.Module):
    """SimSiam: a Siamese network, a predictor on one side and a stop-gradient on the other.

    Args:
        backbone: maps a batch of inputs to ``(B, feature_dim)`` features (e.g.
            ``kexue.modules.SmallCNN(num_classes=0)``).
        feature_dim: the backbone's output size.
        dim: projection size ``d`` (2048 in the paper).
        hidden_dim: projector hidden width (2048).
        pred_hidden_dim: predictor bottleneck (default ``dim // 4``; 512 in the paper).
        num_proj_layers: projector fc layers (3 on ImageNet, 2 for CIFAR).
        stop_gradient: detach the target ``z`` (the paper). ``False`` is the Fig. 2 ablation.
        predictor: ``"mlp"`` (trained, the paper), ``"none"`` (identity, Table 1a) or ``"frozen"`` (kept at
            its random initialisation, Table 1b).
        symmetric: symmetric loss (the paper) or ``D(p1, stopgrad(z2))`` only.
        fix_predictor_lr: mark the predictor's parameter group ``fix_lr=True`` so :func:`cosine_schedule`
            keeps its learning rate constant (official ``--fix-pred-lr``, Table 1c: 68.1 vs 67.7 decayed).
        sync_batchnorm: convert every ``BatchNorm1d`` to :class:`kexue.modules.SyncBatchNorm1d` (statistics
            over all DDP ranks, as the paper's multi-GPU runs do).

    Forward:
        ``forward(x1, x2)`` with two augmented views ``(B, ...)`` returns ``{"loss", "std", "cos", "z1", "z2",
        "p1", "p2"}``: the loss (in ``[-1, 1]``), the collapse monitor :func:`kexue.ops.normalized_std` of
        ``z1`` (compare with ``1/sqrt(dim)``; NaN for a batch of one), the mean cosine between ``p1`` and
        ``z2`` and the (attached) tensors. A batch of one works in eval mode only: BatchNorm in train mode needs
        two examples (``ValueError`` naming the batch size). Under autocast the tensors are half precision (the
        heads' linear layers) while the loss, ``std`` and ``cos`` are computed and returned in float32, as
        ``F.cross_entropy`` is.

    Raises:
        TypeError / ValueError: a size argument that is not an integer >= 1 (named as here, e.g.
            ``num_proj_layers``), an unknown ``predictor``.

    Example:
        >>> from kexue.modules import SmallCNN
        >>> m = SimSiam(SmallCNN(num_classes=0, width=4, feature_dim=16), 16, dim=32, hidden_dim=32)
        >>> out = m(torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28))
        >>> out["loss"].shape, out["z1"].shape
        (torch.Size([]), torch.Size([4, 32]))
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        *,
        dim: int = 2048,
        hidden_dim: int = 2048,
        pred_hidden_dim: int | None = None,
        num_proj_layers: int = 3,
        stop_gradient: bool = True,
        predictor: PredictorMode = "mlp",
        symmetric: bool = True,
        fix_predictor_lr: bool = True,
        sync_batchnorm: bool = False,
    ) -> None:
        super().__init__()
        check_choice("predictor", predictor, ("mlp", "none", "frozen"))
        _check_sizes(
            feature_dim=feature_dim,
            dim=dim,
            hidden_dim=hidden_dim,
            pred_hidden_dim=pred_hidden_dim,
            num_proj_layers=num_proj_layers,
        )
        self.backbone = backbone
        self.projector = SimSiamProjectionHead(feature_dim, hidden_dim, dim, num_layers=num_proj_layers)
        self.predictor: nn.Module = (
            nn.Identity() if predictor == "none" else SimSiamPredictionHead(dim, pred_hidden_dim)
        )
        if predictor == "frozen":
            self.predictor.requires_grad_(False)
        self.dim = dim
        self.stop_gradient = stop_gradient
        self.predictor_mode = predictor
        self.symmetric = symmetric
        self.fix_predictor_lr = fix_predictor_lr
        if sync_batchnorm:
            convert_sync_batchnorm(self)

    def encode(self, x: Tensor) -> Tensor:
        """Backbone features ``(B, feature_dim)`` -- the representation used downstream."""
        return self.backbone(x)

    def project(self, x: Tensor) -> Tensor:
        """``z = f(x)``, ``(B, dim)``."""
        return self.projector(self.backbone(x))

    def _target(self, z: Tensor) -> Tensor:
        return z.detach() if self.stop_gradient else z  # the stop-gradient, target side only

    def forward(self, x1: Tensor, x2: Tensor) -> dict[str, Tensor]:
        _check_views(self, x1, x2)
        # two passes, as the official code: each view's BN statistics are its own batch's.
        z1, z2 = self.project(x1), self.project(x2)
        p1 = self.predictor(z1)
        # under autocast the loss is computed in float32 from the half-precision head outputs (_for_loss)
        f1, g1, g2 = _for_loss(p1), _for_loss(z1), _for_loss(z2)
        if self.symmetric:
            p2 = self.predictor(z2)
            loss = 0.5 * negative_cosine_similarity(f1, self._target(g2)) + 0.5 * negative_cosine_similarity(
                _for_loss(p2), self._target(g1)
            )
        else:
            p2 = p1.new_empty(0)
            loss = negative_cosine_similarity(f1, self._target(g2))
        with torch.no_grad():
            std = _monitor_std(g1.detach())
            cos = -negative_cosine_similarity(f1.detach(), g2.detach())
        return {"loss": loss, "std": std, "cos": cos, "z1": z1, "z2": z2, "p1": p1, "p2": p2}

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups: the encoder, and the predictor marked ``fix_lr`` when fixed.

        A frozen or absent predictor contributes no group. Feed the result to any ``torch.optim`` optimizer
        and use :func:`cosine_schedule` to honour ``fix_lr``.
        """
        enc = [p for n, p in self.named_parameters() if not n.startswith("predictor.") and p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": enc, "fix_lr": False, "name": "encoder"}]
        pred = [p for p in self.predictor.parameters() if p.requires_grad]
        if pred:
            groups.append({"params": pred, "fix_lr": self.fix_predictor_lr, "name": "predictor"})
        return groups

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, stop_gradient={self.stop_gradient}, predictor={self.predictor_mode!r}, "
            f"symmetric={self.symmetric}, fix_predictor_lr={self.fix_predictor_lr}"
        )


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay to 0 over ``total_steps`` for every group, except groups with ``fix_lr=True`` (kept
    constant).

    SimSiam's schedule, ``lr * 0.5 * (1 + cos(pi * step / total))`` (Chen & He 2021, Sec. 4 and the official
    ``adjust_learning_rate``), with the predictor optionally fixed (Table 1c).

    Example:
        >>> p, q = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        >>> opt = torch.optim.SGD([{"params": [p]}, {"params": [q], "fix_lr": True}], lr=1.0)
        >>> s = cosine_schedule(opt, 2); opt.step(); s.step()
        >>> [round(g["lr"], 3) for g in opt.param_groups]
        [0.5, 1.0]
    """
    check_int("total_steps", total_steps, low=1)

    def cos(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))

    def const(step: int) -> float:
        return 1.0

    lambdas: list[Callable[[int], float]] = [const if g.get("fix_lr", False) else cos for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
