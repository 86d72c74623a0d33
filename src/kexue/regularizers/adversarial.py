"""Supervised adversarial training: FGM (one step) and PGD (several projected steps).

Articles: https://kexue.fm/archives/7234 and https://kexue.fm/archives/7466 ("对抗训练"); FGM is Goodfellow et
al. 2014 (arXiv 1412.6572) / Miyato et al. 2016 on embeddings, PGD is Madry et al. 2017 (arXiv 1706.06083).

The perturbation is added at a site (input, embedding *output* through a hook, hidden module), never by
editing a weight matrix, so there is no backup/restore step and a failed step leaves the model untouched. The
clean parameter gradient and ``grad_x L`` come from one backward pass; the returned loss carries the clean
parameter gradient through a zero-valued linear term, so ``loss.backward()`` costs one more forward/backward
(FGM = two forward + two backward passes, like the hand-written snippet).

GradScaler: pass ``scaler`` and the inner gradient is taken on the scaled loss and unscaled, so float16
gradients do not underflow; a non-finite inner gradient gives a zero perturbation and leaves the non-finite
clean gradient in place, so ``scaler.step`` skips the step exactly as it would without the regulariser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._site import Forward, Inputs, Site, check_choice, check_positive, linear_surrogate, normalize, trainable

__all__ = ["FGM", "PGD", "fgm_loss", "pgd_loss"]

LossFn = Callable[[Tensor, Tensor], Tensor]
Norm = Literal["l2", "linf", "sign", "none"]


def _step_direction(g: Tensor, norm: str, scope: str, fwd: Forward) -> Tensor:
    if norm == "l2":
        return normalize(
            g,
            "per_sample" if scope == "per_sample" else "global",
            ids=fwd.ids,
            num_embeddings=fwd.num_embeddings,
        )
    if norm in ("linf", "sign"):
        return g.sign()
    return g  # "none": the raw gradient, the step of the 7234 equivalence (Delta x = eps * grad_x L)


def _project(delta: Tensor, eps: float, norm: str, scope: str) -> Tensor:
    if norm in ("linf", "sign"):
        return delta.clamp(-eps, eps)
    if norm == "none":
        return delta
    if scope == "per_sample":
        n = delta.reshape(delta.shape[0], -1).norm(dim=1).clamp_min(torch.finfo(delta.dtype).tiny)
        factor = (eps / n).clamp(max=1.0).reshape(-1, *([1] * (delta.dim() - 1)))
        return delta * factor
    n = delta.norm()
    return delta * min(1.0, eps / max(float(n), 1e-30))


def _scale(scaler: Any) -> float:
    return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0


def _clean_grads(
    fwd: Forward, target: Tensor, lf: LossFn, params: list[nn.Parameter], scaler: Any
) -> tuple[Tensor, Tensor, list[Tensor | None]]:
    logits = fwd(need_grad=True)
    if target.shape[0] != logits.shape[0]:
        raise ValueError(f"target has batch size {target.shape[0]}, logits {tuple(logits.shape)}")
    loss = lf(logits, target)
    s = _scale(scaler)
    v = fwd.value
    assert v is not None
    grads = torch.autograd.grad(loss * s, [v, *params], allow_unused=True)
    g = grads[0]
    assert g is not None
    g = g.detach() / s
    if not torch.isfinite(g).all():
        g = torch.zeros_like(g)  # overflow under the scaler: no perturbation, the scaler will skip the step
    return loss, g, [None if gp is None else gp / s for gp in grads[1:]]


def _validate(eps: float, norm: str, scope: str) -> None:
    check_positive("eps", eps)
    check_choice("norm", norm, ("l2", "linf", "sign", "none"))
    check_choice("scope", scope, ("per_sample", "global"))


def fgm_loss(
    model: nn.Module,
    inputs: Inputs,
    target: Tensor,
    *,
    eps: float,
    site: Site = "input",
    norm: Norm = "l2",
    scope: Literal["per_sample", "global"] = "per_sample",
    loss_fn: LossFn | None = None,
    include_clean: bool = True,
    clamp: tuple[float, float] | None = None,
    scaler: Any = None,
) -> Tensor:
    """FGM: ``L(x) + L(x + delta)`` with ``delta = eps * direction(grad_x L)`` detached.

    Article: https://kexue.fm/archives/7234 (to first order the parameter gradient equals that of
    ``L + 0.5 eps ||grad_x L||^2`` for ``norm="none"`` and of ``L + eps ||grad_x L||`` for ``norm="l2"``).
    The author's text example perturbs the embedding with ``eps = 0.5`` and one norm over the whole embedding
    gradient: ``site="embedding", scope="global"``.

    Args:
        model: returns logits ``(B, C)``.
        inputs: ``x`` or ``(x, *more)``.
        target: labels for ``loss_fn``.
        eps: step size / radius (> 0).
        site: ``"input"``, ``"embedding"`` (embedding output, hooked) or a hidden module.
        norm: ``"l2"`` (normalised gradient), ``"linf"``/``"sign"`` (FGSM sign step), ``"none"`` (raw
            gradient).
        scope: l2 normalisation per sample or over the whole tensor (over the embedding matrix for an
            embedding site, tying equal tokens).
        loss_fn: ``loss_fn(logits, target) -> scalar``; default mean cross entropy.
        include_clean: return ``L(x) + L(x + delta)`` (default) or only the adversarial term.
        clamp: ``(low, high)`` valid range of inputs (input site only), e.g. ``(0, 1)`` for images.
        scaler: a :class:`torch.amp.GradScaler` the caller uses for ``scaler.scale(loss).backward()``.

    Returns:
        Scalar loss; ``loss.backward()`` gives the clean plus adversarial parameter gradients.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> fgm_loss(m, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), eps=0.1).backward()
    """
    _validate(eps, norm, scope)
    lf: LossFn = loss_fn or F.cross_entropy
    fwd = Forward(model, inputs, site)
    if clamp is not None and fwd.module is not None:
        raise ValueError("clamp applies to site='input' only")
    if fwd.module is not None and include_clean:
        # Hooked site (embedding / hidden): grad_x L needs only the layers after the site, and the
        # adversarial pass reuses the clean site value, so the layers before it (e.g. a large embedding
        # matrix, whose dense gradient dominates small text models) are differentiated once, for both terms,
        # by loss.backward().
        logits = fwd(need_grad=True)
        if target.shape[0] != logits.shape[0]:
            raise ValueError(f"target has batch size {target.shape[0]}, logits {tuple(logits.shape)}")
        loss = lf(logits, target)
        v = fwd.value
        assert v is not None
        s = _scale(scaler)
        g = torch.autograd.grad(loss * s, v, retain_graph=True)[0].detach() / s
        if not torch.isfinite(g).all():
            g = torch.zeros_like(g)
        delta = (eps * _step_direction(g, norm, scope, fwd)).detach()
        v_clean = v
        return loss + lf(fwd(lambda _val, _ids: v_clean + delta), target)
    params = trainable(model) if include_clean else []
    loss, g, pgrads = _clean_grads(fwd, target, lf, params, scaler)
    delta = (eps * _step_direction(g, norm, scope, fwd)).detach()
    if clamp is not None:
        x = fwd.inputs[0]
        delta = (x + delta).clamp(*clamp) - x
    adv = lf(fwd(lambda val, _ids: val + delta), target)
    if not include_clean:
        return adv
    return loss.detach() + linear_surrogate(params, pgrads) + adv


def pgd_loss(
    model: nn.Module,
    inputs: Inputs,
    target: Tensor,
    *,
    eps: float,
    alpha: float | None = None,
    steps: int = 3,
    site: Site = "input",
    norm: Norm = "linf",
    scope: Literal["per_sample", "global"] = "per_sample",
    random_start: bool = False,
    loss_fn: LossFn | None = None,
    include_clean: bool = True,
    clamp: tuple[float, float] | None = None,
    scaler: Any = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD: ``steps`` ascent steps of size ``alpha``, each projected onto the ``eps`` ball, then ``L(x +
    delta)``.

    Article: https://kexue.fm/archives/7234 (PGD as the multi-step FGM); Madry et al. 2017. The first step
    reuses the clean gradient (computed together with the clean parameter gradient); each further step is one
    forward and one input-only backward.

    Args:
        model: returns logits ``(B, C)``.
        inputs: ``x`` or ``(x, *more)``.
        target: labels.
        eps: radius of the ball (> 0).
        alpha: step size, default ``eps / 4`` (torchattacks' 2/255 for 8/255), or ``eps`` when ``steps == 1``.
        steps: ascent steps (>= 1).
        site: where ``delta`` is added.
        norm: ``"linf"``/``"sign"`` (sign steps, box projection), ``"l2"`` (normalised steps, ball projection)
            or ``"none"`` (raw gradient steps, no projection).
        scope: l2 normalisation and projection per sample or for the whole tensor.
        random_start: start from a uniform point in the linf box (or a random point on the l2 sphere).
        loss_fn: default mean cross entropy.
        include_clean: add the clean loss (default) or return only the adversarial term.
        clamp: valid range of inputs (input site only).
        scaler: a GradScaler, see :func:`fgm_loss`.
        generator: RNG for ``random_start``.

    Returns:
        Scalar loss.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> pgd_loss(m, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), eps=0.1, steps=2).backward()
    """
    _validate(eps, norm, scope)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if alpha is None:
        alpha = eps if steps == 1 else eps / 4
    check_positive("alpha", alpha)
    lf: LossFn = loss_fn or F.cross_entropy
    fwd = Forward(model, inputs, site)
    if clamp is not None and fwd.module is not None:
        raise ValueError("clamp applies to site='input' only")
    params = trainable(model) if include_clean else []
    loss, g, pgrads = _clean_grads(fwd, target, lf, params, scaler)
    x0 = fwd.inputs[0]

    def clip(d: Tensor) -> Tensor:
        d = _project(d, eps, norm, scope)
        return (x0 + d).clamp(*clamp) - x0 if clamp is not None else d

    delta = torch.zeros_like(g)
    if random_start:
        if norm == "l2":
            r = torch.randn(g.shape, dtype=g.dtype, device=g.device, generator=generator)
            delta = eps * normalize(r, "per_sample" if scope == "per_sample" else "global")
        else:
            delta = (torch.rand(g.shape, dtype=g.dtype, device=g.device, generator=generator) * 2 - 1) * eps
        delta = clip(delta)
        d = delta.clone().requires_grad_(True)
        adv0 = lf(fwd(lambda val, _ids: val.detach() + d), target)
        g = torch.autograd.grad(adv0 * _scale(scaler), d)[0].detach() / _scale(scaler)
    for k in range(steps):
        if k > 0:
            d = delta.clone().requires_grad_(True)

            def shifted(val: Tensor, _ids: Tensor | None, d: Tensor = d) -> Tensor:
                return val.detach() + d

            adv_k = lf(fwd(shifted), target)
            s = _scale(scaler)
            g = torch.autograd.grad(adv_k * s, d)[0].detach() / s
        if not torch.isfinite(g).all():
            break
        delta = clip(delta + alpha * _step_direction(g, norm, scope, fwd)).detach()
    adv = lf(fwd(lambda val, _ids: val + delta), target)
    if not include_clean:
        return adv
    return loss.detach() + linear_surrogate(params, pgrads) + adv


class FGM(nn.Module):
    """Module form of :func:`fgm_loss`: ``FGM(eps=0.5, site="embedding", scope="global")(model, ids, y)``.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> FGM(eps=0.1)(m, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        eps: float,
        site: Site = "input",
        norm: Norm = "l2",
        scope: Literal["per_sample", "global"] = "per_sample",
        include_clean: bool = True,
    ) -> None:
        super().__init__()
        _validate(eps, norm, scope)
        self.eps, self.site, self.norm, self.scope, self.include_clean = eps, site, norm, scope, include_clean

    def forward(self, model: nn.Module, inputs: Inputs, target: Tensor, scaler: Any = None) -> Tensor:
        return fgm_loss(
            model,
            inputs,
            target,
            eps=self.eps,
            site=self.site,
            norm=self.norm,
            scope=self.scope,
            include_clean=self.include_clean,
            scaler=scaler,
        )

    def extra_repr(self) -> str:
        return f"eps={self.eps}, site={self.site!r}, norm={self.norm}, scope={self.scope}"


class PGD(nn.Module):
    """Module form of :func:`pgd_loss`.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> PGD(eps=0.1, steps=2)(m, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        eps: float,
        alpha: float | None = None,
        steps: int = 3,
        site: Site = "input",
        norm: Norm = "linf",
        scope: Literal["per_sample", "global"] = "per_sample",
        random_start: bool = False,
    ) -> None:
        super().__init__()
        _validate(eps, norm, scope)
        self.eps, self.alpha, self.steps, self.site = eps, alpha, steps, site
        self.norm, self.scope, self.random_start = norm, scope, random_start

    def forward(self, model: nn.Module, inputs: Inputs, target: Tensor, scaler: Any = None) -> Tensor:
        return pgd_loss(
            model,
            inputs,
            target,
            eps=self.eps,
            alpha=self.alpha,
            steps=self.steps,
            site=self.site,
            norm=self.norm,
            scope=self.scope,
            random_start=self.random_start,
            scaler=scaler,
        )

    def extra_repr(self) -> str:
        return f"eps={self.eps}, steps={self.steps}, site={self.site!r}, norm={self.norm}"
