"""kexue inside the Hugging Face ``Trainer``: a BERT classifier fine-tuned with FGM on its embeddings and TaiLr.

The only change to a standard ``Trainer`` set-up is ``compute_loss``: it returns kexue's ``fgm_loss`` (the clean
plus the adversarial loss, perturbing the output of ``model.get_input_embeddings()``), with ``tailr_loss`` in place
of cross entropy. The Trainer does the rest (optimiser, schedule, devices, mixed precision, accumulation).

The model is a small BERT built from a config (random initialisation, nothing downloaded) and the data is
synthetic, so the script runs offline in seconds; with a real checkpoint use
``AutoModelForSequenceClassification.from_pretrained(...)`` and your tokenised dataset instead. Needs the ``text``
extra: ``pip install 'kexue[text]'``.

    python examples/hf_trainer.py --steps 60
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch
import transformers
from torch import Tensor

from kexue.losses import tailr_loss
from kexue.regularizers import fgm_loss

VOCAB, LENGTH = 100, 16


def make_dataset(n: int, generator: torch.Generator) -> list[dict[str, Tensor]]:
    """Token sequences whose label is 1 when token 7 occurs more often than token 8 (ties broken at random)."""
    out = []
    for _ in range(n):
        ids = torch.randint(10, VOCAB, (LENGTH,), generator=generator)
        a, b = (int(v) for v in torch.randint(0, 4, (2,), generator=generator))
        a += a == b  # no ties
        pos = torch.randperm(LENGTH - 1, generator=generator)[: a + b] + 1  # position 0 holds [CLS]
        ids[pos[:a]], ids[pos[a:]], ids[0] = 7, 8, 1
        mask = torch.ones(LENGTH, dtype=torch.long)
        out.append({"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(int(a > b))})
    return out


class AdversarialTrainer(transformers.Trainer):
    """A ``Trainer`` whose loss is FGM on the input embeddings with TaiLr as the per-example loss."""

    def compute_loss(
        self, model: Any, inputs: dict[str, Tensor], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        labels = inputs.pop("labels")
        loss = fgm_loss(
            model,
            (inputs["input_ids"], inputs["attention_mask"]),  # called as model(input_ids, attention_mask)
            labels,
            eps=0.5,  # the author's text setting: one norm over the whole embedding gradient
            site="embedding",
            scope="global",
            loss_fn=lambda logits, target: tailr_loss(logits, target, gamma=0.5),
        )
        return (loss, None) if return_outputs else loss


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=LENGTH,
        num_labels=2,
    )
    model = transformers.BertForSequenceClassification(config)
    with tempfile.TemporaryDirectory() as out:
        training_args = transformers.TrainingArguments(
            output_dir=out,
            max_steps=args.steps,
            per_device_train_batch_size=32,
            learning_rate=2e-3,
            warmup_steps=10,
            logging_steps=max(1, args.steps // 5),
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            seed=0,
        )
        trainer = AdversarialTrainer(model=model, args=training_args, train_dataset=make_dataset(2048, gen))
        trainer.train()

    test = make_dataset(512, gen)
    batch = {k: torch.stack([row[k] for row in test]).to(model.device) for k in test[0]}
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    acc = float((logits.argmax(-1) == batch["labels"]).float().mean())
    logged = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    print(f"first logged loss {logged[0]:.4f}, last logged loss {logged[-1]:.4f}")
    print(f"test accuracy {acc:.3f} after {args.steps} steps")
    return acc


if __name__ == "__main__":
    main()
