"""Collapse diagnostics for non-contrastive self-supervised learning (SimSiam, BYOL).

A collapsed representation maps every input to (nearly) the same vector. Two cheap monitors:

* :func:`normalized_std` -- the per-channel standard deviation of the l2-normalised output, averaged over
  channels (Chen & He 2021, https://arxiv.org/abs/2011.10566, Sec. 4.1 and Fig. 2, middle). For embeddings
  ``z ~ N(0, I_d)`` every coordinate of ``z / ||z||`` has variance exactly ``1/d``, so a healthy value is
  about ``1/sqrt(d)``; a collapsed one is 0.
* :func:`effective_rank` -- ``exp`` of the entropy of the normalised eigenvalue spectrum of the embedding
  covariance (Roy & Vetterli 2007; RankMe, Garrido et al. 2023, https://arxiv.org/abs/2210.02885). It is ``d``
  for an isotropic cloud, 1 for a cloud on a line, and 0 (by convention) for a constant.

Both are plain tensor functions that never require gradients; call them under ``torch.no_grad()`` or on
detached tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kexue._validate import check_float_tensor, check_real, is_compiling

__all__ = ["effective_rank", "normalized_std"]


def _check_z(z: Tensor, *, finite: bool = True) -> Tensor:
    check_float_tensor("z", z, ndim=2, finite=finite)  # also rejects empty (and non-finite) embeddings
    if z.shape[0] < 2:
        raise ValueError(f"z needs at least 2 rows to estimate a spread, got shape {tuple(z.shape)}")
    return z


def _unit_rows(z: Tensor, eps: float) -> Tensor:
    """Rows of ``z`` divided by their l2 norm, for any finite scale (no overflow/underflow of the squares).

    ``F.normalize`` alone overflows for rows of norm > ~1e19 in float32 (the result is 0: reported as collapse)
    and floors rows of norm < ``eps``; dividing by each row's largest ``|entry|`` first puts every non-zero row's
    norm in ``[1, sqrt(D)]``, so ``eps`` only keeps an all-zero row at 0.
    """
    scale = z.abs().amax(dim=1, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return F.normalize(z / scale, dim=1, eps=eps)


def normalized_std(z: Tensor, *, eps: float = 1e-12) -> Tensor:
    """Mean over channels of the batch standard deviation of ``z / ||z||`` (SimSiam's collapse monitor).

    Chen & He 2021 (https://arxiv.org/abs/2011.10566), Sec. 4.1: "we compute the std of the l2-normalized
    output, z/||z||_2 ... If the output collapses to a constant vector, their std over all samples should be
    zero for each channel." Compare the result with ``1 / sqrt(D)``, its value for isotropic Gaussian
    embeddings. The normalisation is scale-safe: the result is the same for ``z`` and ``1e30 * z``.

    Args:
        z: ``(B, D)`` finite embeddings, ``B >= 2``.
        eps: in ``(0, 1]``: floor of each row's norm after it is divided by its largest ``|entry|`` (a norm of
            at least 1), so it only keeps an all-zero row at 0.

    Returns:
        a 0-dim tensor (same dtype as ``z``); the std uses Bessel's correction, so for ``z ~ N(0, I)`` its
        square is an unbiased estimate of ``1 / D``.

    Raises:
        TypeError: ``z`` is not a floating-point tensor; ``eps`` is not a real number.
        ValueError: ``z`` is not ``(B, D)`` with ``B >= 2`` and ``D >= 1``, or holds NaN/inf; ``eps`` outside
            ``(0, 1]``.

    Example:
        >>> z = torch.randn(4096, 64, generator=torch.Generator().manual_seed(0))
        >>> round(float(normalized_std(z)) * 8, 1)  # 1/sqrt(64) = 0.125
        1.0
    """
    check_real("eps", eps, low=0, low_inclusive=False, high=1)
    _check_z(z, finite=False)
    u = _unit_rows(z, eps)  # (B, D)
    out = u.std(dim=0).mean()
    # a NaN/inf entry makes the result NaN (z / max|z| is NaN there): scan z only then, to name the problem
    if not is_compiling() and not bool(torch.isfinite(out)):
        _check_z(z)
    return out


def effective_rank(z: Tensor, *, eps: float = 1e-12) -> Tensor:
    """Effective rank ``exp(H(p))``, ``p_i = lambda_i / sum(lambda)``, of the covariance of ``z``.

    Roy & Vetterli 2007, "The effective rank: a measure of effective dimensionality"; used as a collapse
    monitor by RankMe (https://arxiv.org/abs/2210.02885). ``lambda_i`` are the eigenvalues of the (biased)
    covariance of the rows of ``z``, computed as squared singular values of the centred matrix. The result does
    not depend on the scale of ``z``: ``z`` is divided by its largest ``|entry|`` first, so the squared
    singular values cannot overflow (float32 ``z`` of size 1e20) or underflow (1e-20).

    Args:
        z: ``(B, D)`` finite embeddings, ``B >= 2``.
        eps: relative collapse threshold, ``>= 0``: a total variance of at most ``eps`` times the mean squared
            row norm (a constant embedding, up to rounding) gives 0.

    Returns:
        a 0-dim tensor in ``[0, min(B - 1, D)]`` (same dtype as ``z``; half precision is computed in float32).

    Raises:
        TypeError: ``z`` is not a floating-point tensor; ``eps`` is not a real number.
        ValueError: ``z`` is not ``(B, D)`` with ``B >= 2`` and ``D >= 1``, or holds NaN/inf; ``eps`` negative.

    Example:
        >>> z = torch.randn(4096, 8, generator=torch.Generator().manual_seed(0))
        >>> round(float(effective_rank(z)))
        8
    """
    check_real("eps", eps, low=0)
    _check_z(z)
    x = z.detach()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # no half-precision SVD; the monitor needs no gradient
    x = x / x.abs().amax().clamp_min(torch.finfo(x.dtype).tiny)  # scale-free: entries in [-1, 1]
    power = x.square().sum(dim=1).mean()  # mean squared row norm: the scale the spread is compared with
    # centre around the first row before the mean: a constant embedding then centres to exactly 0
    x = x - x[:1]
    zc = x - x.mean(dim=0, keepdim=True)
    lam = torch.linalg.svdvals(zc) ** 2 / z.shape[0]  # eigenvalues of the covariance (of the rescaled z)
    total = lam.sum()
    p = lam / total.clamp_min(torch.finfo(x.dtype).tiny)
    h = -(p * torch.log(p.clamp_min(torch.finfo(x.dtype).tiny))).sum()  # 0 log 0 = 0
    rank = torch.where(total <= eps * power, torch.zeros_like(h), torch.exp(h))
    return rank.to(z.dtype)
