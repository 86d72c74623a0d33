"""A word-level vocabulary for the small from-scratch text models (IMDB, tweets).

Pretrained language models bring their own tokenizers (``transformers``); this is for the embedding-bag style
classifiers the regulariser and TaiLr experiments train from scratch. Tokens are lower-cased runs of letters,
digits and apostrophes (CJK characters count one token each); ids 0 and 1 are ``<pad>`` and ``<unk>``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["PAD", "UNK", "Vocab", "tokenize"]

PAD, UNK = 0, 1
_TOKEN = re.compile(r"[\u4e00-\u9fff]|[a-z0-9']+")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens (CJK characters one token each)."""
    return _TOKEN.findall(text.lower())


class Vocab:
    """Word -> id mapping built from training texts only (so no test vocabulary leaks in).

    Args:
        tokens: id order; ``tokens[0] == "<pad>"``, ``tokens[1] == "<unk>"``.

    Example:
        >>> v = Vocab.build(["a good film", "a bad film"], min_freq=1)
        >>> v.encode(["a good plot"], max_len=4).tolist()
        [[2, 5, 1, 0]]
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        if list(tokens[:2]) != ["<pad>", "<unk>"]:
            raise ValueError("tokens must start with '<pad>', '<unk>'")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: Iterable[str], *, max_size: int = 20000, min_freq: int = 2) -> Vocab:
        """The ``max_size`` most frequent tokens seen at least ``min_freq`` times (ties broken alphabetically)."""
        if max_size < 3:
            raise ValueError(f"max_size must be >= 3, got {max_size}")
        counts = Counter(tok for t in texts for tok in tokenize(t))
        ranked = sorted((c for c in counts.items() if c[1] >= min_freq), key=lambda kv: (-kv[1], kv[0]))
        return cls(["<pad>", "<unk>"] + [t for t, _ in ranked[: max_size - 2]])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: Sequence[str], *, max_len: int = 256) -> Tensor:
        """Ids ``(N, max_len)`` int64, truncated / right-padded with ``PAD``."""
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        out = torch.full((len(texts), max_len), PAD, dtype=torch.int64)
        for i, t in enumerate(texts):
            ids = [self.index.get(tok, UNK) for tok in tokenize(t)[:max_len]]
            if ids:
                out[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        return out
