"""A mixture-of-experts router: a linear gate followed by :func:`kexue.ops.soft_topk_router`.

Sparse top-k dispatch in the forward, the backward of a smooth top-k mask (https://kexue.fm/archives/10373), so
that experts the router did not select still receive gradient.
"""

from __future__ import annotations

from torch import Tensor, nn

from kexue._validate import check_choice, check_float_tensor, check_int, check_real
from kexue.ops.router import RouterOutput, soft_topk_router
from kexue.ops.topk import METHODS, Method

__all__ = ["SoftTopKRouter"]


class SoftTopKRouter(nn.Module):
    """``soft_topk_router(gate(x), k)`` with a learnable ``gate = nn.Linear(in_features, num_experts)``.

    Args:
        in_features: size of each token's representation.
        num_experts: E.
        k: experts per token, 1 <= k <= E.
        method: smooth top-k construction (default ``"laplace"``, see :func:`kexue.ops.soft_topk_router`).
        temperature: > 0, a float or a 0-d tensor; an ``nn.Parameter`` is learned with the gate.
        normalize: renormalise each token's k gate weights to sum 1.
        bias: whether the gate has a bias.

    Shapes:
        ``x: (..., in_features)`` -> :class:`kexue.ops.RouterOutput` with indices and weights ``(..., k)``.

    Raises:
        TypeError, ValueError: for a hyperparameter of the wrong type or outside its range.

    Example:
        >>> router = SoftTopKRouter(16, num_experts=4, k=2)
        >>> out = router(torch.randn(8, 16))
        >>> out.indices.shape, out.weights.shape, float(out.tokens_per_expert.sum())
        (torch.Size([8, 2]), torch.Size([8, 2]), 1.0)
    """

    temperature: float | Tensor

    def __init__(
        self,
        in_features: int,
        num_experts: int,
        k: int,
        *,
        method: Method = "laplace",
        temperature: float | Tensor = 1.0,
        normalize: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__()
        in_features = check_int("in_features", in_features, low=1)
        num_experts = check_int("num_experts", num_experts, low=1)
        self.k = check_int("k", k, low=1, high=num_experts)
        self.method: Method = check_choice("method", method, METHODS)  # type: ignore[assignment]
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {normalize!r} ({type(normalize).__name__})")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {bias!r} ({type(bias).__name__})")
        self.normalize = normalize
        check_real("temperature", temperature, low=0.0, low_inclusive=False, allow_tensor=True)
        if isinstance(temperature, Tensor) and temperature.dim() != 0:
            raise ValueError(f"temperature must be a float or a 0-d tensor, got shape {tuple(temperature.shape)}")
        if isinstance(temperature, Tensor) and not isinstance(temperature, nn.Parameter):
            self.register_buffer("temperature", temperature)
        else:
            self.temperature = temperature
        self.gate = nn.Linear(in_features, num_experts, bias=bias)

    def forward(self, x: Tensor) -> RouterOutput:
        """Route ``x`` (..., in_features): indices and gate weights (..., k), probs (..., E), balancing stats."""
        check_float_tensor("x", x, min_ndim=1)
        if x.shape[-1] != self.gate.in_features:
            raise ValueError(
                f"x must have {self.gate.in_features} features in its last dimension, got {tuple(x.shape)}"
            )
        return soft_topk_router(
            self.gate(x), self.k, method=self.method, temperature=self.temperature, normalize=self.normalize
        )

    def extra_repr(self) -> str:
        t = self.temperature
        temp = f"tensor({float(t.detach()):g})" if isinstance(t, Tensor) else f"{t}"
        return f"k={self.k}, method={self.method!r}, temperature={temp}, normalize={self.normalize}"
