"""Token layout of a template: texts -> ``input_ids``, prompt positions and label-slot positions (no model).

For a masked LM the slot is one ``[MASK]`` per label token inside ``[CLS] ... [SEP]``; for a causal LM the slot
comes last and the label word is read from the preceding position (single-token words) or placed in the slot
and scored token by token (multi-token words, one sequence per class). Prompt positions hold placeholder ids
whose embeddings the model overwrites.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from .template import LMKind, Template

__all__ = ["PromptLayout"]

_Row = tuple[list[int], list[int], list[int]]  # (ids, prompt_index, slot_positions) of one sequence


class PromptLayout:
    """Tokenises texts into a :class:`~kexue.methods.ptuning.Template` for one LM kind.

    Args:
        tokenizer: a transformers tokenizer (anything callable as ``tokenizer(s, add_special_tokens=False)``
            returning ``{"input_ids": [...]}`` with ``*_token_id`` attributes).
        template: the template.
        verbalizer: one label word per class, as the tokenizer should see it (``" great"`` with its leading
            space for byte-level BPE).
        kind: ``"causal"`` or ``"mlm"``.
        vocab_size: the LM's input-embedding rows (ids must be below it).
        max_length: maximum sequence length; texts are truncated (from the end) to fit.
        single_token: require each verbalizer word to be exactly one token.
        trainable_tokens: vocabulary tokens written literally in the template that map to their single id
            (Su's ``[unused1]`` rows).
        add_bos: prepend the tokenizer's BOS token (causal LMs).

    Raises:
        ValueError: a causal template whose label is not last; fewer than 2 label words; a word not in the
            vocabulary, multi-token under ``single_token``, or outside ``vocab_size``; a masked LM tokenizer
            without ``mask_token_id``.
    """

    def __init__(
        self,
        tokenizer: Any,
        template: Template,
        verbalizer: list[str],
        *,
        kind: LMKind,
        vocab_size: int,
        max_length: int,
        single_token: bool = True,
        trainable_tokens: list[str] | None = None,
        add_bos: bool = False,
    ) -> None:
        if kind not in ("causal", "mlm"):
            raise ValueError(f"kind must be 'causal' or 'mlm', got {kind!r}")
        if kind == "causal" and not template.label_is_last():
            raise ValueError(
                f"a causal LM predicts the label word last: the template must end with '{{label}}', got "
                f"{template.pattern!r}"
            )
        if isinstance(verbalizer, str) or len(verbalizer) < 2:
            raise ValueError(f"verbalizer needs a list of at least 2 label words, got {verbalizer!r}")
        self.tokenizer = tokenizer
        self.template = template
        self.verbalizer = list(verbalizer)
        self.kind: LMKind = kind
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.single_token = single_token
        self.add_bos = add_bos
        self.pad_id: int = self.special("pad_token_id", 0) or 0
        self.mask_id = self.special("mask_token_id", None) if kind == "mlm" else None
        if kind == "mlm" and self.mask_id is None:
            raise ValueError("a masked LM needs tokenizer.mask_token_id")
        self.label_ids: list[list[int]] = [self._word_ids(w) for w in self.verbalizer]
        self.multi_token = max(len(t) for t in self.label_ids) > 1
        self.row_tokens: dict[str, int] = {}
        for t in trainable_tokens or []:
            tid = tokenizer.convert_tokens_to_ids(t)
            if tid is None or tid == self.special("unk_token_id", None):
                tid = self._word_ids(t, single=True)[0]
            self.row_tokens[t] = int(tid)
        self.literal_ids = [self._tokenize_literal(str(v)) if k == "literal" else [] for k, v in template.parts]

    # ----------------------------------------------------------------------------------------- tokens
    def special(self, attr: str, default: int | None) -> int | None:
        """The tokenizer's ``attr`` id (e.g. ``"cls_token_id"``), or ``default`` when it has none."""
        v = getattr(self.tokenizer, attr, None)
        return int(v) if v is not None else default

    def special_ids(self) -> list[int]:
        """``[CLS]``, ``[SEP]`` and padding ids that the tokenizer defines (never masked by the aux MLM loss)."""
        ids = (self.special(n, None) for n in ("cls_token_id", "sep_token_id", "pad_token_id"))
        return [i for i in ids if i is not None]

    def tokenize(self, s: str) -> list[int]:
        """Token ids of ``s`` without special tokens."""
        return list(self.tokenizer(s, add_special_tokens=False)["input_ids"])

    def _tokenize_literal(self, s: str) -> list[int]:
        """Template words; the trainable tokens (e.g. ``[unused1]``) map to their single vocabulary id."""
        if not self.row_tokens:
            return self.tokenize(s)
        pieces = re.split("(" + "|".join(re.escape(t) for t in self.row_tokens) + ")", s)
        out: list[int] = []
        for piece in pieces:
            if piece in self.row_tokens:
                out.append(self.row_tokens[piece])
            elif piece:
                out += self.tokenize(piece)
        return out

    def _word_ids(self, word: str, *, single: bool | None = None) -> list[int]:
        single = self.single_token if single is None else single
        ids = self.tokenize(word)
        unk = self.special("unk_token_id", None)
        if not ids or (unk is not None and unk in ids):
            raise ValueError(f"verbalizer word {word!r} is not in the vocabulary (tokenises to {ids})")
        if single and len(ids) != 1:
            raise ValueError(
                f"verbalizer word {word!r} tokenises to {len(ids)} tokens {ids}; single_token=True needs one "
                "(use single_token=False for multi-token words)"
            )
        if any(not 0 <= i < self.vocab_size for i in ids):
            raise ValueError(f"verbalizer word {word!r} has ids {ids} outside the model's {self.vocab_size} rows")
        return ids

    def label_tensor(self) -> Tensor:
        """``(C, W)`` int64 label-word ids, right-padded with ``-1``."""
        width = max(len(t) for t in self.label_ids)
        return torch.tensor([t + [-1] * (width - len(t)) for t in self.label_ids], dtype=torch.long)

    # ----------------------------------------------------------------------------------------- layout
    def row(self, text_ids: list[int], slot: list[int] | None) -> _Row:
        """``(ids, prompt_index, slot_positions)`` for one sequence; ``slot`` = ids placed in the label slot.

        For a masked LM the slot holds ``len(slot)`` mask tokens; for a causal LM it holds the label word itself
        (``None`` in single-token mode: nothing, the word is predicted from the last position).
        """
        ids: list[int] = []
        pidx: list[int] = []
        slot_pos: list[int] = []
        if self.kind == "mlm":
            ids.append(self.special("cls_token_id", self.pad_id) or 0)
            pidx.append(-1)
        elif self.add_bos and self.special("bos_token_id", None) is not None:
            ids.append(int(self.tokenizer.bos_token_id))
            pidx.append(-1)
        p = 0
        for (k, v), lit in zip(self.template.parts, self.literal_ids):
            if k == "literal":
                ids += lit
                pidx += [-1] * len(lit)
            elif k == "text":
                ids += text_ids
                pidx += [-1] * len(text_ids)
            elif k == "prompt":
                n = int(v)
                ids += [self.pad_id] * n  # placeholder ids: their embeddings are overwritten
                pidx += list(range(p, p + n))
                p += n
            elif self.kind == "mlm":  # label slot
                assert slot is not None
                slot_pos += list(range(len(ids), len(ids) + len(slot)))
                ids += [int(self.mask_id or 0)] * len(slot)
                pidx += [-1] * len(slot)
            elif slot is None:
                slot_pos.append(len(ids) - 1)
            else:
                # position t predicts token t + 1: the label tokens are read one position earlier
                slot_pos += list(range(len(ids) - 1, len(ids) - 1 + len(slot)))
                ids += slot
                pidx += [-1] * len(slot)
        if self.kind == "mlm":
            ids.append(self.special("sep_token_id", self.pad_id) or 0)
            pidx.append(-1)
        return ids, pidx, slot_pos

    def slots(self) -> list[list[int] | None]:
        """What each of the ``G`` sequences per example holds in the label slot."""
        if self.multi_token:
            return [[t for t in row] for row in self.label_ids]
        return [[self.label_ids[0][0]] if self.kind == "mlm" else None]

    def encode(self, texts: list[str], *, truncate: bool = True) -> dict[str, Tensor]:
        """Tokenise ``texts`` into the template: a dict of tensors sharing the first dimension ``B``.

        Keys: ``input_ids``, ``attention_mask``, ``prompt_index`` (``-1`` or the prompt vector), each
        ``(B, G, L)``, and ``slot_pos`` ``(B, G, S)`` (``-1`` padded), with ``G = 1`` when every label word is one
        token and ``G = C`` (one sequence per class) otherwise. Sequences are right-padded.

        Raises:
            TypeError: ``texts`` is a single string.
            ValueError: the template alone does not fit ``max_length``, or a text does not fit and
                ``truncate=False``.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, got a single str")
        slots = self.slots()
        overhead = max(len(self.row([], s)[0]) for s in slots)
        room = self.max_length - overhead
        if room < 1:
            raise ValueError(
                f"the template takes {overhead} tokens, leaving no room for text within max_length={self.max_length}"
            )
        rows: list[list[_Row]] = []
        for i, t in enumerate(texts):
            tid = self.tokenize(t)
            if len(tid) > room:
                if not truncate:
                    raise ValueError(
                        f"text {i} has {len(tid)} tokens, only {room} fit in max_length={self.max_length} "
                        "(pass truncate=True)"
                    )
                tid = tid[:room]
            rows.append([self.row(tid, s) for s in slots])
        B, G = len(texts), len(slots)
        L = max(len(r[0]) for ex in rows for r in ex)
        S = max(len(r[2]) for ex in rows for r in ex)
        input_ids = torch.full((B, G, L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((B, G, L), dtype=torch.long)
        pidx = torch.full((B, G, L), -1, dtype=torch.long)
        slot_pos = torch.full((B, G, S), -1, dtype=torch.long)
        for b, ex in enumerate(rows):
            for g, (ids, pi, sp) in enumerate(ex):
                input_ids[b, g, : len(ids)] = torch.tensor(ids)
                attn[b, g, : len(ids)] = 1
                pidx[b, g, : len(pi)] = torch.tensor(pi)
                slot_pos[b, g, : len(sp)] = torch.tensor(sp)
        return {"input_ids": input_ids, "attention_mask": attn, "prompt_index": pidx, "slot_pos": slot_pos}
