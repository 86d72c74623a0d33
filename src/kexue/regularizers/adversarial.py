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

Dropout: the adversarial pass (and each PGD ascent step) draws a *fresh* dropout mask, as in the author's Keras
code (every training-phase call samples its own mask) and in the usual PyTorch FGM/PGD loops, where the attack
is a new training-mode forward. The direction is the gradient under the clean pass's mask, applied to a
differently masked network; :func:`~kexue.regularizers.gradient_penalty_loss` is the mask-consistent
equivalent.

Inputs computed upstream (``inputs_embeds`` from the model's own embedding, the output of the user's encoder)
receive both the clean and the adversarial gradient through the returned loss. Under
``DistributedDataParallel`` the clean pass and the ascent steps run in ``no_sync()``; only the final
adversarial pass prepares the gradient all-reduce.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validate import check_choice, check_int, check_real
from ._site import (
    Forward,
    Inputs,
    Site,
    all_finite,
    check_positive,
    check_static_graph,
    check_target,
    extra_pass,
    linear_surrogate,
    normalize,
    trainable,
)

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
    fwd: Forward, target: Tensor, lf: LossFn, params: list[nn.Parameter], scaler: Any, classes: bool
) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor | None]]]:
    """Clean pass: ``(loss, grad at the site, [(tensor, clean gradient)])`` from one backward.

    The inputs are cut from their upstream graph for this pass (``Forward(cut=True)``), so the backward stops
    at them; their clean gradient is handed back to the original tensors by the returned loss.
    """
    with extra_pass(fwd.model):
        logits = fwd(need_grad=True, cut=True)
    check_target(logits, target, classes=classes)
    loss = lf(logits, target)
    g, carried = fwd.clean_gradients(loss, params, _scale(scaler))
    if not all_finite(g):
        g = torch.zeros_like(g)  # overflow under the scaler: no perturbation, the scaler will skip the step
    return loss, g, carried


def _validate(eps: float, norm: str, scope: str) -> None:
    check_positive("eps", eps)
    check_choice("norm", norm, ("l2", "linf", "sign", "none"))
    check_choice("scope", scope, ("per_sample", "global"))


def _check_clamp(clamp: Any) -> None:
    if clamp is None:
        return
    if not isinstance(clamp, (tuple, list)) or len(clamp) != 2:
        raise TypeError(f"clamp must be a (low, high) pair or None, got {clamp!r}")
    low, high = check_real("clamp[0]", clamp[0]), check_real("clamp[1]", clamp[1])
    if not low < high:
        raise ValueError(f"clamp must satisfy low < high, got {tuple(clamp)!r}")


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
    gradient: ``site="embedding", scope="global"``. The adversarial pass draws a fresh dropout mask (see the
    module docstring).

    Args:
        model: returns logits ``(B, C)`` (or an output with ``.logits``); may be wrapped in DDP.
        inputs: ``x``, ``(x, *more)`` or a dict of keyword arguments / ``BatchEncoding`` (``model(**inputs)``);
            see :mod:`kexue.regularizers._site` for how tuples are passed to Hugging Face models.
        target: labels for ``loss_fn``.
        eps: step size / radius (finite, > 0).
        site: ``"input"`` (``"input:<key>"`` for a dict), ``"embedding"`` (embedding output, hooked) or a hidden
            module.
        norm: ``"l2"`` (normalised gradient), ``"linf"``/``"sign"`` (FGSM sign step), ``"none"`` (raw
            gradient).
        scope: l2 normalisation per sample or over the whole tensor (over the embedding matrix for an
            embedding site, tying equal tokens).
        loss_fn: ``loss_fn(logits, target) -> scalar``; default mean cross entropy.
        include_clean: return ``L(x) + L(x + delta)`` (default) or only the adversarial term.
        clamp: ``(low, high)`` valid range of inputs (input site only), e.g. ``(0, 1)`` for images.
        scaler: a :class:`torch.amp.GradScaler` the caller uses for ``scaler.scale(loss).backward()``.

    Returns:
        Scalar loss; ``loss.backward()`` gives the clean plus adversarial gradients of the parameters and of
        any input computed upstream.

    Raises:
        ValueError: a hyperparameter is non-finite or out of range, the target's batch size differs, the
            model is ``DistributedDataParallel(static_graph=True)``; a perturbed input that is not floating point
            (token ids: use ``site="embedding"``), empty or with NaN/inf; with the default loss, a class index
            outside ``[0, C)`` (other than cross entropy's ignore_index -100).
        TypeError: ``inputs`` or ``target`` of the wrong kind; with the default loss, a target that is neither
            integer class indices nor class probabilities.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> fgm_loss(m, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), eps=0.1).backward()
    """
    _validate(eps, norm, scope)
    _check_clamp(clamp)
    check_static_graph(model, "fgm_loss")
    lf: LossFn = loss_fn or F.cross_entropy
    fwd = Forward(model, inputs, site)
    if clamp is not None and fwd.module is not None:
        raise ValueError("clamp applies to site='input' only")
    if fwd.module is not None and include_clean:
        # Hooked site (embedding / hidden): grad_x L needs only the layers after the site, and the
        # adversarial pass reuses the clean site value, so the layers before it (e.g. a large embedding
        # matrix, whose dense gradient dominates small text models) are differentiated once, for both terms,
        # by loss.backward().
        with extra_pass(model):
            logits = fwd(need_grad=True)
        check_target(logits, target, classes=loss_fn is None)
        loss = lf(logits, target)
        v = fwd.value
        assert v is not None
        s = _scale(scaler)
        g = torch.autograd.grad(loss * s, v, retain_graph=True)[0].detach() / s
        if not all_finite(g):
            g = torch.zeros_like(g)
        delta = (eps * _step_direction(g, norm, scope, fwd)).detach()
        v_clean = v
        return loss + lf(fwd(lambda _val, _ids: v_clean + delta), target)
    params = trainable(fwd.core) if include_clean else []
    loss, g, carried = _clean_grads(fwd, target, lf, params, scaler, loss_fn is None)
    delta = (eps * _step_direction(g, norm, scope, fwd)).detach()
    if clamp is not None:
        x = fwd.input.detach()
        delta = (x + delta).clamp(*clamp) - x
    adv = lf(fwd(lambda val, _ids: val + delta), target)
    if not include_clean:
        return adv
    return loss.detach() + linear_surrogate(carried) + adv


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
    forward and one input-only backward, with a fresh dropout mask as in the usual PGD loop.

    Args:
        model: returns logits ``(B, C)``; may be wrapped in DDP.
        inputs: ``x``, ``(x, *more)`` or a dict of keyword arguments (see :func:`fgm_loss`).
        target: labels.
        eps: radius of the ball (finite, > 0).
        alpha: step size (finite, > 0), default ``eps / 4`` (torchattacks' 2/255 for 8/255), or ``eps`` when
            ``steps == 1``.
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

    Raises:
        ValueError / TypeError: a hyperparameter is non-finite or out of range, bad inputs or target (see
            :func:`fgm_loss`).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> pgd_loss(m, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), eps=0.1, steps=2).backward()
    """
    _validate(eps, norm, scope)
    steps = check_int("steps", steps, low=1)
    if alpha is None:
        alpha = eps if steps == 1 else eps / 4
    check_positive("alpha", alpha)
    _check_clamp(clamp)
    check_static_graph(model, "pgd_loss")
    lf: LossFn = loss_fn or F.cross_entropy
    fwd = Forward(model, inputs, site)
    if clamp is not None and fwd.module is not None:
        raise ValueError("clamp applies to site='input' only")
    params = trainable(fwd.core) if include_clean else []
    loss, g, carried = _clean_grads(fwd, target, lf, params, scaler, loss_fn is None)
    x0 = fwd.input.detach() if clamp is not None else None

    def clip(d: Tensor) -> Tensor:
        d = _project(d, eps, norm, scope)
        return (x0 + d).clamp(*clamp) - x0 if clamp is not None and x0 is not None else d

    def ascent_grad(delta: Tensor) -> Tensor:
        d = delta.clone().requires_grad_(True)

        def shifted(val: Tensor, _ids: Tensor | None) -> Tensor:
            return val.detach() + d

        with extra_pass(model):
            adv_k = lf(fwd(shifted), target)
        s = _scale(scaler)
        return torch.autograd.grad(adv_k * s, d)[0].detach() / s

    delta = torch.zeros_like(g)
    if random_start:
        if norm == "l2":
            r = torch.randn(g.shape, dtype=g.dtype, device=g.device, generator=generator)
            delta = eps * normalize(r, "per_sample" if scope == "per_sample" else "global")
        else:
            delta = (torch.rand(g.shape, dtype=g.dtype, device=g.device, generator=generator) * 2 - 1) * eps
        delta = clip(delta)
        g = ascent_grad(delta)
    for k in range(steps):
        if k > 0:
            g = ascent_grad(delta)
        if not all_finite(g):
            break
        delta = clip(delta + alpha * _step_direction(g, norm, scope, fwd)).detach()
    adv = lf(fwd(lambda val, _ids: val + delta), target)
    if not include_clean:
        return adv
    return loss.detach() + linear_surrogate(carried) + adv


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
        check_int("steps", steps, low=1)
        if alpha is not None:
            check_positive("alpha", alpha)
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
