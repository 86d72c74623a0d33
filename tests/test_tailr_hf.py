"""TaiLr through transformers' ``Trainer(compute_loss_func=TaiLrLossFunc(...))``: exact gradients.

The gradient of one optimizer step must equal the gradient of the full-batch TaiLr mean (over every non-ignored
target of the step) however the step is split: 1 process with 1 or 2 accumulated micro-batches, and 2 gloo
processes (this file re-runs itself as the workers, with the environment ``torchrun`` would set) with 1 or 2
micro-batches each. Rows have unequal numbers of targets, so a per-micro-batch or per-process mean would be
caught. Tiny GPT-2 (causal) and BERT (masked) from configs, float64 so the comparison is tight. A negative
control: the ``compute_loss`` override that the docs used to show is half the reference under 2 processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from kexue.losses import TaiLrLossFunc, tailr_loss  # noqa: E402

N_ROWS, LENGTH, VOCAB = 8, 12, 64
KW: dict[str, Any] = dict(gamma=0.01, label_smoothing=0.1)  # γ small enough that the weights vary with p
KINDS = ("gpt2", "bert")


# ------------------------------------------------------------------------------------------------ set-up
def tiny_model(kind: str) -> Any:
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(
            vocab_size=VOCAB,
            n_positions=LENGTH,
            n_embd=16,
            n_layer=1,
            n_head=2,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
        )
        return transformers.GPT2LMHeadModel(cfg).double()
    cfg = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=LENGTH,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForMaskedLM(cfg).double()


def rows(kind: str) -> list[dict[str, torch.Tensor]]:
    """Right-padded rows with 2..11 targets each (unequal counts per micro-batch and per process)."""
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(N_ROWS):
        n = 3 + (5 * i) % (LENGTH - 2)  # valid length
        ids = torch.randint(5, VOCAB, (LENGTH,), generator=g)
        mask = (torch.arange(LENGTH) < n).long()
        if kind == "gpt2":
            labels = ids.masked_fill(mask == 0, -100)
            labels[0] = -100  # never a target of a causal LM: keeps the Trainer's count exact
        else:
            pick = (torch.rand(LENGTH, generator=g) < 0.4) & (mask == 1)
            pick[i % n] = True  # at least one target
            labels = ids.masked_fill(~pick, -100)
            ids = ids.masked_fill(pick, 4)  # the "[MASK]" id
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def reference_grads(kind: str) -> dict[str, torch.Tensor]:
    """One backward of the full-batch TaiLr mean, written without the helper (the logits are shifted)."""
    model = tiny_model(kind).train()
    batch = {k: torch.stack([r[k] for r in rows(kind)]) for k in ("input_ids", "attention_mask", "labels")}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"]
    if kind == "gpt2":
        logits, labels = logits[:, :-1], labels[:, 1:]
    tailr_loss(logits.reshape(-1, VOCAB), labels.reshape(-1), **KW).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def trainer_grads(kind: str, accum: int, out_dir: str, *, recipe: str = "hook") -> dict[str, torch.Tensor]:
    """The summed gradient of one ``Trainer`` optimizer step over all ``N_ROWS`` rows (captured before the step)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    seen: dict[str, torch.Tensor] = {}

    class Grab(transformers.TrainerCallback):  # type: ignore[misc]
        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            seen.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    args = transformers.TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=N_ROWS // (world * accum),
        gradient_accumulation_steps=accum,
        max_steps=1,
        learning_rate=0.0,
        max_grad_norm=0.0,  # no clipping: the raw gradient is compared
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    loss = TaiLrLossFunc(causal=kind == "gpt2", **KW)
    common: dict[str, Any] = dict(model=tiny_model(kind), args=args, train_dataset=rows(kind), callbacks=[Grab()])
    if recipe == "hook":
        trainer = transformers.Trainer(compute_loss_func=loss, **common)
    else:
        trainer = _override_trainer()(**common)
    trainer.train()
    return seen


def _override_trainer() -> Any:
    """The recipe the TaiLr docs used to show: a ``compute_loss`` override (loses the world-size factor)."""

    class TaiLrTrainer(transformers.Trainer):  # type: ignore[misc]
        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            logits, target = outputs.logits[:, :-1].transpose(1, 2), labels[:, 1:]
            loss = tailr_loss(logits, target, reduction="sum", **KW) / num_items_in_batch
            return (loss, outputs) if return_outputs else loss

    return TaiLrTrainer


def _relative_error(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> float:
    assert set(got) == set(want)
    num = sum(float((got[k] - want[k]).pow(2).sum()) for k in want)
    den = sum(float(want[k].pow(2).sum()) for k in want)
    return (num / den) ** 0.5


# ------------------------------------------------------------------------------------------------ 2 processes
def _worker(out: Path) -> None:
    """One rank of the 2-process run; rank 0 writes the gradients of every scenario to ``out``."""
    results: dict[str, dict[str, torch.Tensor]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            for accum in (1, 2):
                results[f"{kind}-{accum}"] = trainer_grads(kind, accum, tmp)
        results["override-gpt2-2"] = trainer_grads("gpt2", 2, tmp, recipe="override")
    if int(os.environ["RANK"]) == 0:
        torch.save(results, out)
    # Tear the group down explicitly once every Trainer (and its DDP wrapper) is garbage: a reducer freed during
    # interpreter shutdown, after the group, can deadlock a gloo worker thread on the GIL.
    import gc

    import torch.distributed as dist

    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_process_grads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("ddp") / "grads.pt"
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            WORLD_SIZE="2",
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE="2",
            OMP_NUM_THREADS="1",
            PYTHONPATH=os.pathsep.join(
                [str(Path(__file__).resolve().parent.parent / "src"), os.environ.get("PYTHONPATH", "")]
            ),
        )
        cmd = [sys.executable, __file__, str(out)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=300)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs[-1:] + logs[:1])[-4000:]
    return torch.load(out, weights_only=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("accum", [1, 2])
def test_two_processes_match_full_batch(two_process_grads: Any, kind: str, accum: int) -> None:
    got, want = two_process_grads[f"{kind}-{accum}"], reference_grads(kind)
    assert _relative_error(got, want) < 1e-12
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-14)


def test_compute_loss_override_is_half_under_two_processes(two_process_grads: Any) -> None:
    # negative control: the harness sees a world-size error (DDP averages a loss that was not multiplied by 2)
    got, want = two_process_grads["override-gpt2-2"], reference_grads("gpt2")
    ratio = sum(float((got[k] * want[k]).sum()) for k in want) / sum(float(want[k].pow(2).sum()) for k in want)
    assert abs(ratio - 0.5) < 1e-10
    assert _relative_error(got, want) > 0.4


# ------------------------------------------------------------------------------------------------ 1 process
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("accum", [1, 2])
def test_one_process_matches_full_batch(tmp_path: Path, kind: str, accum: int) -> None:
    got, want = trainer_grads(kind, accum, str(tmp_path)), reference_grads(kind)
    assert _relative_error(got, want) < 1e-12
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------------------------------------ the helper
@pytest.mark.parametrize("kind", KINDS)
def test_gamma_zero_equals_the_models_own_loss(kind: str) -> None:
    model = tiny_model(kind)
    batch = {k: torch.stack([r[k] for r in rows(kind)]) for k in ("input_ids", "attention_mask", "labels")}
    out = model(**batch)
    ce = TaiLrLossFunc(gamma=0.0, causal=kind == "gpt2")
    n = int((batch["labels"] != -100).sum())
    # transformers computes its loss in float32 even for a float64 model: compare values, not dtypes
    close = dict(check_dtype=False, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ce(out, batch["labels"]), out.loss, **close)
    torch.testing.assert_close(ce(out, batch["labels"], num_items_in_batch=torch.tensor(n)), out.loss, **close)
    if kind == "gpt2":  # the model's own loss with a Trainer count (BERT's masked-LM loss ignores the count)
        own = model(**batch, num_items_in_batch=torch.tensor(2 * n)).loss
        torch.testing.assert_close(ce(out, batch["labels"], num_items_in_batch=2 * n), own, **close)
    torch.testing.assert_close(ce((out.logits,), batch["labels"]), out.loss, **close)  # return_dict=False tuples


def test_tailr_value_matches_direct_call_and_dtype() -> None:
    logits = torch.randn(3, 6, 11, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (3, 6))
    labels[:, 0] = -100
    labels[1, 4:] = -100
    f = TaiLrLossFunc(gamma=0.3, min_weight=0.1, causal=True)
    got = f({"logits": logits}, labels, num_items_in_batch=20)
    want = tailr_loss(logits[:, :-1].transpose(1, 2), labels[:, 1:], gamma=0.3, min_weight=0.1, reduction="sum") / 20
    torch.testing.assert_close(got, want)
    assert got.dtype == torch.float64
    half = TaiLrLossFunc(gamma=0.3, causal=False)(logits.detach().to(torch.bfloat16), labels)
    assert half.dtype == torch.float32  # upcast before the log-softmax
    assert "gamma=0.3" in repr(f)
    assert "causal=True" in repr(f)


def test_errors() -> None:
    labels = torch.randint(0, 11, (2, 5))
    logits = torch.randn(2, 5, 11)
    f = TaiLrLossFunc(gamma=0.1, causal=True)
    with pytest.raises(ValueError, match=r"labels\[:, 0\]"):
        f({"logits": logits}, labels, num_items_in_batch=8)
    f({"logits": logits}, labels)  # without a token count the mean is exact anyway
    with pytest.raises(ValueError, match="gamma"):
        TaiLrLossFunc(gamma=1.5, causal=True)
    with pytest.raises(ValueError, match="min_weight"):
        TaiLrLossFunc(gamma=0.1, min_weight=0.2, form="closed", causal=False)
    with pytest.raises(TypeError, match="causal"):
        TaiLrLossFunc(gamma=0.1, causal=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="logits"):
        f(object(), labels)
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        f({"logits": torch.randn(2, 11)}, torch.tensor([1, 2]))
    # before: integer logits were cast to float and used, and the label errors named tailr_loss's "target"
    g = TaiLrLossFunc(gamma=0.1, causal=False)
    for bad in (logits.long(), logits > 0):
        with pytest.raises(TypeError, match="logits must have a floating-point dtype"):
            g({"logits": bad}, labels)
    with pytest.raises(TypeError, match="labels must hold integer"):
        g({"logits": logits}, labels.float())
    with pytest.raises(ValueError, match=r"labels must have shape \(2, 5\)"):
        g({"logits": logits}, labels[None])  # flattened, it would have passed
    with pytest.raises(ValueError, match=r"labels holds class index 11, expected values in \[0, 10\]"):
        g({"logits": logits}, torch.full((2, 5), 11))
    with pytest.raises(ValueError, match="logits contains NaN"):
        g({"logits": torch.full((2, 5, 11), float("nan"))}, labels)


if __name__ == "__main__":  # a rank of the 2-process run (see two_process_grads)
    _worker(Path(sys.argv[1]))
