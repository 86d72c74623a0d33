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

__all__ = ["effective_rank", "normalized_std"]


def _check_2d(z: Tensor, name: str = "z") -> None:
    if not isinstance(z, Tensor) or z.dim() != 2 or not z.is_floating_point():
        raise ValueError(
            f"{name} must be a float tensor of shape (B, D), got "
            f"{type(z).__name__}{tuple(z.shape) if isinstance(z, Tensor) else ''}"
        )
    if z.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 rows to estimate a spread, got shape {tuple(z.shape)}")


def normalized_std(z: Tensor, *, eps: float = 1e-12) -> Tensor:
    """Mean over channels of the batch standard deviation of ``z / ||z||`` (SimSiam's collapse monitor).

    Chen & He 2021 (https://arxiv.org/abs/2011.10566), Sec. 4.1: "we compute the std of the l2-normalized
    output, z/||z||_2 ... If the output collapses to a constant vector, their std over all samples should be
    zero for each channel." Compare the result with ``1 / sqrt(D)``, its value for isotropic Gaussian
    embeddings.

    Args:
        z: ``(B, D)`` embeddings, ``B >= 2``.
        eps: floor of the norm in the normalisation.

    Returns:
        a 0-dim tensor (same dtype as ``z``); the std uses Bessel's correction, so for ``z ~ N(0, I)`` its
        square is an unbiased estimate of ``1 / D``.

    Raises:
        ValueError: ``z`` is not a float ``(B, D)`` tensor with ``B >= 2``.

    Example:
        >>> z = torch.randn(4096, 64, generator=torch.Generator().manual_seed(0))
        >>> round(float(normalized_std(z)) * 8, 1)  # 1/sqrt(64) = 0.125
        1.0
    """
    _check_2d(z)
    u = F.normalize(z, dim=1, eps=eps)  # (B, D)
    return u.std(dim=0).mean()


def effective_rank(z: Tensor, *, eps: float = 1e-12) -> Tensor:
    """Effective rank ``exp(H(p))``, ``p_i = lambda_i / sum(lambda)``, of the covariance of ``z``.

    Roy & Vetterli 2007, "The effective rank: a measure of effective dimensionality"; used as a collapse
    monitor by RankMe (https://arxiv.org/abs/2210.02885). ``lambda_i`` are the eigenvalues of the (biased)
    covariance of the rows of ``z``, computed as squared singular values of the centred matrix.

    Args:
        z: ``(B, D)`` embeddings, ``B >= 2``.
        eps: a spectrum whose total is at most ``eps`` (a constant embedding) gives 0.

    Returns:
        a 0-dim tensor in ``[0, min(B - 1, D)]`` (same dtype as ``z``).

    Raises:
        ValueError: ``z`` is not a float ``(B, D)`` tensor with ``B >= 2``.

    Example:
        >>> z = torch.randn(4096, 8, generator=torch.Generator().manual_seed(0))
        >>> round(float(effective_rank(z)))
        8
    """
    _check_2d(z)
    zc = z - z.mean(dim=0, keepdim=True)
    lam = torch.linalg.svdvals(zc) ** 2 / z.shape[0]  # eigenvalues of the covariance
    total = lam.sum()
    if float(total) <= eps:
        return torch.zeros((), dtype=z.dtype, device=z.device)
    p = lam / total
    h = -(p * torch.log(p.clamp_min(torch.finfo(z.dtype).tiny))).sum()  # 0 log 0 = 0
    return torch.exp(h)
