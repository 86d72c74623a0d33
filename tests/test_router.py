"""Tests for the sparse soft-top-k MoE router (kexue.ops.soft_topk_router, kexue.modules.SoftTopKRouter)."""

from __future__ import annotations

import doctest

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

import kexue.modules.router as router_module_mod
import kexue.ops.router as router_mod
from kexue.modules import SoftTopKRouter
from kexue.ops import RouterOutput, soft_topk, soft_topk_router

METHODS = ["exp", "sigmoid", "laplace", "gradtopk"]
THRESHOLD = ["exp", "sigmoid", "laplace"]


def _logits(
    gen: torch.Generator, tokens: int = 16, experts: int = 8, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    return torch.randn(tokens, experts, generator=gen, dtype=dtype)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_forward_is_exact_top_k(method: str, k: int, gen: torch.Generator) -> None:
    logits = _logits(gen)
    logits[0, :4] = 1.0  # a tie: the order is torch.topk's
    out = soft_topk_router(logits, k, method=method)
    assert isinstance(out, RouterOutput)
    assert torch.equal(out.indices, torch.topk(logits, k, dim=-1).indices)
    p = soft_topk(logits, k, method=method)
    torch.testing.assert_close(out.probs, p)
    torch.testing.assert_close(out.weights, p.gather(-1, out.indices))
    normalized = soft_topk_router(logits, k, method=method, normalize=True).weights
    torch.testing.assert_close(normalized, out.weights / out.weights.sum(-1, keepdim=True))
    torch.testing.assert_close(normalized.sum(-1), torch.ones(16, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtype_and_leading_dims(dtype: torch.dtype, gen: torch.Generator) -> None:
    logits = torch.randn(2, 5, 6, generator=gen).to(dtype)
    out = soft_topk_router(logits, 2)
    assert out.indices.shape == (2, 5, 2)
    assert out.weights.dtype == dtype
    assert out.probs.shape == (2, 5, 6)
    assert torch.equal(out.indices, logits.topk(2, dim=-1).indices)


@pytest.mark.parametrize("method", METHODS)
def test_gradient_reaches_unselected_experts(method: str, gen: torch.Generator) -> None:
    logits = _logits(gen).requires_grad_(True)
    out = soft_topk_router(logits, 2, method=method)
    (out.weights * torch.randn(16, 2, generator=gen, dtype=torch.float64)).sum().backward()
    assert logits.grad is not None
    unselected = torch.ones_like(logits, dtype=torch.bool).scatter(-1, out.indices, False)
    assert bool((logits.grad[unselected] != 0).all())
    # negative control: top-k-then-softmax gates (Megatron's default; equal to Mixtral's renormalised
    # softmax-then-top-k) give those logits exactly zero gradient
    plain = logits.detach().clone().requires_grad_(True)
    gates = torch.softmax(plain.gather(-1, out.indices), -1)
    (gates * torch.randn(16, 2, generator=gen, dtype=torch.float64)).sum().backward()
    assert plain.grad is not None
    assert bool((plain.grad[unselected] == 0).all())


class _TinyMoE(nn.Module):
    def __init__(self, dim: int, experts: int, k: int, method: str) -> None:
        super().__init__()
        self.router = SoftTopKRouter(dim, experts, k, method=method)  # type: ignore[arg-type]
        self.experts = nn.ModuleList(nn.Linear(dim, dim) for _ in range(experts))

    def sparse(self, x: torch.Tensor) -> torch.Tensor:
        """Dispatch every token to its k experts only, combine with index_add."""
        out = self.router(x)
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, slot = (out.indices == e).nonzero(as_tuple=True)
            if token.numel():
                y = y.index_add(0, token, out.weights[token, slot, None] * expert(x[token]))
        return y

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """Reference: every expert on every token, weighted by a dense mask that is zero off the top k."""
        out = self.router(x)
        mask = torch.zeros_like(out.probs).scatter(-1, out.indices, out.weights)  # (T, E)
        return sum(mask[:, e, None] * expert(x) for e, expert in enumerate(self.experts))  # type: ignore[return-value]


@pytest.mark.parametrize("method", THRESHOLD)
def test_sparse_dispatch_equals_dense_masked_reference(method: str) -> None:
    torch.manual_seed(0)
    moe = _TinyMoE(6, 4, 2, method).double()
    x = torch.randn(10, 6, dtype=torch.float64)
    sparse, dense = moe.sparse(x), moe.dense(x)
    torch.testing.assert_close(sparse, dense)
    g = torch.randn_like(sparse)
    grads = []
    for y in (moe.sparse(x), moe.dense(x)):
        moe.zero_grad()
        (y * g).sum().backward()
        grads.append([p.grad.clone() for p in moe.parameters()])  # type: ignore[union-attr]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    # the gate's rows for experts a token did not pick still learn (through the smooth mask)
    assert bool((moe.router.gate.weight.grad != 0).all())  # type: ignore[union-attr]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("normalize", [False, True])
def test_gradcheck(method: str, normalize: bool, gen: torch.Generator) -> None:
    # well separated logits, so that the selection does not change under gradcheck's perturbation
    logits = (torch.randperm(24, generator=gen).double().reshape(4, 6) * 0.3).requires_grad_(True)
    tau = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)

    def fn(t: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = soft_topk_router(t, 2, method=method, temperature=s, normalize=normalize)  # type: ignore[arg-type]
        return out.weights, out.aux_loss

    assert gradcheck(fn, (logits, tau))


def test_load_balancing_statistics(gen: torch.Generator) -> None:
    logits = _logits(gen, tokens=32, experts=5)
    out = soft_topk_router(logits, 2, method="sigmoid")
    counts = torch.bincount(out.indices.flatten(), minlength=5).double()
    torch.testing.assert_close(out.tokens_per_expert, counts / 64)
    torch.testing.assert_close(out.prob_per_expert, out.probs.mean(0) / 2)
    torch.testing.assert_close(out.tokens_per_expert.sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(out.prob_per_expert.sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(out.aux_loss, 5 * (out.tokens_per_expert * out.prob_per_expert).sum())
    # uniform router probabilities give the balanced value 1 whatever the assignment
    uniform = soft_topk_router(torch.zeros(7, 5), 2)
    torch.testing.assert_close(uniform.aux_loss, torch.tensor(1.0))
    # everything sent to the same 2 experts: E * (1/2 * P_0 + 1/2 * P_1) with P concentrated there
    skewed = soft_topk_router(torch.tensor([[9.0, 8.0, 0.0, 0.0, 0.0]]).repeat(4, 1), 2, temperature=0.1)
    assert float(skewed.aux_loss) > 2.4


def test_router_traces_without_graph_breaks() -> None:
    torch._dynamo.reset()
    try:
        router = SoftTopKRouter(8, 4, 2, temperature=nn.Parameter(torch.tensor(1.0)))
        explanation = torch._dynamo.explain(router)(torch.randn(6, 8))
        assert explanation.graph_break_count == 0
    finally:
        torch._dynamo.reset()


def test_module(gen: torch.Generator) -> None:
    router = SoftTopKRouter(5, 3, 2, method="exp", normalize=True, temperature=nn.Parameter(torch.tensor(0.5)))
    assert {name for name, _ in router.named_parameters()} == {"temperature", "gate.weight"}
    x = torch.randn(4, 5, generator=gen)
    out = router(x)
    expected = soft_topk_router(router.gate(x), 2, method="exp", temperature=router.temperature, normalize=True)
    for a, b in zip(out, expected, strict=True):
        torch.testing.assert_close(a, b)
    out.aux_loss.backward()
    assert router.temperature.grad is not None  # type: ignore[union-attr]
    assert "k=2, method='exp'" in repr(router)


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((torch.arange(4), 1), {}, TypeError, "logits must have a floating-point dtype"),
        ((torch.zeros(3, 4), 0), {}, ValueError, "k must be >= 1"),
        ((torch.zeros(3, 4), 5), {}, ValueError, "k must be <= 4"),
        ((torch.zeros(3, 4), 2.0), {}, TypeError, "k must be an integer"),
        ((torch.zeros(3, 4), True), {}, TypeError, "k must be an integer"),
        ((torch.zeros(3, 4), 2), {"method": "top"}, ValueError, "method must be one of"),
        ((torch.zeros(3, 4), 2), {"temperature": 0.0}, ValueError, "temperature must be > 0"),
        ((torch.zeros(3, 4), 2), {"normalize": 1}, TypeError, "normalize must be a bool"),
        ((torch.tensor([[0.0, float("nan")]]), 1), {}, ValueError, "contains NaN"),
        ((torch.zeros(0, 4), 1), {}, ValueError, "logits must not be empty"),
    ],
)
def test_bad_input(args: tuple, kwargs: dict, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        soft_topk_router(*args, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((0, 4, 1), {}, ValueError, "in_features must be >= 1"),
        ((4, 4, 5), {}, ValueError, "k must be <= 4"),
        ((4, 4.0, 1), {}, TypeError, "num_experts must be an integer"),
        ((4, 4, 1), {"method": "x"}, ValueError, "method must be one of"),
        ((4, 4, 1), {"temperature": -1.0}, ValueError, "temperature must be > 0"),
        ((4, 4, 1), {"temperature": torch.ones(1)}, ValueError, "0-d tensor"),
        ((4, 4, 1), {"normalize": "no"}, TypeError, "normalize must be a bool"),
        ((4, 4, 1), {"bias": None}, TypeError, "bias must be a bool"),
    ],
)
def test_module_bad_input(args: tuple, kwargs: dict, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        SoftTopKRouter(*args, **kwargs)


def test_docstring_examples() -> None:
    for mod in (router_mod, router_module_mod):
        assert doctest.testmod(mod, extraglobs={"torch": torch}).failed == 0
