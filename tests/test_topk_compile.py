"""kexue.ops.soft_topk under torch.compile: the threshold methods trace to one graph, with eager's values and grads.

Graph breaks are counted with ``torch._dynamo.explain`` and compiled functions use the ``aot_eager`` backend (it
traces forward and backward like inductor but skips code generation), so the file runs in seconds; the one
inductor test is marked slow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from kexue.ops import SoftTopK, soft_topk

THRESHOLD = ["exp", "sigmoid", "laplace"]


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _breaks(fn: Callable[..., torch.Tensor], *args: object) -> tuple[int, int]:
    explanation = torch._dynamo.explain(fn)(*args)
    return explanation.graph_count, explanation.graph_break_count


@pytest.mark.parametrize("method", THRESHOLD)
@pytest.mark.parametrize("temperature", ["float", "tensor"])
def test_threshold_methods_have_no_graph_breaks(method: str, temperature: str) -> None:
    # regression: the input check synchronised (a graph break on every call) and fullgraph=True failed for
    # every method ("Could not guard on data-dependent expression")
    tau = torch.tensor(0.5) if temperature == "tensor" else 0.5
    x = torch.randn(4, 16)
    assert _breaks(lambda t: soft_topk(t, 3, method=method, temperature=tau), x) == (1, 0)


@pytest.mark.parametrize("method", THRESHOLD)
def test_threshold_methods_have_no_graph_breaks_with_per_row_k_and_hard(method: str) -> None:
    x = torch.randn(3, 5, 8)
    k = torch.tensor([[1, 2, 3, 0, 8]])
    assert _breaks(lambda t: soft_topk(t, k, method=method, dim=-1), x) == (1, 0)
    assert _breaks(lambda t: soft_topk(t, 2, method=method, dim=1, hard=True), x) == (1, 0)


def test_module_with_learnable_temperature_has_no_graph_breaks() -> None:
    m = SoftTopK(2, method="laplace", temperature=torch.nn.Parameter(torch.tensor(0.7)))
    assert _breaks(m, torch.randn(4, 9)) == (1, 0)


@pytest.mark.parametrize("method", THRESHOLD)
def test_fullgraph_forward_and_backward_match_eager(method: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 12, generator=gen, dtype=torch.float64)
    g = torch.randn(3, 12, generator=gen, dtype=torch.float64)

    def fn(t: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return soft_topk(t, 4, method=method, temperature=tau)

    results = []
    for f in (fn, torch.compile(fn, backend="aot_eager", fullgraph=True)):
        xx = x.clone().requires_grad_(True)
        tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
        p = f(xx, tau)
        (p * g).sum().backward()
        results.append((p.detach(), xx.grad, tau.grad))
    for eager, compiled in zip(*results, strict=True):
        torch.testing.assert_close(compiled, eager)


def test_fixed_step_sigmoid_solver_matches_eager() -> None:
    # while compiling, the sigmoid solver runs a fixed number of Newton steps instead of stopping on convergence
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(1)) * torch.tensor([[1e-3], [1.0], [10.0], [1e4]])
    compiled = torch.compile(lambda t: soft_topk(t, 5, method="sigmoid"), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), soft_topk(x, 5, method="sigmoid"))


def test_gradtopk_compiles_with_graph_breaks() -> None:
    # regression: gradtopk could not be compiled at all (torch.autograd.grad inside the forward); its DP now
    # runs eagerly inside the compiled function
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 10, generator=gen, dtype=torch.float64)
    g = torch.randn(3, 10, generator=gen, dtype=torch.float64)

    def fn(t: torch.Tensor) -> torch.Tensor:
        return soft_topk(t, 3, method="gradtopk", temperature=0.8)

    assert _breaks(fn, x)[1] >= 1
    grads = []
    for f in (fn, torch.compile(fn, backend="aot_eager")):
        xx = x.clone().requires_grad_(True)
        (f(xx) * g).sum().backward()
        grads.append(xx.grad)
    torch.testing.assert_close(grads[1], grads[0])


@pytest.mark.slow
def test_inductor_fullgraph_sigmoid() -> None:
    x = torch.randn(8, 256, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    compiled = torch.compile(lambda t: soft_topk(t, 10, method="sigmoid"), fullgraph=True)
    p = compiled(x)
    p.square().sum().backward()
    grad = x.grad
    x.grad = None
    q = soft_topk(x, 10, method="sigmoid")
    q.square().sum().backward()
    torch.testing.assert_close(p, q)
    torch.testing.assert_close(grad, x.grad)
