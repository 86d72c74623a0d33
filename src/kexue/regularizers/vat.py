"""Virtual adversarial training (VAT): noise whose direction is found by power iteration.

Article: https://kexue.fm/archives/7466 ("虚拟对抗训练"); paper: Miyato et al. 2017, arXiv 1704.03976;
official code ``takerum/vat_tf`` (``vat.py``). The smoothing loss :math:`l(f(x+\\varepsilon), f_{ng}(x))` has
zero value and zero gradient at :math:`\\varepsilon=0`, so to second order it is
:math:`\\tfrac12\\varepsilon^\\top\\mathcal H\\varepsilon` with :math:`\\mathcal H=J^\\top\\Lambda J`
(Gauss-Newton). The worst direction is the top
eigenvector of :math:`\\mathcal H`, found by power iteration with the finite-difference product
:math:`\\mathcal Hu\\approx\\nabla_u\\,l(f(x+\\xi u), f_{ng}(x))/\\xi`::

    u ~ N(0, I)
    repeat r times: u = normalize(u); u = grad_u KL(p_clean || p(x + xi u))
    loss = KL(p_clean || p(x + eps * normalize(u)))

``n_power=0`` is the Gaussian-noise control (a random direction of radius eps).

Design points (each a documented choice):

* The clean prediction is **detached** from both x and the parameters (``.detach()`` on the target), as
  ``tf.stop_gradient`` in the official code; the direction is detached between iterations and before the final
  pass.
* No VAT forward pass (clean target, probes, final perturbed pass) changes BatchNorm running statistics
  (``update_batch_stats=False`` in the official code); batch statistics are still used in training mode.
* ``probe_dropout=False`` (default) runs the clean-target and probe passes with dropout off and the final pass
  in the model's own mode, as the author's Keras implementation does (its ``K.function`` probes run in
  inference phase); ``True`` keeps dropout on in the clean-target and probe passes too.
* **Same mask for the clean and the probe passes.** The finite difference
  :math:`\\nabla_u l(f(x+\\xi u), f(x))` is :math:`\\xi\\mathcal Hu` only if both terms are the same function;
  with independently drawn dropout masks it is dominated by the difference of the masks. The probe passes
  therefore replay the random number generators of the clean-target pass (CPU and CUDA,
  :class:`~kexue.regularizers._site.RngReplay`), which also covers dropout called functionally. The final
  pass draws a *fresh* mask from the stream that continues after the replayed passes (the model's own noise
  on top of the adversarial one, as the author's training-phase VAT step and the official code's stochastic
  final forward). A caller's ``clean_logits`` are the target of the final KL; the power iteration uses them
  only when the probes compute the same function (no active dropout module, no autocast), and otherwise runs
  its own clean pass.
* **Probe radius.** ``xi`` is the paper's absolute radius, used as given when it is representable. The radius
  actually probed is ``max(xi, sqrt(eps_dtype) * ||v||)``, per sample for ``scope="per_sample"`` (``||v||``
  over the sample's non-batch dims) and over the whole tensor for ``"global"``: below it, rounding ``v + xi u``
  to the dtype (relative error ``eps_dtype``) dominates the difference, and ``sqrt(eps_dtype)`` balances that
  rounding against the O(xi) curvature error (the standard forward-difference step). In float32 this is
  ``3.5e-4 ||v||``: the official ``xi = 1e-6`` on an MNIST image (``||x|| ~ 9``) becomes ``3.2e-3``; in
  float64 (``1.5e-8 ||v||``) it is kept for ``||v|| < 67``; the author's ``xi = 10`` on an embedding batch is
  kept.
* **Autocast.** The clean target and the probes of the power iteration run with autocast disabled (in the
  model's own dtype, float32 for a float32 model under bf16/fp16 autocast) and the probe KL in at least
  float32: a bf16 forward rounds the logits to 3 significant digits, far coarser than any useful probe. The
  final pass runs under the caller's autocast.
* ``scope="per_sample"`` normalises each example's direction (paper; defaults ``xi=1e-6``, ``n_power=1``, and
  ``eps`` per data set: 8.0 is the official code's flag default). ``scope="global"`` is the author's variant:
  one norm for the whole perturbation; on an embedding site the direction lives in the embedding matrix (equal
  tokens share it, as when the matrix itself is perturbed), with ``xi=10``, ``eps=1`` (:meth:`VAT.author`).
  The two scopes are different regularisers with different units of ``eps``/``xi``; never mix their defaults.
* Under ``DistributedDataParallel`` every pass but the final one runs in ``no_sync()``.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd

from .._validate import check_choice, check_float_tensor, check_int, check_reduction
from ._site import (
    Forward,
    Inputs,
    RngReplay,
    Site,
    check_positive,
    check_static_graph,
    dropout_disabled,
    extra_pass,
    frozen_batchnorm_stats,
    global_norm,
    normalize,
    per_sample_norm,
)
from .noise import _divergence

__all__ = ["VAT", "conditional_entropy", "probe_radius", "vat_direction", "vat_loss"]

Scope = Literal["per_sample", "global"]


def _validate(xi: float, n_power: int, scope: str) -> None:
    check_positive("xi", xi)
    check_int("n_power", n_power, low=0)
    check_choice("scope", scope, ("per_sample", "global"))


def probe_radius(v: Tensor, xi: float, scope: Scope = "per_sample") -> Tensor:
    """The finite-difference radius VAT probes at: ``max(xi, sqrt(eps_dtype) * ||v||)``.

    ``||v||`` is per sample (shape ``(B, 1, ..., 1)``, broadcastable to ``v``) for ``scope="per_sample"`` and
    over the whole tensor (0-d) for ``"global"``. Below this radius rounding ``v + xi * u`` to ``v``'s dtype
    dominates the difference quotient (see the module docstring).

    Args:
        v: the clean value at the site, ``(B, ...)``.
        xi: the requested (absolute) radius, > 0.
        scope: ``"per_sample"`` or ``"global"``.

    Returns:
        The radius, in ``v``'s dtype. ``||v||`` is taken after dividing by the largest ``|entry|``, so it is
        exact for any finite scale (the squares of a float32 ``v`` of size 1e30 would overflow).

    Raises:
        TypeError: ``v`` is not a floating-point tensor; ``xi`` not a real number.
        ValueError: ``v`` is 0-d, empty or holds NaN/inf; ``xi`` not finite and > 0; an unknown ``scope``.

    Example:
        >>> probe_radius(torch.ones(2, 100), 1e-6).flatten()  # sqrt(1.19e-7) * 10
        tensor([0.0035, 0.0035])
        >>> probe_radius(torch.ones(2, 100, dtype=torch.float64), 1e-6).flatten()  # representable: kept
        tensor([1.0000e-06, 1.0000e-06], dtype=torch.float64)
    """
    check_float_tensor("v", v, min_ndim=1)
    check_positive("xi", xi)
    check_choice("scope", scope, ("per_sample", "global"))
    return _probe_radius(v, xi, scope)


def _probe_radius(v: Tensor, xi: float, scope: str) -> Tensor:
    """The core of :func:`probe_radius` (arguments validated by the caller)."""
    tau = torch.finfo(v.dtype).eps ** 0.5
    v = v.detach()
    # scale-safe norms: with ||v||^2 overflowing, the radius would be inf and every probe NaN
    r = per_sample_norm(v).reshape(-1, *([1] * (v.dim() - 1))) if scope == "per_sample" else global_norm(v)
    return (tau * r).clamp_min(xi)


def _random_direction(v: Tensor, scope: Scope, fwd: Forward, generator: torch.Generator | None) -> Tensor:
    r = torch.randn(v.shape, dtype=v.dtype, device=v.device, generator=generator)
    return normalize(r, scope, ids=fwd.ids, num_embeddings=fwd.num_embeddings)


def _at_least_float32(t: Tensor) -> Tensor:
    return t if t.dtype == torch.float64 else t.float()


def _has_active_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, _DropoutNd) and m.training and m.p > 0 for m in model.modules())


def _autocast_off(fwd: Forward) -> tuple[bool, Any]:
    """``(autocast was on, a context that disables it)`` for the device type of the inputs."""
    dev = fwd.tensors()[0].device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev):
        return True, torch.autocast(device_type=dev, enabled=False)
    return False, nullcontext()


def _power_iteration(
    fwd: Forward,
    *,
    xi: float,
    n_power: int,
    scope: Scope,
    clean_logits: Tensor | None,
    probe_dropout: bool,
    generator: torch.Generator | None,
) -> tuple[Tensor | None, Tensor | None]:
    """``(direction or None for n_power == 0, target computed here or None)``; see the module docstring."""
    model = fwd.model
    autocast_on, no_autocast = _autocast_off(fwd)
    reuse = clean_logits is not None and (n_power == 0 or not (autocast_on or _has_active_dropout(model)))
    if n_power == 0:
        if clean_logits is not None:
            return None, None
        with torch.no_grad(), extra_pass(model), dropout_disabled(model, not probe_dropout):
            return None, fwd()
    gen, seed = generator, 0
    if gen is None:
        # A private generator seeded from the global stream, so drawing the random start does not shift the
        # generators between the replayed passes (and the draw stays reproducible under torch.manual_seed).
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    rng = RngReplay.for_pass(model, fwd)
    with no_autocast, dropout_disabled(model, not probe_dropout):
        if reuse:
            assert clean_logits is not None
            probe_target = clean_logits.detach()
        else:
            with torch.no_grad(), extra_pass(model):
                probe_target = fwd()
        probe_target = _at_least_float32(probe_target)
        d: Tensor | None = None
        for _ in range(n_power):
            holder: list[Tensor] = []

            def probe(v: Tensor, _ids: Tensor | None, d: Tensor | None = d, holder: list[Tensor] = holder) -> Tensor:
                nonlocal gen
                v = v.detach()
                if d is None:
                    if gen is None:
                        gen = torch.Generator(device=v.device).manual_seed(seed)
                    base = _random_direction(v, scope, fwd, gen)
                else:
                    base = d.to(v.dtype)
                leaf = base.clone().requires_grad_(True)
                holder.append(leaf)
                return v + _probe_radius(v, xi, scope) * leaf  # probe at x + xi * u; only u receives gradient

            rng.restore()  # the clean-target pass's dropout masks (and any other draw of the model)
            with extra_pass(model):
                logits = fwd(probe)
            # KL summed over the batch: the scale is irrelevant after normalisation and the sum avoids tiny
            # values.
            kl = _divergence(_at_least_float32(logits), probe_target, "kl", "sum")
            (grad,) = torch.autograd.grad(kl, holder[0])
            d = normalize(grad.detach(), scope, ids=fwd.ids, num_embeddings=fwd.num_embeddings)  # ~ H u / ||H u||
    return d, (None if reuse else probe_target)


def vat_direction(
    model: nn.Module,
    inputs: Inputs,
    *,
    site: Site = "input",
    xi: float = 1e-6,
    n_power: int = 1,
    scope: Scope = "per_sample",
    clean_logits: Tensor | None = None,
    probe_dropout: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The unit adversarial direction VAT uses (``n_power`` finite-difference power iterations).

    Article: https://kexue.fm/archives/7466 (power iteration on the Gauss-Newton matrix ``H = J^T diag(1/p)
    J``). The probe radius is ``max(xi, sqrt(eps_dtype) ||v||)`` (:func:`probe_radius`); under autocast the
    iteration runs in the model's own dtype; the probe passes replay the clean pass's dropout masks (module
    docstring).

    Args:
        model: returns logits ``(B, C)``; may be wrapped in DDP.
        inputs: ``x``, ``(x, *more)`` or a dict of keyword arguments / ``BatchEncoding`` (``model(**inputs)``).
        site: where the perturbation acts.
        xi: finite-difference probe radius (finite, > 0), raised to the representable minimum.
        n_power: power iterations (>= 0; 0 returns a random direction).
        scope: ``"per_sample"`` or ``"global"`` normalisation.
        clean_logits: clean logits if already computed (detached here); used for the power iteration only when
            the probes compute the same function (no active dropout, no autocast).
        probe_dropout: keep dropout on in the clean-target and probe passes (the same masks in all of them).
        generator: RNG for the initial direction (default: a generator seeded from the global stream).

    Returns:
        Detached unit direction(s) of the site value's shape and dtype (zero where the KL has no curvature, e.g.
        a saturated network).

    Raises:
        ValueError: ``xi`` not finite and > 0, ``n_power`` < 0, output not logits ``(B, C)``; a perturbed input
            that is not floating point (token ids: use ``site="embedding"``), empty or with NaN/inf.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> d = vat_direction(m, torch.randn(5, 4), xi=1e-3)
        >>> torch.allclose(d.norm(dim=1), torch.ones(5))
        True
    """
    _validate(xi, n_power, scope)
    check_static_graph(model, "vat_direction")
    fwd = Forward(model, inputs, site)
    with frozen_batchnorm_stats(model):
        d, _ = _power_iteration(
            fwd,
            xi=xi,
            n_power=n_power,
            scope=scope,
            clean_logits=clean_logits,
            probe_dropout=probe_dropout,
            generator=generator,
        )
        if d is None:  # n_power == 0: a random direction of the site value's shape
            if fwd.value is None:
                with torch.no_grad(), extra_pass(model), dropout_disabled(model, not probe_dropout):
                    fwd()
            assert fwd.value is not None
            d = _random_direction(fwd.value, scope, fwd, generator)
    return d


def vat_loss(
    model: nn.Module,
    inputs: Inputs,
    *,
    eps: float = 8.0,
    xi: float = 1e-6,
    n_power: int = 1,
    site: Site = "input",
    scope: Scope = "per_sample",
    clean_logits: Tensor | None = None,
    probe_dropout: bool = False,
    reduction: Literal["mean", "sum", "none"] = "mean",
    generator: torch.Generator | None = None,
) -> Tensor:
    """VAT loss ``KL(p_clean.detach() || p(x + eps * d))`` with ``d`` from :func:`vat_direction`.

    Article: https://kexue.fm/archives/7466; Miyato et al. 2017 (official defaults ``xi=1e-6``, ``n_power=1``;
    ``eps`` is set per data set, 8.0 is the official code's default flag). Labels are not used, so the loss
    runs on unlabelled data. The final pass draws a fresh dropout mask and runs under the caller's autocast.

    Args:
        model: returns logits ``(B, C)``; may be wrapped in DDP.
        inputs: ``x``, ``(x, *more)`` or a dict of keyword arguments / ``BatchEncoding`` (``model(**inputs)``).
        eps: final perturbation radius (finite, > 0), per sample or global according to ``scope``.
        xi: probe radius (finite, > 0), raised to ``sqrt(eps_dtype) ||v||`` when smaller (:func:`probe_radius`).
        n_power: power iterations (>= 0; 0 = random-direction noise control).
        site: ``"input"``, ``"embedding"`` (the embedding output, hooked) or a hidden module.
        scope: ``"per_sample"`` (paper) or ``"global"`` (the author's whole-embedding-matrix normalisation).
        clean_logits: clean logits if the caller already has them (detached here): the target of the final KL,
            saving one forward when the probes compute the same function (see the module docstring).
        probe_dropout: dropout on during the clean and probe passes (default off); they share one mask.
        reduction: over the batch.
        generator: RNG for the initial direction.

    Returns:
        Scalar, or ``(B,)`` for ``reduction="none"``; under autocast, as ``F.cross_entropy``, the final KL of
        half-precision logits is computed in float32 and the result is float32.

    Raises:
        ValueError: ``eps``/``xi`` not finite and > 0, ``n_power`` < 0, output not logits ``(B, C)``, embedding
            not found; a perturbed input that is not floating point (token ids: use ``site="embedding"``), empty
            or with NaN/inf.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> vat_loss(m, torch.randn(5, 4), eps=1.0, xi=1e-3).backward()
    """
    check_positive("eps", eps)
    _validate(xi, n_power, scope)
    check_reduction(reduction)
    check_static_graph(model, "vat_loss")
    fwd = Forward(model, inputs, site)
    with frozen_batchnorm_stats(model):
        d, own_target = _power_iteration(
            fwd,
            xi=xi,
            n_power=n_power,
            scope=scope,
            clean_logits=clean_logits,
            probe_dropout=probe_dropout,
            generator=generator,
        )
        target = (clean_logits if clean_logits is not None else own_target).detach()  # type: ignore[union-attr]
        # stop-gradient w.r.t. x and theta (official tf.stop_gradient)

        def final(v: Tensor, _ids: Tensor | None) -> Tensor:
            u = d if d is not None else _random_direction(v.detach(), scope, fwd, generator)
            return v + eps * u.detach().to(v.dtype)

        logits = fwd(final)
    # the target keeps its dtype: a float32 target and bf16 logits (autocast) are compared in float32
    return _divergence(logits, target, "kl", reduction)


def conditional_entropy(logits: Tensor, *, reduction: Literal["mean", "sum", "none"] = "mean") -> Tensor:
    """Entropy of the predicted distribution, ``-sum_c p_c log p_c``; the "EntMin" term of VAT+EntMin.

    Paper: Miyato et al. 2017, section 4 (Grandvalet & Bengio 2005 entropy minimisation).

    Args:
        logits: ``(B, C)``.
        reduction: over the batch.

    Returns:
        Scalar, or ``(B,)`` for ``reduction="none"``.

    Raises:
        TypeError: ``logits`` is not a floating-point tensor.
        ValueError: ``logits`` is not ``(B, C)``, is empty or holds NaN/inf; an unknown reduction.

    Example:
        >>> h = conditional_entropy(torch.zeros(2, 4))
        >>> bool(torch.isclose(h, torch.log(torch.tensor(4.0))))
        True
    """
    check_float_tensor("logits", logits, ndim=2)
    check_reduction(reduction)
    logp = F.log_softmax(logits, dim=-1)
    per = -(logp.exp() * logp).sum(-1)
    return per.mean() if reduction == "mean" else per.sum() if reduction == "sum" else per


class VAT(nn.Module):
    """Module form of :func:`vat_loss`: ``VAT(eps=2.0)(model, x_unlabelled)`` (``reduction`` as there).

    Use :meth:`paper` for the paper's per-sample defaults and :meth:`author` for the author's embedding-matrix
    variant (``site="embedding"``, ``scope="global"``, ``xi=10``, ``eps=1``).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> VAT(eps=1.0, xi=1e-3)(m, torch.randn(5, 4)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        eps: float = 8.0,
        xi: float = 1e-6,
        n_power: int = 1,
        site: Site = "input",
        scope: Scope = "per_sample",
        probe_dropout: bool = False,
        reduction: Literal["mean", "sum", "none"] = "mean",
    ) -> None:
        super().__init__()
        check_positive("eps", eps)
        _validate(xi, n_power, scope)
        check_reduction(reduction)
        self.eps, self.xi, self.n_power, self.site, self.scope = eps, xi, n_power, site, scope
        self.probe_dropout, self.reduction = probe_dropout, reduction

    @classmethod
    def paper(cls, *, eps: float = 8.0, site: Site = "input") -> VAT:
        """Miyato et al.'s settings: per-sample normalisation, ``xi=1e-6``, one power iteration."""
        return cls(eps=eps, xi=1e-6, n_power=1, site=site, scope="per_sample")

    @classmethod
    def author(cls, *, eps: float = 1.0, xi: float = 10.0, site: Site = "embedding") -> VAT:
        """The author's Keras variant: whole-embedding-matrix normalisation, ``xi=10``, ``eps=1``, one
        iteration."""
        return cls(eps=eps, xi=xi, n_power=1, site=site, scope="global")

    def forward(self, model: nn.Module, inputs: Inputs, clean_logits: Tensor | None = None) -> Tensor:
        return vat_loss(
            model,
            inputs,
            eps=self.eps,
            xi=self.xi,
            n_power=self.n_power,
            site=self.site,
            scope=self.scope,
            clean_logits=clean_logits,
            probe_dropout=self.probe_dropout,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"eps={self.eps}, xi={self.xi}, n_power={self.n_power}, site={self.site!r}, scope={self.scope}, "
            f"reduction={self.reduction!r}"
        )
