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
in
  the model's own mode, as the author's Keras implementation does (its ``K.function`` probes run in inference
  phase); ``True`` keeps dropout on throughout.
* ``scope="per_sample"`` normalises each example's direction (paper; defaults ``xi=1e-6``, ``n_power=1``, and
  ``eps`` per data set: 8.0 is the official code's flag default). ``scope="global"`` is the author's variant:
  one norm for the whole perturbation; on an embedding site the direction lives in the embedding matrix (equal
  tokens share it, as when the matrix itself is perturbed), with ``xi=10``, ``eps=1`` (:meth:`VAT.author`).
  The two scopes are different regularisers with different units of ``eps``/``xi``; never mix their defaults.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._site import (
    Forward,
    Inputs,
    Site,
    check_choice,
    check_positive,
    dropout_disabled,
    frozen_batchnorm_stats,
    normalize,
)
from .noise import consistency_divergence

__all__ = ["VAT", "conditional_entropy", "vat_direction", "vat_loss"]

Scope = Literal["per_sample", "global"]


def _validate(xi: float, n_power: int, scope: str) -> None:
    check_positive("xi", xi)
    if not isinstance(n_power, int) or isinstance(n_power, bool) or n_power < 0:
        raise ValueError(f"n_power must be an int >= 0, got {n_power!r}")
    check_choice("scope", scope, ("per_sample", "global"))


def _random_direction(v: Tensor, scope: Scope, fwd: Forward, generator: torch.Generator | None) -> Tensor:
    r = torch.randn(v.shape, dtype=v.dtype, device=v.device, generator=generator)
    return normalize(r, scope, ids=fwd.ids, num_embeddings=fwd.num_embeddings)


def _direction(
    fwd: Forward,
    target: Tensor,
    *,
    xi: float,
    n_power: int,
    scope: Scope,
    generator: torch.Generator | None,
) -> Tensor | None:
    """Power iteration; ``None`` for ``n_power == 0`` (the random direction is drawn in the final pass)."""
    d: Tensor | None = None
    for _ in range(n_power):
        holder: list[Tensor] = []

        def probe(v: Tensor, _ids: Tensor | None, d: Tensor | None = d, holder: list[Tensor] = holder) -> Tensor:
            base = d if d is not None else _random_direction(v.detach(), scope, fwd, generator)
            leaf = base.clone().requires_grad_(True)
            holder.append(leaf)
            return v.detach() + xi * leaf  # probe at x + xi * u; only u receives gradient

        logits = fwd(probe)
        # KL summed over the batch: the scale is irrelevant after normalisation and the sum avoids tiny
        # values.
        kl = consistency_divergence(logits, target, loss="kl", reduction="sum")
        (grad,) = torch.autograd.grad(kl, holder[0])
        d = normalize(grad.detach(), scope, ids=fwd.ids, num_embeddings=fwd.num_embeddings)  # ~ H u / ||H u||
    return d


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
    J``).

    Args:
        model: returns logits ``(B, C)``.
        inputs: ``x`` or ``(x, *more)``.
        site: where the perturbation acts.
        xi: finite-difference probe radius (> 0).
        n_power: power iterations (>= 0; 0 returns a random direction).
        scope: ``"per_sample"`` or ``"global"`` normalisation.
        clean_logits: clean logits if already computed (detached here).
        probe_dropout: keep dropout on in the probe passes.
        generator: RNG for the initial direction.

    Returns:
        Detached unit direction(s) of the site value's shape.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> d = vat_direction(m, torch.randn(5, 4), xi=1e-3)
        >>> torch.allclose(d.norm(dim=1), torch.ones(5))
        True
    """
    _validate(xi, n_power, scope)
    fwd = Forward(model, inputs, site)
    with frozen_batchnorm_stats(model), dropout_disabled(model, not probe_dropout):
        if clean_logits is None:
            with torch.no_grad():
                clean_logits = fwd()
        target = clean_logits.detach()
        d = _direction(fwd, target, xi=xi, n_power=n_power, scope=scope, generator=generator)
        if d is None:
            with torch.no_grad():
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
    runs on unlabelled data.

    Args:
        model: returns logits ``(B, C)``.
        inputs: ``x`` or ``(x, *more)``.
        eps: final perturbation radius (> 0), per sample or global according to ``scope``.
        xi: probe radius (> 0).
        n_power: power iterations (>= 0; 0 = random-direction noise control).
        site: ``"input"``, ``"embedding"`` (the embedding output, hooked) or a hidden module.
        scope: ``"per_sample"`` (paper) or ``"global"`` (the author's whole-embedding-matrix normalisation).
        clean_logits: clean logits if the caller already has them (detached here), saving one forward.
        probe_dropout: dropout on during the clean and probe passes (default off).
        reduction: over the batch.
        generator: RNG for the initial direction.

    Returns:
        Scalar, or ``(B,)`` for ``reduction="none"``.

    Raises:
        ValueError: ``eps``/``xi`` <= 0, ``n_power`` < 0, output not logits ``(B, C)``, embedding not found.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> vat_loss(m, torch.randn(5, 4), eps=1.0, xi=1e-3).backward()
    """
    check_positive("eps", eps)
    _validate(xi, n_power, scope)
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    fwd = Forward(model, inputs, site)
    with frozen_batchnorm_stats(model):
        with dropout_disabled(model, not probe_dropout):
            if clean_logits is None:
                with torch.no_grad():
                    clean_logits = fwd()
            target = clean_logits.detach()  # stop-gradient w.r.t. x and theta (official tf.stop_gradient)
            d = _direction(fwd, target, xi=xi, n_power=n_power, scope=scope, generator=generator)

        def final(v: Tensor, _ids: Tensor | None) -> Tensor:
            u = d if d is not None else _random_direction(v.detach(), scope, fwd, generator)
            return v + eps * u.detach()

        logits = fwd(final)
    return consistency_divergence(logits, target, loss="kl", reduction=reduction)


def conditional_entropy(logits: Tensor, *, reduction: Literal["mean", "sum", "none"] = "mean") -> Tensor:
    """Entropy of the predicted distribution, ``-sum_c p_c log p_c``; the "EntMin" term of VAT+EntMin.

    Paper: Miyato et al. 2017, section 4 (Grandvalet & Bengio 2005 entropy minimisation).

    Args:
        logits: ``(B, C)``.
        reduction: over the batch.

    Example:
        >>> h = conditional_entropy(torch.zeros(2, 4))
        >>> bool(torch.isclose(h, torch.log(torch.tensor(4.0))))
        True
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, C), got {tuple(logits.shape)}")
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    logp = F.log_softmax(logits, dim=-1)
    per = -(logp.exp() * logp).sum(-1)
    return per.mean() if reduction == "mean" else per.sum() if reduction == "sum" else per


class VAT(nn.Module):
    """Module form of :func:`vat_loss`: ``VAT(eps=2.0)(model, x_unlabelled)``.

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
    ) -> None:
        super().__init__()
        check_positive("eps", eps)
        _validate(xi, n_power, scope)
        self.eps, self.xi, self.n_power, self.site, self.scope = eps, xi, n_power, site, scope
        self.probe_dropout = probe_dropout

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
        )

    def extra_repr(self) -> str:
        return f"eps={self.eps}, xi={self.xi}, n_power={self.n_power}, site={self.site!r}, scope={self.scope}"
