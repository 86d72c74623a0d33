"""BYOL (Grill et al. 2020, https://arxiv.org/abs/2006.07733): an online network predicts an EMA target
network.

Online: backbone ``f_theta`` -> projector ``g_theta`` -> predictor ``q_theta``. Target: copies of backbone and
projector, ``xi <- tau xi + (1 - tau) theta`` after every step, with ``tau`` raised from ``tau_base = 0.996``
to 1 by the cosine schedule ``tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2`` (Sec. 3.3). The loss is the
symmetrised normalised MSE ``||q(z1)/|q(z1)| - z'2/|z'2| ||^2 + (views swapped)``, with ``z'`` from the
target under ``torch.no_grad()`` and ``.detach()``.

Buffers (BatchNorm running statistics) are not parameters and the paper is silent about them; they only matter
when the target network is used in eval mode. The policy is explicit here (``buffers=``):

* ``"copy"`` (default): after each update the target's float buffers are copied from the online network, so a
  target in eval mode normalises with the statistics of the data the online network currently sees.
* ``"ema"``: float buffers are averaged with the same ``tau`` as the parameters (timm's ``ModelEmaV2``).
* ``"own"``: left alone -- the target keeps the running statistics of its own train-mode forwards (what
  ``byol-pytorch`` and lightly's ``update_momentum`` end up doing).

Integer buffers (``num_batches_tracked``) are copied under ``"copy"`` and ``"ema"``.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from kexue._validate import check_choice, check_int, check_real
from kexue.losses.cosine import normalized_mse
from kexue.modules.heads import BYOLPredictionHead, BYOLProjectionHead, convert_sync_batchnorm

from .simsiam import _check_sizes, _check_views, _for_loss, _monitor_std

__all__ = ["BYOL", "cosine_tau", "ema_update_"]

BufferPolicy = Literal["copy", "ema", "own"]


def cosine_tau(step: int, total_steps: int, *, base: float = 0.996) -> float:
    """BYOL's target decay rate ``1 - (1 - base) (cos(pi step / total_steps) + 1) / 2`` (Grill et al., Sec.
    3.3).

    Example:
        >>> cosine_tau(0, 100), cosine_tau(100, 100)
        (0.996, 1.0)
    """
    check_int("step", step)
    check_int("total_steps", total_steps, low=1)
    base = check_real("base", base, low=0, high=1)
    k = min(max(step, 0), total_steps)
    return 1 - (1 - base) * (math.cos(math.pi * k / total_steps) + 1) / 2


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, *, tau: float, buffers: BufferPolicy = "copy") -> None:
    """In place ``xi <- tau * xi + (1 - tau) * theta`` for every parameter, and the buffer ``policy``.

    Args:
        target: the EMA module (same structure as ``online``).
        online: the trained module.
        tau: decay rate in ``[0, 1]`` (1 keeps the target, 0 copies the online network).
        buffers: ``"copy"``, ``"ema"`` or ``"own"`` (see the module docstring).

    Raises:
        ValueError: ``tau`` outside ``[0, 1]``, unknown policy, or the two modules differ in structure.

    Example:
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> ema_update_(a, b, tau=0.0)
        >>> torch.equal(a.weight, b.weight)
        True
    """
    tau = check_real("tau", tau, low=0, high=1, allow_tensor=True)  # a 0-d tensor is read as its value
    check_choice("buffers", buffers, ("copy", "ema", "own"))
    tp: list[Tensor] = list(target.parameters())
    op: list[Tensor] = list(online.parameters())
    tb, ob = list(target.buffers()), list(online.buffers())
    if len(tp) != len(op) or len(tb) != len(ob):
        raise ValueError(
            f"target and online differ in structure: {len(tp)} vs {len(op)} parameters, {len(tb)} vs {len(ob)} buffers"
        )
    if tp:
        torch._foreach_lerp_(tp, [p.detach() for p in op], 1.0 - tau)  # xi + (1 - tau)(theta - xi)
    if buffers == "own":
        return
    for t, o in zip(tb, ob, strict=True):
        if buffers == "ema" and t.is_floating_point():
            t.lerp_(o.detach(), 1.0 - tau)
        else:
            t.copy_(o.detach())


class BYOL(nn.Module):
    """BYOL: online backbone + projector + predictor regressing an EMA target's projection.

    Args:
        backbone: maps inputs to ``(B, feature_dim)``.
        feature_dim: backbone output size.
        hidden_dim: projector/predictor hidden width (4096 in the paper).
        dim: projection size (256).
        tau_base: base target decay rate (0.996); see :func:`cosine_tau`.
        buffers: target buffer policy, ``"copy"`` | ``"ema"`` | ``"own"``.
        symmetric: symmetrised loss (the paper) or only the first view's prediction.
        sync_batchnorm: convert every ``BatchNorm1d`` to :class:`kexue.modules.SyncBatchNorm1d`.

    Forward:
        ``forward(x1, x2)`` returns ``{"loss", "std", "cos", "z1", "p1"}``; the loss is in ``[0, 8]``
        (``[0, 4]`` asymmetric); ``std`` is NaN for a batch of one, which works in eval mode only (BatchNorm in
        train mode needs two examples: ``ValueError`` naming the batch size). Under autocast ``z1`` and ``p1``
        are half precision (the heads' linear layers) while the loss, ``std`` and ``cos`` are computed and
        returned in float32, as ``F.cross_entropy`` is. Call :meth:`update_target` after every optimizer step
        (e.g. ``fit(..., after_step=lambda m, k: m.update_target(k, total_steps))``).

    Example:
        >>> from kexue.modules import SmallCNN
        >>> m = BYOL(SmallCNN(num_classes=0, width=4, feature_dim=16), 16, hidden_dim=32, dim=8)
        >>> out = m(torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28))
        >>> round(m.update_target(1, 100), 4)
        0.996
        >>> out["loss"].shape
        torch.Size([])
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        *,
        hidden_dim: int = 4096,
        dim: int = 256,
        tau_base: float = 0.996,
        buffers: BufferPolicy = "copy",
        symmetric: bool = True,
        sync_batchnorm: bool = False,
    ) -> None:
        super().__init__()
        check_choice("buffers", buffers, ("copy", "ema", "own"))
        tau_base = check_real("tau_base", tau_base, low=0, high=1)
        _check_sizes(feature_dim=feature_dim, hidden_dim=hidden_dim, dim=dim)
        self.backbone = backbone
        self.projector = BYOLProjectionHead(feature_dim, hidden_dim, dim)
        self.predictor = BYOLPredictionHead(dim, hidden_dim)
        if sync_batchnorm:
            convert_sync_batchnorm(self)
        self.target_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.dim, self.tau_base, self.buffer_policy, self.symmetric = dim, tau_base, buffers, symmetric
        self.tau = tau_base

    def encode(self, x: Tensor) -> Tensor:
        """Online backbone features ``(B, feature_dim)`` (BYOL keeps the online encoder)."""
        return self.backbone(x)

    def _target(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.target_projector(self.target_backbone(x)).detach()  # the target: no gradient

    def forward(self, x1: Tensor, x2: Tensor) -> dict[str, Tensor]:
        _check_views(self, x1, x2)
        z1 = self.projector(self.backbone(x1))
        p1 = self.predictor(z1)
        # under autocast the loss is computed in float32 from the half-precision head outputs (_for_loss)
        f1, t2 = _for_loss(p1), _for_loss(self._target(x2))
        loss = normalized_mse(f1, t2)
        if self.symmetric:
            p2 = self.predictor(self.projector(self.backbone(x2)))
            loss = loss + normalized_mse(_for_loss(p2), _for_loss(self._target(x1)))
        with torch.no_grad():
            std = _monitor_std(_for_loss(z1.detach()))
            cos = 1 - 0.5 * normalized_mse(f1.detach(), t2)
        return {"loss": loss, "std": std, "cos": cos, "z1": z1, "p1": p1}

    @torch.no_grad()
    def update_target(self, step: int, total_steps: int) -> float:
        """EMA step with ``tau = cosine_tau(step, total_steps, base=tau_base)``; returns the ``tau`` used."""
        self.tau = cosine_tau(step, total_steps, base=self.tau_base)
        ema_update_(self.target_backbone, self.backbone, tau=self.tau, buffers=self.buffer_policy)
        ema_update_(self.target_projector, self.projector, tau=self.tau, buffers=self.buffer_policy)
        return self.tau

    def parameter_groups(self) -> list[dict[str, Any]]:
        """One group with the online parameters (the target's have ``requires_grad=False``)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "fix_lr": False, "name": "online"}]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, tau_base={self.tau_base}, buffers={self.buffer_policy!r}, symmetric={self.symmetric}"
