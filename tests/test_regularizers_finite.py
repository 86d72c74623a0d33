"""The finiteness check of the adversarial regularisers' inner gradient (one min/max pass instead of isfinite)."""

from __future__ import annotations

import pytest
import torch

from kexue.regularizers._site import all_finite, normalize


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_all_finite_sees_one_bad_entry(bad: float, dtype: torch.dtype) -> None:
    g = torch.randn(4, 5, 6).to(dtype)
    assert all_finite(g)
    g[2, 3, 4] = bad
    assert not all_finite(g)


def test_all_finite_large_finite_values_and_empty() -> None:
    g = torch.tensor([torch.finfo(torch.float32).max, -torch.finfo(torch.float32).max])
    assert all_finite(g)  # no overflow of a sum or a difference
    assert all_finite(torch.empty(0))


def test_global_embedding_normalisation_ties_equal_tokens() -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[1, 2, 1], [3, 1, 2]])
    d = torch.randn(2, 3, 4, generator=g)
    out = normalize(d, "global", ids=ids, num_embeddings=5)
    rows = torch.zeros(5, 4).index_add_(0, ids.reshape(-1), d.reshape(-1, 4))
    want = (rows / rows.norm())[ids]
    torch.testing.assert_close(out, want)
