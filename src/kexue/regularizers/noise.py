"""Training with noise: additive or multiplicative noise on inputs, hidden activations or weights; label
noise.

Article: https://kexue.fm/archives/7466 section "随机噪声" (eq. for :math:`L_\\varepsilon`), and the k-sample
estimate :math:`\\tilde l(x,y)\\approx\\frac1k\\sum_i l(f(x+\\varepsilon_i),y)`. To second order, zero-mean
input
noise of variance :math:`\\sigma^2` adds :math:`\\tfrac12\\sigma^2\\Delta_x l` (Bishop 1995). Replacing the
label by the clean prediction gives the consistency term :math:`l(f(x+\\varepsilon), f(x))`, which needs no
label (the semi-supervised recipe) and is, to second order, the lambda-weighted gradient penalty of
:mod:`kexue.regularizers.gradient_penalty`. Label noise is label smoothing (``label_smoothing``).

Dropout: each of the ``k`` noisy passes draws its own dropout mask, and the clean target of the consistency
term is computed with dropout off by default (``probe_dropout=False``). Dropout is then one more noise source,
sampled independently per pass, as in the k-sample estimate of the noisy loss and in Pi-model-style
consistency training; nothing here is a finite difference that needs equal masks. Under
``DistributedDataParallel`` every pass but the last runs in ``no_sync()``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .._validate import check_choice, check_float_tensor, check_int, check_real, check_reduction
from ._site import (
    Forward,
    Inputs,
    Site,
    as_logits,
    call_args,
    check_positive,
    check_static_graph,
    check_target,
    dropout_disabled,
    extra_pass,
)

__all__ = [
    "NoiseConsistencyLoss",
    "NoisyLoss",
    "consistency_divergence",
    "noise_consistency_loss",
    "noisy_loss",
    "perturb",
]

Kind = Literal["additive", "multiplicative"]
Distribution = Literal["gaussian", "uniform", "bernoulli"]
LossFn = Callable[[Tensor, Tensor], Tensor]


def perturb(
    value: Tensor,
    *,
    sigma: float,
    kind: Kind = "additive",
    distribution: Distribution = "gaussian",
    generator: torch.Generator | None = None,
) -> Tensor:
    """``value`` plus (additive) or times (multiplicative) zero-mean / unit-mean noise of standard deviation
    sigma.

    Additive: ``value + sigma * e`` with ``e`` standard Gaussian or uniform on ``[-sqrt(3), sqrt(3)]``.
    Multiplicative (dropout-like): ``value * m`` with ``E[m] = 1``, ``Std[m] = sigma``: Gaussian ``1 + sigma *
    e``, uniform, or Bernoulli keep-mask scaled by ``1 / (1 - p)`` with drop rate ``p = sigma^2 / (1 +
    sigma^2)`` (so ``sigma = 1`` is dropout with ``p = 0.5``).

    Args:
        value: any shape.
        sigma: noise standard deviation, finite and >= 0.
        kind: ``"additive"`` or ``"multiplicative"``.
        distribution: ``"gaussian"``, ``"uniform"`` or (multiplicative only) ``"bernoulli"``.
        generator: optional RNG.

    Returns:
        Tensor of ``value``'s shape and dtype.

    Raises:
        TypeError: ``value`` is not a floating-point tensor.
        ValueError: ``value`` holds NaN or inf; ``sigma`` not finite and >= 0; an unknown option.

    Example:
        >>> perturb(torch.zeros(2, 3), sigma=0.0).abs().sum().item()
        0.0
    """
    check_float_tensor("value", value, allow_empty=True)  # noise on an empty tensor is an empty tensor
    _check_noise(sigma, kind, distribution)
    return _perturb(value, sigma, kind, distribution, generator)


def _perturb(value: Tensor, sigma: float, kind: str, distribution: str, generator: torch.Generator | None) -> Tensor:
    """The core of :func:`perturb` (arguments validated by the caller)."""
    if sigma == 0:
        return value
    shape, dt, dev = value.shape, value.dtype, value.device
    if distribution == "gaussian":
        e = torch.randn(shape, dtype=dt, device=dev, generator=generator)
    elif distribution == "uniform":
        e = (torch.rand(shape, dtype=dt, device=dev, generator=generator) * 2 - 1) * 3**0.5
    else:
        p = sigma**2 / (1 + sigma**2)
        keep = torch.rand(shape, dtype=dt, device=dev, generator=generator) >= p
        return value * keep.to(dt) / (1 - p)
    return value + sigma * e if kind == "additive" else value * (1 + sigma * e)


def _check_noise(sigma: float, kind: str, distribution: str) -> None:
    check_real("sigma", sigma, low=0.0)
    check_choice("kind", kind, ("additive", "multiplicative"))
    check_choice("distribution", distribution, ("gaussian", "uniform", "bernoulli"))
    if distribution == "bernoulli" and kind == "additive":
        raise ValueError("distribution='bernoulli' is multiplicative noise (dropout); use kind='multiplicative'")


def _weight_noise_logits(
    model: nn.Module,
    inputs: Inputs,
    sigma: float,
    kind: Kind,
    distribution: Distribution,
    gen: torch.Generator | None,
) -> Tensor:
    # The noise goes on a functional copy of the parameters, so the module itself is never edited (nothing to
    # restore, and gradients flow to the clean weights through the perturbation).
    args, kwargs = call_args(model, inputs)
    params = {n: _perturb(p, sigma, kind, distribution, gen) for n, p in model.named_parameters()}
    first = next(t for t in (*args, *kwargs.values()) if isinstance(t, Tensor))
    return as_logits(functional_call(model, params, tuple(args), dict(kwargs)), first.shape[0])


def _noisy_logits(
    model: nn.Module,
    inputs: Inputs,
    site: Site | Literal["weights"],
    sigma: float,
    kind: Kind,
    distribution: Distribution,
    gen: torch.Generator | None,
) -> Tensor:
    if isinstance(site, str) and site == "weights":
        return _weight_noise_logits(model, inputs, sigma, kind, distribution, gen)
    fwd = Forward(model, inputs, site)
    return fwd(lambda v, _ids: _perturb(v, sigma, kind, distribution, gen))


def noisy_loss(
    model: nn.Module,
    inputs: Inputs,
    target: Tensor,
    *,
    sigma: float,
    site: Site | Literal["weights"] = "input",
    kind: Kind = "additive",
    distribution: Distribution = "gaussian",
    k: int = 1,
    label_smoothing: float = 0.0,
    loss_fn: LossFn | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The k-sample noisy loss :math:`\\frac1k\\sum_{i=1}^k l(f(x+\\varepsilon_i), y)`.

    Article: https://kexue.fm/archives/7466 (training with noise, multi-sample estimate).

    Args:
        model: returns logits ``(B, C)``.
        inputs: ``x``, ``(x, *more)`` (``model(*inputs)``) or a dict of keyword arguments / ``BatchEncoding``
            (``model(**inputs)``).
        target: class ids ``(B,)`` (or what ``loss_fn`` expects).
        sigma: noise standard deviation, finite and >= 0 (0 = no noise, e.g. label smoothing alone).
        site: ``"input"``, ``"embedding"``, a submodule (hidden activations) or ``"weights"``.
        kind: additive or multiplicative noise (see :func:`perturb`).
        distribution: noise distribution.
        k: number of noise samples averaged (costs k forward passes).
        label_smoothing: label noise; passed to :func:`torch.nn.functional.cross_entropy`.
        loss_fn: ``loss_fn(logits, target) -> scalar``; default cross entropy.
        generator: optional RNG.

    Returns:
        Scalar loss.

    Raises:
        TypeError: with the default loss, a target that is neither integer class indices nor class
            probabilities.
        ValueError: ``sigma`` not finite and >= 0, ``label_smoothing`` outside ``[0, 1)``, ``k`` < 1, the
            target's batch size differs; a perturbed input that is not floating point (token ids: use
            ``site="embedding"``), empty or with NaN/inf; with the default loss, a class index outside ``[0, C)``
            (other than cross entropy's ignore_index -100).

    Example:
        >>> m = nn.Linear(4, 3)
        >>> noisy_loss(m, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), sigma=0.1, k=2).shape
        torch.Size([])
    """
    _check_noise(sigma, kind, distribution)
    k = check_int("k", k, low=1)
    check_real("label_smoothing", label_smoothing, low=0.0, high=1.0, high_inclusive=False)
    if loss_fn is not None and label_smoothing:
        raise ValueError("label_smoothing applies to the default cross entropy; fold it into loss_fn instead")
    if k > 1:
        check_static_graph(model, "noisy_loss with k > 1")
    total: Tensor | None = None
    for i in range(k):
        with extra_pass(model) if i < k - 1 else nullcontext():
            logits = _noisy_logits(model, inputs, site, sigma, kind, distribution, generator)
        check_target(logits, target, classes=loss_fn is None)
        loss = loss_fn(logits, target) if loss_fn else F.cross_entropy(logits, target, label_smoothing=label_smoothing)
        total = loss if total is None else total + loss
    assert total is not None
    return total / k


def consistency_divergence(
    logits: Tensor, clean_logits: Tensor, *, loss: Literal["kl", "mse"] = "kl", reduction: str = "mean"
) -> Tensor:
    """``l(F, f)`` between perturbed and clean outputs: ``KL(softmax(clean) || softmax(perturbed))`` or MSE.

    The clean output is the *first* argument of the KL (the target), as in the article; MSE is
    ``||F - f||^2`` summed over outputs (its Hessian is ``2 I``, i.e. lambda = 2). ``clean_logits`` is used as
    given: detach it at the call site if it must not receive gradient.

    Args:
        logits: perturbed logits ``(B, C)``.
        clean_logits: clean logits ``(B, C)``.
        loss: ``"kl"`` or ``"mse"``.
        reduction: ``"mean"`` over the batch, ``"sum"`` or ``"none"`` (``(B,)``).

    Returns:
        Scalar, or ``(B,)`` for ``reduction="none"``, in the promoted dtype of the inputs; under autocast, as
        ``F.cross_entropy``, half-precision logits are computed in float32 and the result is float32.

    Raises:
        TypeError: an input is not a floating-point tensor.
        ValueError: an input is not ``(B, C)``, is empty or holds NaN/inf; the shapes differ; an unknown option.
    """
    check_float_tensor("logits", logits, ndim=2)
    check_float_tensor("clean_logits", clean_logits, ndim=2)
    if logits.shape != clean_logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and clean_logits {tuple(clean_logits.shape)} differ")
    check_choice("loss", loss, ("kl", "mse"))
    check_reduction(reduction)
    return _divergence(logits, clean_logits, loss, reduction)


def _divergence(logits: Tensor, clean_logits: Tensor, loss: str, reduction: str) -> Tensor:
    """The core of :func:`consistency_divergence` on model outputs (not validated: an inf logit of an fp16
    forward must reach the loss, where a ``GradScaler`` sees it, rather than raise)."""
    dtype = torch.promote_types(logits.dtype, clean_logits.dtype)
    if dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled(logits.device.type):
        # an fp32 op under autocast, as F.cross_entropy and F.kl_div: softmax of 3-digit logits loses the loss
        dtype = torch.float32
    logits, clean_logits = logits.to(dtype), clean_logits.to(dtype)
    if loss == "kl":
        logp = F.log_softmax(clean_logits, dim=-1)
        per = (logp.exp() * (logp - F.log_softmax(logits, dim=-1))).sum(-1)
    else:
        per = (logits - clean_logits).pow(2).sum(-1)
    return per.mean() if reduction == "mean" else per.sum() if reduction == "sum" else per


def noise_consistency_loss(
    model: nn.Module,
    inputs: Inputs,
    *,
    sigma: float,
    site: Site = "input",
    loss: Literal["kl", "mse"] = "kl",
    kind: Kind = "additive",
    distribution: Distribution = "gaussian",
    k: int = 1,
    clean_logits: Tensor | None = None,
    probe_dropout: bool = False,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Label-free consistency term :math:`\\frac1k\\sum_i l(f(x+\\varepsilon_i), \\mathrm{sg}(f(x)))`.

    Article: https://kexue.fm/archives/7466 ("换个目标"): to second order its expectation is
    ``0.5 * sigma^2 * sum_i lambda_i ||grad_x f_i||^2`` (lambda = 2 for MSE, 1/p_i for KL), see
    :func:`kexue.regularizers.smoothness_penalty`. The clean prediction is the target and is **detached**
    (``.detach()`` below), as in VAT; this is VAT with zero power iterations and Gaussian instead of
    fixed-radius noise.

    Args:
        model: returns logits ``(B, C)``.
        inputs: ``x``, ``(x, *more)`` or a dict of keyword arguments (``model(**inputs)``).
        sigma: noise standard deviation (finite, > 0).
        site: where the noise goes.
        loss: ``"kl"`` (``KL(clean || noisy)``) or ``"mse"`` on the logits.
        kind: additive or multiplicative.
        distribution: noise distribution.
        k: noise samples averaged.
        clean_logits: the clean logits if already computed (detached here); else one extra forward.
        probe_dropout: keep dropout on for the clean-target forward (default off, the author's inference-mode
            target).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        generator: optional RNG.

    Returns:
        Scalar (or ``(B,)`` for ``reduction="none"``); under autocast, as ``F.cross_entropy``, the divergence of
        half-precision logits is computed in float32 and the result is float32.

    Raises:
        ValueError: ``sigma`` not finite and > 0, ``k`` < 1, an unknown option; a perturbed input that is not
            floating point (token ids: use ``site="embedding"``), empty or with NaN/inf.

    Example:
        >>> m = nn.Linear(4, 3)
        >>> float(noise_consistency_loss(m, torch.randn(5, 4), sigma=0.1)) >= 0
        True
    """
    _check_noise(sigma, kind, distribution)
    check_positive("sigma", sigma)
    check_choice("loss", loss, ("kl", "mse"))
    check_reduction(reduction)
    k = check_int("k", k, low=1)
    if k > 1:
        check_static_graph(model, "noise_consistency_loss with k > 1")
    if clean_logits is None:
        with torch.no_grad(), extra_pass(model), dropout_disabled(model, not probe_dropout):
            clean_logits = Forward(model, inputs, site)()
    target = clean_logits.detach()  # stop-gradient: the clean prediction is a constant target
    total: Tensor | None = None
    for i in range(k):
        with extra_pass(model) if i < k - 1 else nullcontext():
            logits = _noisy_logits(model, inputs, site, sigma, kind, distribution, generator)
        term = _divergence(logits, target, loss, reduction)
        total = term if total is None else total + term
    assert total is not None
    return total / k


class NoisyLoss(nn.Module):
    """Module form of :func:`noisy_loss`: ``NoisyLoss(sigma=0.1)(model, x, y)``.

    Example:
        >>> crit = NoisyLoss(sigma=0.1, k=2)
        >>> crit(nn.Linear(4, 3), torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        sigma: float,
        site: Site | Literal["weights"] = "input",
        kind: Kind = "additive",
        distribution: Distribution = "gaussian",
        k: int = 1,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        _check_noise(sigma, kind, distribution)
        check_int("k", k, low=1)
        check_real("label_smoothing", label_smoothing, low=0.0, high=1.0, high_inclusive=False)
        self.sigma, self.site, self.kind, self.distribution = sigma, site, kind, distribution
        self.k, self.label_smoothing = k, label_smoothing

    def forward(self, model: nn.Module, inputs: Inputs, target: Tensor) -> Tensor:
        return noisy_loss(
            model,
            inputs,
            target,
            sigma=self.sigma,
            site=self.site,
            kind=self.kind,
            distribution=self.distribution,
            k=self.k,
            label_smoothing=self.label_smoothing,
        )

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, site={self.site!r}, kind={self.kind}, k={self.k}"


class NoiseConsistencyLoss(nn.Module):
    """Module form of :func:`noise_consistency_loss` (``reduction`` as there, ``"mean"`` by default).

    Example:
        >>> float(NoiseConsistencyLoss(sigma=0.1)(nn.Linear(4, 3), torch.randn(5, 4))) >= 0
        True
    """

    def __init__(
        self,
        *,
        sigma: float,
        site: Site = "input",
        loss: Literal["kl", "mse"] = "kl",
        k: int = 1,
        probe_dropout: bool = False,
        reduction: Literal["mean", "sum", "none"] = "mean",
    ) -> None:
        super().__init__()
        check_positive("sigma", sigma)
        check_choice("loss", loss, ("kl", "mse"))
        check_int("k", k, low=1)
        check_reduction(reduction)
        self.sigma, self.site, self.loss, self.k, self.probe_dropout = sigma, site, loss, k, probe_dropout
        self.reduction = reduction

    def forward(self, model: nn.Module, inputs: Inputs, clean_logits: Tensor | None = None) -> Tensor:
        return noise_consistency_loss(
            model,
            inputs,
            sigma=self.sigma,
            site=self.site,
            loss=self.loss,
            k=self.k,
            clean_logits=clean_logits,
            probe_dropout=self.probe_dropout,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, site={self.site!r}, loss={self.loss}, k={self.k}, reduction={self.reduction!r}"
