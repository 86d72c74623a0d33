"""Sparse top-k routing for mixture-of-experts whose backward is a smooth top-k (https://kexue.fm/archives/10373).

Usual top-k routers (softmax then ``torch.topk``, or ``torch.topk`` then softmax) give the router a gradient only
through the k experts they selected: an expert that is never chosen never learns that it should have been (see
NVIDIA/Megatron-LM issue 4169). Here the forward is exactly sparse -- the indices are ``torch.topk`` of the logits
and each token is sent to k experts only -- while the gate weights are the values, at those experts, of a smooth
top-k mask ``p = soft_topk(logits, k)``. Every entry of ``p`` depends on every logit (for the threshold methods
through the threshold lambda, whose derivative involves all of them), so the backward is that of the smooth
construction and reaches the logits of the experts that were not selected.

Su Jianlin reports trying the Laplace threshold construction in MoE routing (comments of the article), which is
the default here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from kexue._validate import check_float_tensor, check_int
from kexue.ops.topk import Method, _soft_topk_core, _validate_args

__all__ = ["RouterOutput", "soft_topk_router"]


class RouterOutput(NamedTuple):
    """What :func:`soft_topk_router` returns; ``T`` is the number of tokens (all leading dims), ``E`` of experts.

    Attributes:
        indices: (..., k) long, the k experts with the largest logits per token, as ``torch.topk`` orders them.
        weights: (..., k) gate weights: the smooth mask at ``indices`` (renormalised to sum 1 if asked).
        probs: (..., E) the smooth top-k mask ``soft_topk(logits, k)`` itself (each token's row sums to k).
        tokens_per_expert: (E,) fraction of the T * k routed assignments that went to each expert (sums to 1).
        prob_per_expert: (E,) mean over tokens of ``probs / k`` (sums to 1); carries the gradient of the
            balancing loss.
        aux_loss: () the Switch Transformer load-balancing loss ``E * sum_e tokens_per_expert * prob_per_expert``
            (Fedus et al. 2021, eq. 4, without its coefficient): 1 when routing is balanced.
    """

    indices: Tensor
    weights: Tensor
    probs: Tensor
    tokens_per_expert: Tensor
    prob_per_expert: Tensor
    aux_loss: Tensor


def _check_router_args(logits: Any, k: Any, method: Any, temperature: Any, normalize: Any) -> float | Tensor:
    """Validate the router's arguments (``k`` an int in [1, E]); return the temperature."""
    # NaN/inf logits are rejected like soft_topk's input (a value check, skipped while torch.compile traces).
    check_float_tensor("logits", logits, min_ndim=1)
    k = check_int("k", k, low=1, high=logits.shape[-1])
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {normalize!r} ({type(normalize).__name__})")
    _, _, tau = _validate_args(logits, k, method, temperature, -1, False)
    return tau


def soft_topk_router(
    logits: Tensor,
    k: int,
    *,
    method: Method = "laplace",
    temperature: float | Tensor = 1.0,
    normalize: bool = False,
) -> RouterOutput:
    """Route each token to its k largest-logit experts; gate weights from a smooth top-k mask.

    Forward: ``indices = torch.topk(logits, k).indices`` (exactly) and ``weights = p[indices]`` with
    ``p = soft_topk(logits, k, method=method, temperature=temperature)``. Backward: through ``p``, so the logits
    of experts that were not selected receive gradient (https://kexue.fm/archives/10373; Megatron-LM issue
    4169). No device synchronisation and no data-dependent control flow for the threshold methods, so it traces
    into one graph under ``torch.compile``. The load-balancing statistics are computed alongside (cheap, O(T E)).

    Args:
        logits: (..., E) router scores of each token over E experts; leading dims are tokens.
        k: experts per token, 1 <= k <= E.
        method: smooth top-k construction of :func:`kexue.ops.soft_topk` (default ``"laplace"``, the variant the
            article's author tried for MoE routing).
        temperature: > 0, a float or a 0-d tensor (learnable).
        normalize: divide the k weights of each token by their sum (as Mixtral / Qwen-MoE do with softmax gates).

    Returns:
        :class:`RouterOutput` (indices, weights, probs, tokens_per_expert, prob_per_expert, aux_loss); weights,
        probs and the statistics have the dtype of ``logits``.

    Raises:
        TypeError: ``logits`` not a floating-point tensor; ``k`` not an int; ``normalize`` not a bool; as
            :func:`kexue.ops.soft_topk` for ``method`` and ``temperature``.
        ValueError: ``k`` outside [1, E]; NaN or inf in ``logits``; as :func:`kexue.ops.soft_topk`.

    Example:
        >>> logits = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 3.0, -2.0]], requires_grad=True)
        >>> out = soft_topk_router(logits, 2)
        >>> out.indices
        tensor([[0, 2],
                [2, 1]])
        >>> out.weights.sum().backward()
        >>> bool((logits.grad[0, [1, 3]] != 0).all())  # experts 1 and 3 were not selected for token 0
        True
    """
    tau = _check_router_args(logits, k, method, temperature, normalize)
    num_experts = logits.shape[-1]
    probs = _soft_topk_core(logits, k, method, tau, logits.dim() - 1, False)  # (..., E), rows sum to k
    indices = logits.detach().topk(k, dim=-1).indices  # (..., k): exactly torch.topk's choice and order
    weights = probs.gather(-1, indices)
    if normalize:
        # the k largest entries of a mask that sums to k over E >= k entries sum to at least k^2 / E > 0
        weights = weights / weights.sum(-1, keepdim=True)
    flat = indices.reshape(-1)
    tokens = flat.numel() // k
    counts = torch.zeros(num_experts, dtype=probs.dtype, device=probs.device)
    counts = counts.scatter_add(0, flat, torch.ones_like(flat, dtype=probs.dtype))
    tokens_per_expert = counts / (tokens * k)
    prob_per_expert = probs.reshape(-1, num_experts).mean(0) / k
    aux_loss = num_experts * torch.linalg.vecdot(tokens_per_expert, prob_per_expert)
    return RouterOutput(indices, weights, probs, tokens_per_expert, prob_per_expert, aux_loss)
