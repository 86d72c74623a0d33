"""GradNorm (Chen et al. 2018, arXiv 1711.02257): learned task weights that balance gradient norms.

**Not from the article**: Su calls it "essentially a mix of" initial-loss normalisation and his Eq. 13, and
"cumbersome and redundant" (https://kexue.fm/archives/8870). Included as the baseline users expect.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from kexue._validate import check_choice, check_real

from ._distributed import all_reduce_mean_
from ._grads import (
    ScalerLike,
    check_requires_grad,
    check_scaler,
    current_scale,
    scale_loss,
    scaler_enabled,
    shared_list,
)
from ._inputs import Losses, loss_items, stack_losses
from .base import BackwardResult, MultiTaskStrategy, WeightedLoss
from .gradient_level import non_finite_error

__all__ = ["GradNorm"]


def _norm(gs: Iterable[Tensor | None], scale: float, device: torch.device) -> Tensor:
    """``||concat(gs)|| / scale`` in float64, from max-abs-normalised pieces (no overflow at any scale)."""
    parts = [g.detach() for g in gs if g is not None]
    if not parts:
        return torch.zeros((), dtype=torch.float64, device=device)
    m = torch.stack([p.abs().amax().double() for p in parts]).max()
    if not bool(torch.isfinite(m)) or float(m) == 0.0:
        return m / scale  # inf/NaN (AMP overflow) or an all-zero gradient
    sq = sum(((p.double() / m) ** 2).sum() for p in parts)
    return m * torch.as_tensor(sq).sqrt() / scale


class GradNorm(MultiTaskStrategy):
    """GradNorm (Chen et al. 2018, arXiv 1711.02257), **not from the article** (Su: "cumbersome and redundant").

    Learned weights ``w_i`` (init 1, renormalised to sum to ``n``) make the weighted gradient norms
    ``G_i = w_i ||grad_W L_i||`` track ``mean(G) * r_i^alpha``, with ``r_i`` the relative inverse training
    rate ``(L_i / L_i(0)) / mean_j(L_j / L_j(0))``. ``W`` is the last shared layer (the last shared parameter
    with ``dim >= 2``) as in the paper when ``layer="last"``, or all shared parameters (Su's theta) with
    ``layer="all"``. The network gets ``grad sum_i w_i L_i`` (one full backward after one cheap backward per
    task to ``W``); the weights take one Adam step (``lr``) on ``L_grad = sum_i |G_i - target_i|`` with the
    target held constant, whose gradient is ``sign(G_i - target_i) ||grad_W L_i||`` in closed form. ``L_i(0)``
    is the first batch's loss. Under AMP the per-task passes go through ``scaler.scale``; a step whose
    gradients overflow leaves the weights unchanged.

    Args:
        num_tasks: number of tasks ``n``.
        alpha: the asymmetry ``alpha`` (finite, >= 0; 1.5 is typical).
        lr: learning rate of the weights' Adam step (finite, > 0).
        layer: ``"last"`` or ``"all"``.
    """

    level = "gradient"
    needs_positive = True

    task_weights: Tensor
    initial: Tensor
    steps: Tensor
    adam_m: Tensor
    adam_v: Tensor

    def __init__(self, num_tasks: int, *, alpha: float = 1.5, lr: float = 0.025, layer: str = "last") -> None:
        super().__init__(num_tasks)
        self.layer = check_choice("layer", layer, ("last", "all"))
        self.alpha = check_real("alpha", alpha, low=0.0)
        self.lr = check_real("lr", lr, low=0.0, low_inclusive=False)
        n = self.num_tasks
        self.register_buffer("task_weights", torch.ones(n))
        self.register_buffer("initial", torch.zeros(n))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))
        self.register_buffer("adam_m", torch.zeros(n))
        self.register_buffer("adam_v", torch.zeros(n))

    def forward(self, losses: Losses) -> WeightedLoss:
        raise TypeError("GradNorm is a gradient-level method: call .backward(losses, shared_parameters) instead")

    def backward(
        self,
        losses: Losses,
        shared_parameters: Iterable[Tensor] | None = None,
        *,
        scaler: ScalerLike | None = None,
    ) -> BackwardResult:
        """Backpropagate ``sum_i w_i L_i`` into ``.grad`` and take one step on the weights.

        Args:
            losses: ``num_tasks`` finite positive scalar task losses, each requiring grad.
            shared_parameters: the shared trunk (``W`` is taken from it).
            scaler: optional ``torch.amp.GradScaler``.

        Returns:
            :class:`BackwardResult`: the weights used for this step and the (unscaled) weighted loss.

        Raises:
            TypeError, ValueError: invalid losses, shared parameters or scaler; non-finite gradient norms
                without an enabled scaler.
        """
        check_scaler(scaler)
        L = stack_losses(losses, "GradNorm", num_tasks=self.num_tasks, positive=True)
        items = loss_items(losses)
        check_requires_grad(items, "GradNorm")
        shared = shared_list(shared_parameters, "GradNorm")
        if self.layer == "last":
            mats = [p for p in shared if p.dim() >= 2]
            W = [mats[-1] if mats else shared[-1]]
        else:
            W = shared
        n = L.shape[0]
        norms = []
        scale = 1.0
        for i in range(n):
            li = scale_loss(scaler, items[i])
            if i == 0:
                scale = current_scale(scaler)
            gs = torch.autograd.grad(li, W, retain_graph=True, allow_unused=True)
            norms.append(_norm(gs, scale, L.device))
        nrm = all_reduce_mean_(torch.stack(norms).to(self.task_weights))
        finite = bool(torch.isfinite(nrm).all())
        if not finite and not scaler_enabled(scaler):
            raise non_finite_error("GradNorm", "the task gradients over the shared layer")
        w = self.task_weights.clone()
        total = (w.to(L) * L).sum()
        scale_loss(scaler, total).backward()
        with torch.no_grad():
            cur = all_reduce_mean_(L.detach().clone()).to(self.task_weights)
            if int(self.steps) == 0:
                self.initial.copy_(cur)
            if finite:  # an overflowing AMP step (skipped by scaler.step) does not move the weights
                Gw = w * nrm
                ratio = cur / self.initial.clamp_min(1e-12)
                r = ratio / ratio.mean()
                target = Gw.mean() * r**self.alpha
                grad = torch.sign(Gw - target) * nrm
                t = int(self.steps) + 1
                self.adam_m.mul_(0.9).add_(0.1 * grad)
                self.adam_v.mul_(0.999).add_(0.001 * grad * grad)
                mhat = self.adam_m / (1 - 0.9**t)
                vhat = self.adam_v / (1 - 0.999**t)
                new = (w - self.lr * mhat / (vhat.sqrt() + 1e-8)).clamp_min(1e-4)
                self.task_weights.copy_(new * n / new.sum())
            self.steps += 1
        return BackwardResult(loss=total.detach(), weights=w)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, alpha={self.alpha}, lr={self.lr}, layer={self.layer!r}"
