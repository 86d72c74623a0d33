"""P-tuning inside the Hugging Face stack: Trainer checkpoints and resume, PEFT-style adapter folders, predict from
strings, a compact repr.

Tiny random-init BERT (tied decoder) and Llama (untied head) from configs, with the real MiniLM tokenizer files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from kexue.data import DataError, require  # noqa: E402
from kexue.methods import PTuning  # noqa: E402

TEXTS = ["a fine film with a great cast", "terrible acting and a dull plot", "ok", "not good at all"]
PATTERNS = {"bert": "{p2}{label}{p2}{text}", "llama": "{p2}{text}{p2} it was{label}"}
CHECKPOINT_FILES = {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"}


@pytest.fixture(scope="module")
def tok() -> Any:
    try:
        return transformers.AutoTokenizer.from_pretrained(require("minilm"))
    except DataError as e:  # pragma: no cover - data cache missing
        pytest.skip(str(e))


def tiny_lm(tok: Any, arch: str, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    common: dict[str, Any] = dict(
        vocab_size=tok.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=48,
    )
    if arch == "bert":
        cfg = transformers.BertConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **common)
        return transformers.BertForMaskedLM(cfg).eval()
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(num_key_value_heads=2, **common)).eval()


def make(tok: Any, arch: str, *, seed: int = 0, lm: Any = None, **kw: Any) -> PTuning:
    lm = tiny_lm(tok, arch) if lm is None else lm
    torch.manual_seed(seed)  # the prompt encoder's initialisation
    return PTuning(lm, tok, PATTERNS[arch], ["bad", "good"], max_length=40, **kw)


def rows(pt: PTuning, n: int = 8) -> list[dict[str, torch.Tensor]]:
    texts = [TEXTS[i % len(TEXTS)] for i in range(n)]
    enc = pt.encode(texts)
    return [{**{k: v[i] for k, v in enc.items()}, "labels": torch.tensor(i % 2)} for i in range(n)]


def lm_bytes(lm: Any) -> int:
    return sum(p.numel() * p.element_size() for p in lm.parameters())


# ------------------------------------------------------------------------------------------------ Trainer
@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_trainer_checkpoints_hold_only_the_adapter_and_resume(tok: Any, tmp_path: Path, arch: str) -> None:
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=4,
        save_steps=2,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
    )
    lm = tiny_lm(tok, arch)
    lm_before = {k: v.clone() for k, v in lm.state_dict().items()}
    # the MLM's auxiliary loss draws random masks: resuming must restore the RNG too
    pt = make(tok, arch, lm=lm, prompt="lstm", aux_weight=0.5)
    data = rows(pt)
    transformers.Trainer(model=pt, args=args, train_dataset=data).train()  # used to crash at the first save
    final = {k: v.clone() for k, v in pt.state_dict().items()}
    assert final
    assert not any(k.startswith("lm.") for k in final)

    ckpt = tmp_path / "checkpoint-2"
    files = {p.name for p in ckpt.iterdir()}
    assert CHECKPOINT_FILES <= files <= CHECKPOINT_FILES | {"training_args.bin"}
    weights = safetensors_torch.load_file(str(ckpt / "model.safetensors"))
    assert set(weights) == set(final)  # the prompt parameters, not the LM
    folder_bytes = sum(p.stat().st_size for p in ckpt.iterdir())
    assert folder_bytes < lm_bytes(lm) / 10
    for k, v in lm.state_dict().items():  # the LM stayed frozen
        assert torch.equal(v, lm_before[k]), k

    # interrupted after step 2: a fresh PTuning (another prompt initialisation) resumes from the checkpoint
    shutil.rmtree(tmp_path / "checkpoint-4")
    pt2 = make(tok, arch, seed=1, lm=lm, prompt="lstm", aux_weight=0.5)
    assert not all(torch.equal(v, weights[k]) for k, v in pt2.state_dict().items())
    transformers.Trainer(model=pt2, args=args, train_dataset=data).train(resume_from_checkpoint=True)
    assert (tmp_path / "checkpoint-4").is_dir()
    got = pt2.state_dict()
    assert set(got) == set(final)
    for k in final:
        torch.testing.assert_close(got[k], final[k], rtol=1e-6, atol=1e-7)


def test_state_dict_of_a_tuned_tied_lm_saves_with_safetensors(tok: Any, tmp_path: Path) -> None:
    # regression: the head was registered twice and the tied decoder shared the embedding's storage
    pt = make(tok, "bert", freeze_lm=False, prompt="mlp")
    state = pt.state_dict()
    assert "lm.bert.embeddings.word_embeddings.weight" in state
    assert "lm.cls.predictions.decoder.weight" not in state  # the tied alias, saved once
    assert not any(k.startswith("_head") for k in state)
    safetensors_torch.save_file(state, str(tmp_path / "m.safetensors"))
    other = make(tok, "bert", seed=1, lm=tiny_lm(tok, "bert", seed=1), freeze_lm=False, prompt="mlp")
    assert not torch.equal(other.predict(TEXTS), pt.predict(TEXTS))
    other.load_state_dict(safetensors_torch.load_file(str(tmp_path / "m.safetensors")))  # strict
    assert torch.equal(other.predict(TEXTS), pt.predict(TEXTS))
    tied = other.lm.cls.predictions.decoder.weight
    assert tied.data_ptr() == other.lm.bert.embeddings.word_embeddings.weight.data_ptr()


def test_frozen_state_dict_loads_strictly_and_full_dicts_still_load(tok: Any) -> None:
    a = make(tok, "llama", prompt="mlp")
    b = make(tok, "llama", seed=1, lm=a.lm, prompt="mlp")
    assert set(a.state_dict()) == {f"prompt.{k}" for k in a.prompt.state_dict()}
    b.load_state_dict(a.state_dict())  # strict: the frozen LM's entries are not missing
    assert torch.equal(a.predict(TEXTS), b.predict(TEXTS))
    with pytest.raises(RuntimeError, match="Missing"):
        b.load_state_dict({})
    full = {f"lm.{k}": v for k, v in a.lm.state_dict().items()} | a.state_dict()
    b.load_state_dict(full)  # a dict that also holds the LM loads as before


# ------------------------------------------------------------------------------------------------ adapter folder
@pytest.mark.parametrize(
    ("arch", "kw"),
    [
        ("bert", {"prompt": "lstm"}),
        ("bert", {"prompt": "none", "trainable_tokens": ["[unused1]"]}),
        ("llama", {"prompt": "mlp", "aux_weight": 0.3, "single_token": False}),
    ],
)
def test_save_pretrained_from_pretrained_round_trip(tok: Any, tmp_path: Path, arch: str, kw: dict[str, Any]) -> None:
    a = make(tok, arch, **kw)
    if "trainable_tokens" in kw:
        a = PTuning(a.lm, tok, "[unused1]{label}{p2}{text}", ["bad", "good"], max_length=40, **kw)
    with torch.no_grad():
        for p in a.prompt_parameters():
            p.add_(torch.randn_like(p))
    a.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["library"] == "kexue"
    assert config["template"] == a.template.pattern
    assert config["base_model_class"] == type(a.lm).__name__
    weights = safetensors_torch.load_file(str(tmp_path / "adapter_model.safetensors"))
    assert set(weights) == set(a.state_dict())
    assert not any(k.startswith("lm.") for k in weights)
    assert (tmp_path / "adapter_model.safetensors").stat().st_size < lm_bytes(a.lm) / 10

    b = PTuning.from_pretrained(a.lm, tmp_path, tok)
    assert torch.equal(a.predict(TEXTS), b.predict(TEXTS))
    assert b.num_trainable() == 0  # PEFT's default: loaded for inference
    assert not b.training
    c = PTuning.from_pretrained(a.lm, tmp_path, tok, is_trainable=True)
    assert c.num_trainable() == a.num_trainable()
    assert (c.aux_weight, c.single_token, c.kind) == (a.aux_weight, a.single_token, a.kind)


def test_from_pretrained_rejects_mismatches(tok: Any, tmp_path: Path) -> None:
    a = make(tok, "bert", prompt="mlp")
    a.save_pretrained(tmp_path / "ok")
    wide = transformers.BertForMaskedLM(
        transformers.BertConfig(
            vocab_size=tok.vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=48,
        )
    )
    with pytest.raises(ValueError, match="hidden_size=16"):
        PTuning.from_pretrained(wide, tmp_path / "ok", tok)
    with pytest.raises(ValueError, match="name_or_path"):
        PTuning.from_pretrained(a.lm, tmp_path / "ok")  # a model from a config has no tokenizer to load
    bad = tmp_path / "other-tokenizer"
    shutil.copytree(tmp_path / "ok", bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["label_token_ids"] = [[1], [2]]
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="different tokenizer"):
        PTuning.from_pretrained(a.lm, bad, tok)
    cfg["library"] = "peft"
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="not a kexue P-tuning adapter"):
        PTuning.from_pretrained(a.lm, bad, tok)
    with pytest.raises(FileNotFoundError, match="adapter"):
        PTuning.from_pretrained(a.lm, tmp_path / "missing", tok)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="folder"):
        a.save_pretrained(tmp_path / "file")
    a.save_pretrained(tmp_path / "not-main", is_main_process=False)
    assert not (tmp_path / "not-main").exists()


# ------------------------------------------------------------------------------------------------ predict, repr
@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_predict_from_strings(tok: Any, arch: str) -> None:
    pt = make(tok, arch, prompt="mlp")
    got = pt.predict(TEXTS, batch_size=3)  # encoded batch by batch: other padding, same scores
    assert got.shape == (len(TEXTS), 2)
    torch.testing.assert_close(got, pt.predict(pt.encode(TEXTS)), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="single str"):
        pt.predict("a fine film")  # type: ignore[arg-type]
    assert pt.predict([]).shape == (0, 2)


def test_repr_names_the_lm_instead_of_printing_it(tok: Any) -> None:
    pt = make(tok, "bert", prompt="lstm")
    text = repr(pt)
    assert "BertForMaskedLM (frozen, " in text
    assert PATTERNS["bert"] in text
    assert f"trainable={pt.num_trainable():,}" in text
    assert "BertEmbeddings" not in text
    assert "Linear" not in text.split("prompt=")[0]
    assert text.count("\n") < 10
