"""kexue.regularizers on tiny Hugging Face classifiers built from configs (random init, no download): dict /
BatchEncoding batches, HF signatures, inputs_embeds computed upstream, dropout in train() mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.regularizers import fgm_loss, gradient_penalty_loss, pgd_loss, vat_loss

transformers = pytest.importorskip("transformers")


def _bert(attn: str = "eager") -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
        max_position_embeddings=32,
        num_labels=3,
        attn_implementation=attn,
    )
    return transformers.BertForSequenceClassification(cfg)


def _gpt2() -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=32, num_labels=3, pad_token_id=0
    )
    return transformers.GPT2ForSequenceClassification(cfg)


def _batch(b: int = 4, length: int = 8) -> tuple[dict[str, Tensor], Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 100, (b, length), generator=g)
    mask = torch.ones(b, length, dtype=torch.long)
    ids[1, -3:], mask[1, -3:] = 0, 0  # right padding (pad_token_id = 0)
    return {"input_ids": ids, "attention_mask": mask}, torch.randint(0, 3, (b,), generator=g)


def _flat_grad(loss: Tensor, model: nn.Module) -> Tensor:
    ps = [p for p in model.parameters() if p.requires_grad]
    gs = torch.autograd.grad(loss, ps, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(ps, gs)])


def _cos(a: Tensor, b: Tensor) -> float:
    return float(F.cosine_similarity(a.double(), b.double(), dim=0))


def test_finite_difference_penalty_on_bert_in_train_mode_with_dropout() -> None:
    """Dropout 0.1 in train(): the finite-difference passes replay the clean pass's masks. Before: penalty
    gradient cosine with the exact (double-backward) one about -0.1, norm 200 times too large."""
    model = _bert().train()
    batch, y = _batch()

    def penalty_grad(**kw: object) -> Tensor:
        torch.manual_seed(3)
        clean = _flat_grad(F.cross_entropy(model(**batch).logits, y), model)
        torch.manual_seed(3)
        return _flat_grad(gradient_penalty_loss(model, batch, y, site="embedding", **kw), model) - clean

    exact = penalty_grad()
    fd = penalty_grad(method="finite_difference")
    assert _cos(exact, fd) > 0.99
    assert float((fd - exact).norm() / exact.norm()) < 0.1


@pytest.mark.parametrize("make", [_bert, _gpt2], ids=["bert", "gpt2"])
def test_dict_batches_on_hf_classifiers(make) -> None:
    """FGM, PGD, VAT and both gradient penalties take a BatchEncoding-like dict (model(**batch))."""
    model = make().eval()  # eval(): the gradients below are deterministic
    batch, y = _batch()
    emb = model.get_input_embeddings().weight
    for fn in (
        lambda: fgm_loss(model, batch, y, eps=0.5, site="embedding", scope="global"),
        lambda: pgd_loss(model, batch, y, eps=0.5, steps=2, site="embedding", norm="l2"),
        lambda: vat_loss(model, batch, eps=1.0, xi=10.0, site="embedding", scope="global"),
        lambda: gradient_penalty_loss(model, batch, y, site="embedding", method="finite_difference"),
    ):
        model.zero_grad()
        loss = fn()
        loss.backward()
        assert torch.isfinite(loss)
        assert emb.grad is not None and torch.isfinite(emb.grad).all() and bool(emb.grad.abs().sum() > 0)


def test_gpt2_tuple_is_read_as_ids_and_mask() -> None:
    """GPT-2's second positional parameter is past_key_values: (ids, mask) must reach attention_mask. Before:
    the mask went into the cache argument."""
    model = _gpt2().eval()
    batch, y = _batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    want = _flat_grad(fgm_loss(model, batch, y, eps=0.5, site="embedding"), model)
    got = _flat_grad(fgm_loss(model, (ids, mask), y, eps=0.5, site="embedding"), model)
    torch.testing.assert_close(got, want)
    with pytest.raises(TypeError, match="pass a dict"):
        fgm_loss(model, (ids, mask, mask, mask), y, eps=0.5, site="embedding")


def test_fgm_on_inputs_embeds_equals_fgm_on_the_embedding_output() -> None:
    """inputs_embeds computed from the model's own embedding and perturbed at site='input' is the same
    regulariser as site='embedding' (BERT adds positions after the word embedding either way), gradients of the
    embedding matrix included. Before: "backward through the graph a second time"."""
    model = _bert().eval()
    batch, y = _batch()
    want = _flat_grad(fgm_loss(model, batch, y, eps=0.5, site="embedding"), model)
    embeds = model.get_input_embeddings()(batch["input_ids"])
    upstream = {"inputs_embeds": embeds, "attention_mask": batch["attention_mask"]}
    got = _flat_grad(fgm_loss(model, upstream, y, eps=0.5), model)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    for fn in (
        lambda b: vat_loss(model, b, eps=1.0),
        lambda b: pgd_loss(model, b, y, eps=0.5, steps=2),
        lambda b: gradient_penalty_loss(model, b, y, method="finite_difference"),
    ):
        model.zero_grad()
        embeds = model.get_input_embeddings()(batch["input_ids"])
        fn({"inputs_embeds": embeds, "attention_mask": batch["attention_mask"]}).backward()
        assert bool(model.get_input_embeddings().weight.grad.abs().sum() > 0)
