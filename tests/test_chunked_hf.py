"""Chunked TaiLr through transformers' ``Trainer(compute_loss_func=ChunkedTaiLrLossFunc(...))``.

The model runs with ``output_hidden_states=True`` and ``logits_to_keep=1`` (added by ``hidden_states_collator``),
so it never computes the full logits; the hook computes TaiLr in token chunks from the final hidden states and
the output layer. The gradient of one ``Trainer`` optimizer step must equal one backward of the dense full-batch
TaiLr mean, with 1 and 2 accumulated micro-batches (rows have unequal numbers of targets, so a per-micro-batch
mean would be caught). Tiny Llama from a config, float64.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from kexue.losses import ChunkedTaiLrLossFunc, hidden_states_collator, tailr_loss  # noqa: E402

N_ROWS, LENGTH, VOCAB = 8, 12, 96
KW: dict[str, Any] = dict(gamma=0.01, label_smoothing=0.1, min_weight=0.05)


def tiny_llama() -> Any:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=LENGTH,
        tie_word_embeddings=True,
    )
    return transformers.LlamaForCausalLM(cfg).double()


def rows() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(N_ROWS):
        n = 3 + (5 * i) % (LENGTH - 2)
        ids = torch.randint(1, VOCAB, (LENGTH,), generator=g)
        mask = (torch.arange(LENGTH) < n).long()
        labels = ids.masked_fill(mask == 0, -100)
        labels[0] = -100
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def reference_grads() -> dict[str, torch.Tensor]:
    model = tiny_llama().train()
    batch = {k: torch.stack([r[k] for r in rows()]) for k in ("input_ids", "attention_mask", "labels")}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    tailr_loss(logits[:, :-1].reshape(-1, VOCAB), batch["labels"][:, 1:].reshape(-1), **KW).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def trainer_grads(accum: int, out_dir: str) -> tuple[dict[str, torch.Tensor], list[int]]:
    seen: dict[str, torch.Tensor] = {}
    logit_lengths: list[int] = []

    class Grab(transformers.TrainerCallback):  # type: ignore[misc]
        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            seen.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    args = transformers.TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=N_ROWS // accum,
        gradient_accumulation_steps=accum,
        max_steps=1,
        learning_rate=0.0,
        max_grad_norm=0.0,
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    model = tiny_llama()
    hook = ChunkedTaiLrLossFunc(model.get_output_embeddings(), chunk_size=5, **KW)

    def spy(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        logit_lengths.append(int(outputs.logits.shape[1]))
        return hook(outputs, labels, num_items_in_batch=num_items_in_batch)

    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=rows(),
        data_collator=hidden_states_collator(),
        compute_loss_func=spy,
        callbacks=[Grab()],
    )
    trainer.train()
    return seen, logit_lengths


@pytest.mark.parametrize("accum", [1, 2])
def test_trainer_step_equals_dense_full_batch(tmp_path: Path, accum: int) -> None:
    want = reference_grads()
    got, lengths = trainer_grads(accum, str(tmp_path))
    assert lengths == [1] * accum  # the model computed the last position's logits only
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-12, msg=name)


def test_value_equals_the_models_own_loss_at_gamma_zero() -> None:
    model = tiny_llama()
    batch = {k: torch.stack([r[k] for r in rows()]) for k in ("input_ids", "attention_mask", "labels")}
    outputs = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        output_hidden_states=True,
        logits_to_keep=1,
    )
    loss = ChunkedTaiLrLossFunc(model.get_output_embeddings(), gamma=0.0, chunk_size=7)(outputs, batch["labels"])
    ref = model(**batch).loss  # transformers computes its loss in float32, even for a float64 model
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss.float(), ref, rtol=1e-5, atol=1e-6)


def test_errors() -> None:
    model = tiny_llama()
    with pytest.raises(TypeError, match="output_layer"):
        ChunkedTaiLrLossFunc(torch.nn.ReLU(), gamma=0.1)
    with pytest.raises(ValueError, match="gamma"):
        ChunkedTaiLrLossFunc(model.get_output_embeddings(), gamma=1.5)
    with pytest.raises(ValueError, match="chunk_size"):
        ChunkedTaiLrLossFunc(model.get_output_embeddings(), gamma=0.1, chunk_size=0)
    hook = ChunkedTaiLrLossFunc(model.get_output_embeddings(), gamma=0.1)
    ids = torch.randint(0, VOCAB, (2, 5))
    with pytest.raises(ValueError, match="output_hidden_states=True"):
        hook(model(input_ids=ids), ids)
    outputs = model(input_ids=ids, output_hidden_states=True, logits_to_keep=1)
    with pytest.raises(ValueError, match=r"labels\[:, 0\]"):
        hook(outputs, ids, num_items_in_batch=8)
    with pytest.raises(ValueError, match="labels must have shape"):
        hook(outputs, ids[:, :4])
    with pytest.raises(TypeError, match="labels must hold integer"):
        hook(outputs, ids.double())
    with pytest.raises(TypeError, match="collator must be callable"):
        hidden_states_collator(3)
    assert "gamma=0.1" in repr(hook)


def test_doctests() -> None:
    import doctest

    import kexue.losses.hf as hf

    result = doctest.testmod(hf, verbose=False)
    assert result.attempted >= 2 and result.failed == 0
