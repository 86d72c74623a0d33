"""Gradient penalties: the lambda-weighted smoothness penalty and the FGM-equivalent loss-gradient penalty.

Article: https://kexue.fm/archives/7466 ("梯度惩罚") and https://kexue.fm/archives/7234.

* :func:`smoothness_penalty` is :math:`P(x)=\\sum_i\\lambda_i(x)\\|\\nabla_x f_i(x)\\|^2`, the Gauss-Newton
term
  that survives in the consistency loss: :math:`\\mathbb E_\\varepsilon[l(f(x+\\varepsilon),f(x))]\\approx
  \\tfrac12\\sigma^2 P(x)`, with :math:`\\lambda_i=2` for MSE on the outputs and :math:`\\lambda_i=1/p_i` on
  the probabilities for KL. ``estimator="exact"`` takes one gradient per output; ``"rademacher"`` the unbiased
  one-gradient estimate :math:`\\|\\nabla_x(\\tilde\\eta^\\top f)\\|^2` with :math:`\\tilde\\eta_i=\\eta_i
  \\sqrt{\\mathrm{sg}(\\lambda_i)}`, :math:`\\eta_i=\\pm1`.
* :func:`gradient_penalty_loss` is :math:`L+\\tfrac12\\epsilon\\|\\nabla_xL\\|^2` (``form="squared"``, the
  first-order equivalent of FGM with step :math:`\\epsilon\\nabla_xL`) or :math:`L+\\epsilon\\|\\nabla_xL\\|`
  (``form="norm"``, FGM with the normalised step; Ross & Doshi-Velez 2017). ``method="double_backward"``
  differentiates the penalty exactly (``create_graph=True``); ``method="finite_difference"`` needs first
  derivatives only, for models whose ops lack a double-backward formula (fused kernels): the parameter
  gradient
  of :math:`c\\,\\nabla_xL\\cdot u` (``u`` and ``c`` detached) is :math:`c[\\nabla_\\theta
  L(x+hu)-\\nabla_\\theta L(x)]/h+O(h)`.

The finite difference compares two passes of *one* function: the perturbed pass replays the random number
generators (CPU and CUDA) of the clean pass, so dropout draws the same masks in both; the generators end where
one pass leaves them, so the next step still draws fresh masks. Inputs computed upstream (an encoder's output,
``inputs_embeds`` from the model's own embedding) are differentiated through exactly by both methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validate import check_choice, check_int, check_reduction
from ._site import (
    DoubleBackwardError,
    Forward,
    Inputs,
    RngReplay,
    Site,
    check_double_backward,
    check_positive,
    check_static_graph,
    check_target,
    extra_pass,
    global_norm,
    linear_surrogate,
    normalize,
    per_sample_norm,
    trainable,
)

__all__ = ["GradientPenaltyLoss", "SmoothnessPenalty", "gradient_penalty_loss", "smoothness_penalty"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def _grad(out: Tensor, wrt: Tensor, *, create_graph: bool, what: str) -> Tensor:
    try:
        (g,) = torch.autograd.grad(out, wrt, create_graph=create_graph, retain_graph=True)
    except RuntimeError as e:
        if create_graph:
            raise DoubleBackwardError(
                f"{what} needs double backward, which failed ({e}). Use method='finite_difference'."
            ) from e
        raise
    return g


def smoothness_penalty(
    model: nn.Module,
    inputs: Inputs,
    *,
    site: Site = "input",
    loss: Literal["kl", "mse"] = "kl",
    estimator: Literal["exact", "rademacher"] = "exact",
    n_samples: int = 1,
    create_graph: bool = True,
    check: bool = True,
    reduction: Literal["mean", "sum", "none"] = "mean",
    generator: torch.Generator | None = None,
) -> Tensor:
    """The lambda-weighted gradient penalty :math:`\\sum_i\\lambda_i\\|\\nabla_x f_i\\|^2` per sample.

    Article: https://kexue.fm/archives/7466, eqs. for the MSE (lambda = 2) and KL (lambda_i = 1/p_i) cases and
    the sampling estimate. lambda is detached (``.detach()`` on the probabilities), as the Gauss-Newton
    weights are evaluated at the clean point. Per-sample gradients are taken through the batch sum, so the
    model must treat samples independently (no BatchNorm in training mode).

    Args:
        model: returns logits ``(B, C)``; ``f`` is the logits for MSE, ``softmax(logits)`` for KL.
        inputs: ``x``, ``(x, *more)`` or a dict of keyword arguments (``model(**inputs)``).
        site: where ``x`` is (input, embedding output, hidden module).
        loss: ``"kl"`` or ``"mse"``.
        estimator: ``"exact"`` (C gradients) or ``"rademacher"`` (``n_samples`` gradients).
        n_samples: Rademacher draws averaged (an integer >= 1).
        create_graph: keep the graph so the penalty can be trained on (double backward).
        check: with ``create_graph``, raise :class:`DoubleBackwardError` if an op cannot be differentiated
            twice.
        reduction: over the batch.
        generator: RNG for the Rademacher signs.

    Returns:
        Scalar, or ``(B,)`` for ``reduction="none"``.

    Raises:
        DoubleBackwardError: the model holds an op without double backward (use
            :func:`gradient_penalty_loss` with ``method="finite_difference"``).
        ValueError: an unknown option; a perturbed input that is not floating point (token ids: use
            ``site="embedding"``), empty or with NaN/inf.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> smoothness_penalty(m, torch.randn(5, 4), loss="mse", reduction="none").shape
        torch.Size([5])
    """
    check_choice("loss", loss, ("kl", "mse"))
    check_choice("estimator", estimator, ("exact", "rademacher"))
    check_reduction(reduction)
    check_int("n_samples", n_samples, low=1)
    check_static_graph(model, "smoothness_penalty")
    fwd = Forward(model, inputs, site)
    logits = fwd(need_grad=True)
    v = fwd.value
    assert v is not None
    if loss == "mse":
        f = logits
        lam = torch.full_like(logits, 2.0)
    else:
        f = F.softmax(logits, dim=-1)
        lam = 1.0 / f.detach().clamp_min(torch.finfo(f.dtype).tiny)  # lambda_i = 1/p_i, a constant weight
    what = "smoothness_penalty"
    per = torch.zeros(logits.shape[0], dtype=logits.dtype, device=logits.device)
    if estimator == "exact":
        for i in range(logits.shape[1]):
            g = _grad(f[:, i].sum(), v, create_graph=create_graph, what=what)
            if create_graph and check and i == 0:
                check_double_backward(g, what)
            per = per + lam[:, i] * per_sample_norm(g) ** 2
    else:
        for s in range(n_samples):
            eta = torch.randint(0, 2, f.shape, generator=generator, device=f.device).to(f.dtype) * 2 - 1
            eta = eta * lam.sqrt()  # eta_i * sqrt(sg(lambda_i)): E[eta eta^T] = diag(lambda)
            g = _grad((eta * f).sum(), v, create_graph=create_graph, what=what)
            if create_graph and check and s == 0:
                check_double_backward(g, what)
            per = per + per_sample_norm(g) ** 2
        per = per / n_samples
    return per.mean() if reduction == "mean" else per.sum() if reduction == "sum" else per


def _direction_and_coef(g: Tensor, form: str, scope: str, eps: float, fwd: Forward) -> tuple[Tensor, Tensor, Tensor]:
    """``(u, c, value)``: the penalty's parameter gradient is ``c * grad_theta(grad_x L . u)``."""
    if form == "squared":
        n = global_norm(g)  # scale-safe: ||g||^2 of a float32 gradient beyond ~1e19 would overflow
        u = g / n.clamp_min(torch.finfo(g.dtype).tiny)
        return u, eps * n, 0.5 * eps * n**2
    if scope == "global":
        u = normalize(g, "global", ids=fwd.ids, num_embeddings=fwd.num_embeddings)
        gn = (g * u).sum()  # ||grad|| in the (tied) space of the normalisation
        return u, torch.tensor(eps, dtype=g.dtype, device=g.device), eps * gn
    u = normalize(g, "per_sample")
    return u, torch.tensor(eps, dtype=g.dtype, device=g.device), eps * per_sample_norm(g).sum()


def gradient_penalty_loss(
    model: nn.Module,
    inputs: Inputs,
    target: Tensor,
    *,
    eps: float = 1.0,
    site: Site = "input",
    form: Literal["squared", "norm"] = "squared",
    scope: Literal["per_sample", "global"] = "global",
    method: Literal["double_backward", "finite_difference"] = "double_backward",
    fd_step: float = 1e-3,
    loss_fn: LossFn | None = None,
    check: bool = True,
) -> Tensor:
    """``L + 0.5 * eps * ||grad_x L||^2`` (or ``L + eps * ||grad_x L||``), the gradient penalty equal to FGM.

    Article: https://kexue.fm/archives/7234 (FGM with step ``eps * grad_x L`` has, to first order, the
    parameter gradient of ``L + 0.5 eps ||grad_x L||^2``), used in https://kexue.fm/archives/7466; the
    author's embedding-level example uses ``eps = 1`` on the whole embedding gradient (``scope="global"``).

    Args:
        model: returns logits ``(B, C)`` (or an output with ``.logits``); may be wrapped in DDP.
        inputs: ``x``, ``(x, *more)`` or a dict of keyword arguments / ``BatchEncoding`` (``model(**inputs)``);
            ``x`` may be computed upstream (requires grad): its graph receives the penalty's gradient.
        target: labels for ``loss_fn``.
        eps: penalty weight (finite, > 0).
        site: where ``x`` is: ``"input"``, ``"embedding"`` (the embedding output; with ``scope="global"`` the
            norm is taken over the embedding matrix, tying equal tokens) or a hidden module.
        form: ``"squared"`` (``0.5 eps ||g||^2``) or ``"norm"`` (``eps ||g||``, per sample or global).
        scope: for ``form="norm"``: one norm over the batch (``"global"``) or the sum of per-sample norms.
        method: ``"double_backward"`` (exact, needs every op twice differentiable) or ``"finite_difference"``
            (first derivatives only; one extra forward/backward at ``x + h u``, with the clean pass's dropout
            masks replayed).
        fd_step: finite-difference step ``h`` relative to the mean per-sample norm of ``x`` (finite, > 0).
        loss_fn: ``loss_fn(logits, target) -> scalar``; default mean cross entropy.
        check: for double backward, raise :class:`DoubleBackwardError` on ops that cannot be differentiated
            twice.

    Returns:
        Scalar ``L + penalty``. With ``method="finite_difference"`` its value is exactly ``L + penalty`` and
        its parameter gradient the finite-difference estimate; the clean parameter gradient is computed in the
        same backward pass as ``grad_x L`` and carried by a zero-valued linear term.

    Raises:
        DoubleBackwardError: double backward is impossible through the model; the message names
            ``method='finite_difference'``.
        ValueError: ``eps``/``fd_step`` not finite and > 0, an unknown option, the target's batch size differs,
            ``DistributedDataParallel(static_graph=True)``; a perturbed input that is not floating point (token
            ids: use ``site="embedding"``), empty or with NaN/inf; with the default loss, a class index outside
            ``[0, C)`` (other than cross entropy's ignore_index -100).
        TypeError: with the default loss, a target that is neither integer class indices nor class
            probabilities.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
        >>> gradient_penalty_loss(m, x, y, eps=1.0).backward()
    """
    check_positive("eps", eps)
    check_positive("fd_step", fd_step)
    check_choice("form", form, ("squared", "norm"))
    check_choice("scope", scope, ("per_sample", "global"))
    check_choice("method", method, ("double_backward", "finite_difference"))
    check_static_graph(model, "gradient_penalty_loss")
    lf: LossFn = loss_fn or F.cross_entropy
    fwd = Forward(model, inputs, site)
    if method == "double_backward":
        logits = fwd(need_grad=True)
        check_target(logits, target, classes=loss_fn is None)
        loss = lf(logits, target)
        v = fwd.value
        assert v is not None
        g = _grad(loss, v, create_graph=True, what="gradient_penalty_loss")
        if check:
            check_double_backward(g, "gradient_penalty_loss")
        if form == "squared":
            pen = 0.5 * eps * g.pow(2).sum()
        elif scope == "global":
            if fwd.ids is not None and fwd.num_embeddings is not None:
                _, inverse = torch.unique(fwd.ids.reshape(-1), return_inverse=True)
                rows = torch.zeros(int(inverse.max()) + 1, g.shape[-1], dtype=g.dtype, device=g.device)
                rows = rows.index_add(0, inverse, g.reshape(-1, g.shape[-1]))  # gradient w.r.t. used rows
                pen = eps * rows.norm()
            else:
                pen = eps * g.norm()
        else:
            pen = eps * per_sample_norm(g).sum()
        return loss + pen

    # Finite difference: both passes must see the same function, so the perturbed pass replays the random
    # number generators of the clean one (same dropout masks); otherwise [grad L(x+hu) - grad L(x)] / h is the
    # difference of two differently-masked networks divided by a small h.
    rng = RngReplay.for_pass(model, fwd)
    if fwd.module is not None:
        # Hooked site (embedding / hidden): grad_x L needs only the layers after the site. The perturbed pass
        # reuses the clean site value, so the layers before the site (e.g. a large embedding matrix, whose
        # dense gradient dominates small text models) are differentiated once for both terms, and so is any
        # graph upstream of the inputs.
        with extra_pass(model):
            logits = fwd(need_grad=True)
        check_target(logits, target, classes=loss_fn is None)
        loss = lf(logits, target)
        v = fwd.value
        assert v is not None
        (g,) = torch.autograd.grad(loss, v, retain_graph=True)
        u, c, value = _direction_and_coef(g.detach(), form, scope, eps, fwd)
        h = fd_step * float(per_sample_norm(v.detach()).mean().clamp_min(1e-12))
        step = (h * u).detach()
        v_clean = v
        rng.restore()
        loss_h = lf(fwd(lambda _val, _ids: v_clean + step), target)
        ch = (c / h).detach()
        total = (1 - ch) * loss + ch * loss_h  # gradient: (1 - c/h) grad L(x) + c/h grad L(x + h u)
        return loss.detach() + value.detach() + (total - total.detach())

    # Input site: one backward gives grad_x L, the clean parameter gradient and the clean gradient of any
    # upstream input (the clean pass runs on detached copies of the inputs, see Forward(cut=True)).
    params = trainable(fwd.core)
    with extra_pass(model):
        logits = fwd(need_grad=True, cut=True)
    check_target(logits, target, classes=loss_fn is None)
    loss = lf(logits, target)
    g0, carried = fwd.clean_gradients(loss, params)
    u, c, value = _direction_and_coef(g0, form, scope, eps, fwd)
    h = fd_step * float(per_sample_norm(fwd.input.detach()).mean().clamp_min(1e-12))
    step = (h * u).detach()
    rng.restore()
    loss_h = lf(fwd(lambda val, _ids: val + step), target)  # through the original (upstream) inputs
    # d/dtheta [c/h * (L(x+hu) - L(x))]: the L(x) part is the (detached) clean gradient, handed over with
    # weight (1 - c/h) by the linear surrogate so the clean graph needs no second backward.
    ch = (c / h).detach()
    surrogate = linear_surrogate(carried, 1 - ch)
    fd_part = ch * loss_h
    return loss.detach() + value.detach() + surrogate + (fd_part - fd_part.detach())


class SmoothnessPenalty(nn.Module):
    """Module form of :func:`smoothness_penalty` (``reduction`` as there, ``"mean"`` by default).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> SmoothnessPenalty(estimator="rademacher")(m, torch.randn(5, 4)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        site: Site = "input",
        loss: Literal["kl", "mse"] = "kl",
        estimator: Literal["exact", "rademacher"] = "exact",
        n_samples: int = 1,
        reduction: Literal["mean", "sum", "none"] = "mean",
    ) -> None:
        super().__init__()
        check_choice("loss", loss, ("kl", "mse"))
        check_choice("estimator", estimator, ("exact", "rademacher"))
        check_int("n_samples", n_samples, low=1)
        check_reduction(reduction)
        self.site, self.loss, self.estimator, self.n_samples = site, loss, estimator, n_samples
        self.reduction = reduction

    def forward(self, model: nn.Module, inputs: Inputs) -> Tensor:
        return smoothness_penalty(
            model,
            inputs,
            site=self.site,
            loss=self.loss,
            estimator=self.estimator,
            n_samples=self.n_samples,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"site={self.site!r}, loss={self.loss}, estimator={self.estimator}, reduction={self.reduction!r}"


class GradientPenaltyLoss(nn.Module):
    """Module form of :func:`gradient_penalty_loss` (default: the author's ``eps = 1``, squared, global).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> crit = GradientPenaltyLoss(method="finite_difference")
        >>> crit(m, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        eps: float = 1.0,
        site: Site = "input",
        form: Literal["squared", "norm"] = "squared",
        scope: Literal["per_sample", "global"] = "global",
        method: Literal["double_backward", "finite_difference"] = "double_backward",
        fd_step: float = 1e-3,
    ) -> None:
        super().__init__()
        check_positive("eps", eps)
        check_positive("fd_step", fd_step)
        check_choice("form", form, ("squared", "norm"))
        check_choice("scope", scope, ("per_sample", "global"))
        check_choice("method", method, ("double_backward", "finite_difference"))
        self.eps, self.site, self.form, self.scope, self.method, self.fd_step = (
            eps,
            site,
            form,
            scope,
            method,
            fd_step,
        )

    def forward(self, model: nn.Module, inputs: Inputs, target: Tensor) -> Tensor:
        return gradient_penalty_loss(
            model,
            inputs,
            target,
            eps=self.eps,
            site=self.site,
            form=self.form,
            scope=self.scope,
            method=self.method,
            fd_step=self.fd_step,
        )

    def extra_repr(self) -> str:
        return f"eps={self.eps}, site={self.site!r}, form={self.form}, scope={self.scope}, method={self.method}"
