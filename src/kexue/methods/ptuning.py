"""PET and P-tuning on any transformers causal or masked LM: templates, verbalizers, prompts via
``inputs_embeds``.

Article: Su Jianlin, "P-tuning：自动构建模版，释放语言模型潜能", https://kexue.fm/archives/8295; paper: Liu et
al.,
*GPT Understands, Too* (arXiv 2103.10385); PET: Schick & Schütze (arXiv 2001.07676).

A classification example becomes a cloze: a :class:`Template` lays out literal words, the input ``{text}``,
continuous prompt vectors ``{pN}`` and the label slot ``{label}`` in any order; the LM's distribution at the
slot,
restricted to the verbalizer words (one per class), gives the class scores. For a masked LM the slot is
``[MASK]`` (one per label token); for a causal LM the slot must come last and the label word is predicted from
the preceding position. :class:`PTuning` owns the LM (frozen or tuned) and the prompt parameters
(:class:`~kexue.modules.PromptEncoder` free/MLP/BiLSTM+MLP vectors, or Su's few trainable embedding rows
:class:`~kexue.modules.TokenRows`), and optionally adds Su's auxiliary LM / MLM loss on the rest of the
sequence.

Design notes:

* Prompt vectors enter through ``inputs_embeds`` (:func:`~kexue.modules.splice_prompts`), so any
  ``AutoModelForCausalLM`` / ``AutoModelForMaskedLM`` works, at any position, without touching the model.
* Scoring computes the LM head only at the slot positions when the model exposes ``base_model`` plus a head
  (``lm_head`` or BERT's ``cls``): the vocabulary projection is as expensive as a small encoder's body. Models
  without those attributes fall back to the full forward (same numbers, tested).
* Class score = log-probability of the verbalizer word under the full-vocabulary softmax (sum over its tokens
  for multi-token words); the label loss is the cross-entropy over these class scores, i.e. PET's loss
  restricted
  to the verbalizer. Multi-token verbalizers need one forward per class (each class fills the slot with its
  own number of tokens; the masked-LM tokens are scored in parallel, PET's simple variant).
* With a frozen LM, its parameters get ``requires_grad=False``; only the prompt parameters are trainable and
  :meth:`PTuning.prompt_state_dict` saves them alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.modules.prompt import PromptEncoder, PromptKind, TokenRows, splice_prompts

__all__ = ["LMKind", "PTuning", "Template", "extract_features", "lm_kind"]

LMKind = Literal["causal", "mlm"]
_FIELD = re.compile(r"\{(text|label|p\d*)\}")


@dataclass(frozen=True)
class Template:
    """A PET / P-tuning pattern: literal text, ``{text}``, ``{label}`` and ``{pN}`` (N prompt vectors) in any
    order.

    Examples: Su's BERT template ``"{p4}{label}{p4}{text}"``; his GPT template ``"{p4}{text}{p4}{label}"``; a
    hand-written PET pattern ``"{text} All in all, it was {label}."``. ``{p}`` means one vector. Whitespace in
    literal parts is kept as written (it matters for byte-level BPE tokenizers).

    Args:
        pattern: the template string. It must contain ``{label}`` and ``{text}`` exactly once.

    Example:
        >>> Template("{p2} {text} It was {label}.").num_prompts
        2
    """

    pattern: str

    def __post_init__(self) -> None:
        fields = [m.group(1) for m in _FIELD.finditer(self.pattern)]
        if fields.count("label") != 1:
            raise ValueError(f"template must contain the label slot '{{label}}' exactly once, got {self.pattern!r}")
        if fields.count("text") != 1:
            raise ValueError(f"template must contain '{{text}}' exactly once, got {self.pattern!r}")
        leftover = _FIELD.sub("", self.pattern)
        if "{" in leftover or "}" in leftover:
            raise ValueError(
                f"template {self.pattern!r} has an unknown field; allowed: {{text}}, {{label}}, {{p}}, {{pN}}"
            )

    @property
    def parts(self) -> list[tuple[str, str | int]]:
        """``[(kind, value)]`` with kind ``"literal"`` (str), ``"text"``, ``"label"`` or ``"prompt"``
        (count)."""
        out: list[tuple[str, str | int]] = []
        pos = 0
        for m in _FIELD.finditer(self.pattern):
            if m.start() > pos:
                out.append(("literal", self.pattern[pos : m.start()]))
            f = m.group(1)
            if f.startswith("p"):
                out.append(("prompt", int(f[1:]) if len(f) > 1 else 1))
            else:
                out.append((f, f))
            pos = m.end()
        if pos < len(self.pattern):
            out.append(("literal", self.pattern[pos:]))
        return out

    @property
    def num_prompts(self) -> int:
        """Total number of prompt vectors ``m``."""
        return sum(int(v) for k, v in self.parts if k == "prompt")

    def label_is_last(self) -> bool:
        """Whether nothing but whitespace follows the label slot (required for causal LMs)."""
        kinds = self.parts
        i = [k for k, _ in kinds].index("label")
        return all(k == "literal" and not str(v).strip() for k, v in kinds[i + 1 :])


def lm_kind(model: nn.Module) -> LMKind:
    """``"causal"`` or ``"mlm"`` from a transformers model's class name (``...ForCausalLM`` /
    ``...ForMaskedLM``).

    Raises:
        TypeError: the model is neither (e.g. a bare ``BertModel`` or a classifier).
    """
    name = type(model).__name__
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal"
    if name.endswith("ForMaskedLM"):
        return "mlm"
    raise TypeError(
        f"unknown model type {name}: expected a transformers *ForCausalLM or *ForMaskedLM model (pass kind= "
        "to override)"
    )


def _max_positions(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


class PTuning(nn.Module):
    """PET / P-tuning classifier around a pretrained LM.

    Article: https://kexue.fm/archives/8295 (Su), arXiv 2103.10385 (P-tuning), arXiv 2001.07676 (PET).

    Args:
        model: a transformers ``*ForCausalLM`` or ``*ForMaskedLM`` (anything with ``get_input_embeddings()``
            and an ``inputs_embeds`` forward returning ``.logits``).
        tokenizer: its tokenizer (a ``PreTrainedTokenizer(Fast)``).
        template: a :class:`Template` or its pattern string.
        verbalizer: one label word per class, written as the tokenizer should see it (``" great"`` with its
            leading space for byte-level BPE).
        prompt: ``"none"`` (free vectors), ``"mlp"`` or ``"lstm"`` (paper), the parameterisation of ``{pN}``.
        trainable_tokens: Su's variant: these vocabulary tokens (e.g. ``["[unused1]", ...]`` written literally
            in the template) get trainable input-embedding rows (a separate parameter).
        freeze_lm: freeze every LM parameter (P-tuning's few-label regime). ``False`` tunes LM and prompt
            jointly (use :meth:`param_groups` for separate learning rates).
        single_token: require each verbalizer word to be exactly one token (one forward scores all classes).
        aux_weight: weight of Su's auxiliary loss (``0`` = label loss only): causal LM: next-token loss on
            every non-prompt token; masked LM: 15% random masking (80/10/10) of the other text tokens, in the same
            forward. The label slot is never overwritten.
        mlm_probability: masking rate of the auxiliary MLM loss.
        max_length: maximum sequence length; the text is truncated (from the end) to fit the template.
        kind: ``"causal"`` or ``"mlm"``; inferred from the model class when ``None``.
        add_bos: prepend the tokenizer's BOS token (causal LMs; default: no). Masked LMs always get
            ``[CLS] ... [SEP]``.

    Raises:
        ValueError: causal LM with the label slot not last; verbalizer word unknown/empty/multi-token when
            ``single_token``; ``max_length`` above the model's position limit or too short for the template.
        TypeError: unknown model type.

    Example:
        >>> from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast  # doctest: +SKIP
        >>> pt = PTuning(model, tok, "{p4}{label}{p4}{text}", ["bad", "good"])  # doctest: +SKIP
        >>> enc = pt.encode(["a fine film"]); pt.predict(enc).shape  # doctest: +SKIP
        torch.Size([1, 2])
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        template: Template | str,
        verbalizer: list[str],
        *,
        prompt: PromptKind = "lstm",
        trainable_tokens: list[str] | None = None,
        freeze_lm: bool = True,
        single_token: bool = True,
        aux_weight: float = 0.0,
        mlm_probability: float = 0.15,
        max_length: int = 128,
        kind: LMKind | None = None,
        add_bos: bool = False,
    ) -> None:
        super().__init__()
        self.lm: Any = model  # a transformers PreTrainedModel (typed loosely: no stubs for its attributes)
        self.tokenizer = tokenizer
        self.kind: LMKind = kind if kind is not None else lm_kind(model)
        if self.kind not in ("causal", "mlm"):
            raise ValueError(f"kind must be 'causal' or 'mlm', got {self.kind!r}")
        self.template = template if isinstance(template, Template) else Template(template)
        if self.kind == "causal" and not self.template.label_is_last():
            raise ValueError(
                f"a causal LM predicts the label word last: the template must end with '{{label}}', got "
                f"{self.template.pattern!r}"
            )
        if len(verbalizer) < 2:
            raise ValueError(f"verbalizer needs at least 2 label words, got {verbalizer!r}")
        if aux_weight < 0 or not 0 < mlm_probability < 1:
            raise ValueError(f"need aux_weight >= 0 and 0 < mlm_probability < 1, got {aux_weight}, {mlm_probability}")
        limit = _max_positions(model)
        if limit is not None and max_length > limit:
            raise ValueError(f"max_length={max_length} exceeds the model's {limit} positions")
        self.max_length = max_length
        self.aux_weight = aux_weight
        self.mlm_probability = mlm_probability
        self.add_bos = add_bos
        self.freeze_lm = freeze_lm
        self.verbalizer = list(verbalizer)
        self.single_token = single_token

        emb = cast(Any, model).get_input_embeddings()
        if not isinstance(emb, nn.Embedding):
            raise TypeError(f"model.get_input_embeddings() must be an nn.Embedding, got {type(emb).__name__}")
        self.vocab_size = emb.num_embeddings
        self.pad_id: int = self._special("pad_token_id", 0) or 0
        self.mask_id = self._special("mask_token_id", None) if self.kind == "mlm" else None
        if self.kind == "mlm" and self.mask_id is None:
            raise ValueError("a masked LM needs tokenizer.mask_token_id")

        label_ids = [self._word_ids(w) for w in self.verbalizer]
        width = max(len(t) for t in label_ids)
        self.register_buffer(
            "label_ids", torch.tensor([t + [-1] * (width - len(t)) for t in label_ids], dtype=torch.long)
        )
        self.multi_token = width > 1
        # a template without {pN} (plain PET) gets an empty prompt: no encoder parameters at all
        m = self.template.num_prompts
        self.prompt = PromptEncoder(m, emb.embedding_dim, kind=prompt if m else "none")
        self.rows: TokenRows | None = None
        self._row_tokens: dict[str, int] = {}
        if trainable_tokens:
            for t in trainable_tokens:
                tid = tokenizer.convert_tokens_to_ids(t)
                if tid is None or tid == self._special("unk_token_id", None):
                    tid = self._word_ids(t, single=True)[0]
                self._row_tokens[t] = int(tid)
            self.rows = TokenRows(emb.weight, list(self._row_tokens.values()))
        self.literal_ids = [
            self._tokenize_literal(str(v)) if k == "literal" else [] for k, v in self.template.parts
        ]  # per template part
        if freeze_lm:
            self.lm.requires_grad_(False)
        self._head_fast = self._find_head()

    # ----------------------------------------------------------------------------------------- tokenisation
    def _special(self, attr: str, default: int | None) -> int | None:
        v = getattr(self.tokenizer, attr, None)
        return int(v) if v is not None else default

    def _tokenize(self, s: str) -> list[int]:
        return list(self.tokenizer(s, add_special_tokens=False)["input_ids"])

    def _tokenize_literal(self, s: str) -> list[int]:
        """Template words; the trainable tokens (e.g. ``[unused1]``) map to their single vocabulary id."""
        if not self._row_tokens:
            return self._tokenize(s)
        pieces = re.split("(" + "|".join(re.escape(t) for t in self._row_tokens) + ")", s)
        out: list[int] = []
        for piece in pieces:
            if piece in self._row_tokens:
                out.append(self._row_tokens[piece])
            elif piece:
                out += self._tokenize(piece)
        return out

    def _word_ids(self, word: str, *, single: bool | None = None) -> list[int]:
        single = self.single_token if single is None else single
        ids = self._tokenize(word)
        unk = self._special("unk_token_id", None)
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

    def _layout(self, text_ids: list[int], slot: list[int] | None) -> tuple[list[int], list[int], list[int]]:
        """``(ids, prompt_index, slot_positions)`` for one example; ``slot`` = ids placed in the label slot.

        For a masked LM the slot holds ``len(label)`` mask tokens; for a causal LM it holds the label word
        itself
        (``None`` in single-token mode: nothing, the word is predicted from the last position).
        """
        ids: list[int] = []
        pidx: list[int] = []
        slot_pos: list[int] = []
        if self.kind == "mlm":
            ids.append(self._special("cls_token_id", self.pad_id) or 0)
            pidx.append(-1)
        elif self.add_bos and self._special("bos_token_id", None) is not None:
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
            else:  # label slot
                if self.kind == "mlm":
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
            ids.append(self._special("sep_token_id", self.pad_id) or 0)
            pidx.append(-1)
        return ids, pidx, slot_pos

    def encode(self, texts: list[str], *, truncate: bool = True) -> dict[str, Tensor]:
        """Tokenise ``texts`` into the template: a dict of tensors sharing the first dimension ``B``.

        Keys: ``input_ids``, ``attention_mask``, ``prompt_index`` (``-1`` or the prompt vector), each
        ``(B, G, L)``, and ``slot_pos`` ``(B, G, S)`` (``-1`` padded), with ``G = 1`` when every label word is
        one
        token and ``G = C`` (one sequence per class) otherwise. Sequences are right-padded.

        Raises:
            ValueError: the template alone does not fit ``max_length``, or a text does not fit and
                ``truncate=False``.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, got a single str")
        slots: list[list[int] | None]
        if self.multi_token:
            slots = [[int(t) for t in row if t >= 0] for row in self.label_ids.tolist()]
        else:
            slots = [[int(self.label_ids[0, 0])] if self.kind == "mlm" else None]
        overhead = max(len(self._layout([], s)[0]) for s in slots)
        room = self.max_length - overhead
        if room < 1:
            raise ValueError(
                f"the template takes {overhead} tokens, leaving no room for text within max_length={self.max_length}"
            )
        rows: list[list[tuple[list[int], list[int], list[int]]]] = []
        for i, t in enumerate(texts):
            tid = self._tokenize(t)
            if len(tid) > room:
                if not truncate:
                    raise ValueError(
                        f"text {i} has {len(tid)} tokens, only {room} fit in max_length={self.max_length} "
                        "(pass truncate=True)"
                    )
                tid = tid[:room]
            rows.append([self._layout(tid, s) for s in slots])
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

    # ----------------------------------------------------------------------------------------- forward
    label_ids: Tensor

    def _find_head(self) -> nn.Module | None:
        base = getattr(self.lm, "base_model", None)
        if base is None or base is self.lm:
            return None
        for name in ("lm_head", "cls"):
            head = getattr(self.lm, name, None)
            if isinstance(head, nn.Module):
                return head
        return None

    def embed(self, input_ids: Tensor, prompt_index: Tensor) -> Tensor:
        """LM input embeddings with prompt vectors / trainable rows spliced in: ``(N, L, H)``."""
        emb = self.lm.get_input_embeddings()(input_ids)
        if self.rows is not None:
            emb = self.rows.splice(input_ids, emb)
        return splice_prompts(emb, self.prompt(), prompt_index)

    def _hidden_and_head(self, embeds: Tensor, attention_mask: Tensor) -> tuple[Tensor | None, Any]:
        """``(hidden (N, L, H), head)`` via the base model, or ``(None, full logits)`` when no head is
        known."""
        if self._head_fast is not None:
            out = self.lm.base_model(inputs_embeds=embeds, attention_mask=attention_mask)
            return out[0], self._head_fast
        return None, self.lm(inputs_embeds=embeds, attention_mask=attention_mask).logits

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        prompt_index: Tensor,
        slot_pos: Tensor,
        labels: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Class scores, and the loss when ``labels`` are given.

        Args:
            input_ids, attention_mask, prompt_index: ``(B, G, L)`` from :meth:`encode`.
            slot_pos: ``(B, G, S)`` from :meth:`encode`.
            labels: ``(B,)`` class indices.

        Returns:
            ``{"logits": (B, C) log p(label word)}``; with ``labels`` also ``loss`` (label cross-entropy over
            the
            verbalizer + ``aux_weight * aux_loss``), ``label_loss``, ``aux_loss`` and ``acc``.
        """
        B, G, L = input_ids.shape
        C = self.label_ids.shape[0]
        ids = input_ids.reshape(B * G, L)
        mask = attention_mask.reshape(B * G, L)
        pidx = prompt_index.reshape(B * G, L)
        spos = slot_pos.reshape(B * G, -1)
        aux_on = labels is not None and self.aux_weight > 0 and self.training
        mlm_targets: Tensor | None = None
        if aux_on and self.kind == "mlm":
            ids, mlm_targets = self._random_mask(ids, mask, pidx, spos)
        embeds = self.embed(ids, pidx)
        hidden, head = self._hidden_and_head(embeds, mask)
        if aux_on and self.kind == "causal" and hidden is not None:
            # the LM loss needs the vocabulary projection everywhere: do it once, read the slot scores from it
            hidden, head = None, head(hidden)

        safe = spos.clamp(min=0)  # (N, S)
        if hidden is not None:
            h = hidden.gather(1, safe.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # (N, S, H)
            slot_logits = head(h)  # (N, S, V)
        else:
            slot_logits = head.gather(1, safe.unsqueeze(-1).expand(-1, -1, head.shape[-1]))
        # log-softmax in at least float32 (half-precision LMs), float64 stays float64
        work = torch.promote_types(slot_logits.dtype, torch.float32)
        logp = slot_logits.to(work).log_softmax(-1)  # (N, S, V)
        if G == 1:
            # single-token words: every class's score read from the one slot
            tok = self.label_ids[:, 0]  # (C,)
            scores = logp[:, 0, :].index_select(-1, tok).reshape(B, C)
        else:
            tgt = self.label_ids.repeat(B, 1)  # (B*C, S)
            S = min(tgt.shape[1], logp.shape[1])
            tok_lp = logp[:, :S].gather(-1, tgt[:, :S].clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (N, S)
            valid = (tgt[:, :S] >= 0) & (spos[:, :S] >= 0)
            scores = (tok_lp * valid).sum(-1).reshape(B, C)
        scores = scores.to(embeds.dtype)
        out: dict[str, Tensor] = {"logits": scores}
        if labels is None:
            return out
        label_loss = F.cross_entropy(scores, labels)
        aux = scores.new_zeros(())
        if aux_on:
            if self.kind == "mlm":
                assert mlm_targets is not None
                aux = self._mlm_aux(hidden, head, mlm_targets)
            else:
                aux = self._lm_aux(hidden, head, ids, mask, pidx, labels, G)
        out["loss"] = label_loss + self.aux_weight * aux
        out["label_loss"] = label_loss.detach()
        out["aux_loss"] = aux.detach()
        out["acc"] = (scores.argmax(-1) == labels).float().mean()
        return out

    def _random_mask(self, ids: Tensor, mask: Tensor, pidx: Tensor, spos: Tensor) -> tuple[Tensor, Tensor]:
        """BERT masking (15%: 80% [MASK], 10% random, 10% kept) of the real text tokens; targets ``-100``
        else."""
        cand = (mask > 0) & (pidx < 0)
        for name in ("cls_token_id", "sep_token_id", "pad_token_id"):
            sid = self._special(name, None)
            if sid is not None:
                cand &= ids != sid
        cand.scatter_(1, spos.clamp(min=0), False)  # never the label slot (Su forces it back to [MASK])
        pick = cand & (torch.rand(ids.shape, device=ids.device) < self.mlm_probability)
        targets = torch.where(pick, ids, torch.full_like(ids, -100))
        r = torch.rand(ids.shape, device=ids.device)
        new = torch.where(pick & (r < 0.8), torch.full_like(ids, int(self.mask_id or 0)), ids)
        rand_tok = torch.randint(0, self.vocab_size, ids.shape, device=ids.device)
        new = torch.where(pick & (r >= 0.8) & (r < 0.9), rand_tok, new)
        return new, targets

    def _mlm_aux(self, hidden: Tensor | None, head: Any, targets: Tensor) -> Tensor:
        sel = targets >= 0
        if not bool(sel.any()):
            return targets.new_zeros((), dtype=torch.float32)
        logits = head(hidden[sel]) if hidden is not None else head[sel]  # (n, V)
        return F.cross_entropy(logits.float(), targets[sel])

    def _lm_aux(
        self,
        hidden: Tensor | None,
        head: Any,
        ids: Tensor,
        mask: Tensor,
        pidx: Tensor,
        labels: Tensor,
        G: int,
    ) -> Tensor:
        """Next-token loss on every real, non-prompt token after the first (the true class's sequence)."""
        if G > 1:
            # keep the sequence that holds the true label word
            B = labels.shape[0]
            rows = torch.arange(B, device=ids.device) * G + labels
            ids, mask, pidx = ids[rows], mask[rows], pidx[rows]
            hidden = hidden[rows] if hidden is not None else None
            head = head if hidden is not None else head[rows]
        logits = head(hidden) if hidden is not None else head  # (N, L, V)
        # shift the targets, not the logits: position t predicts token t + 1 (no copy of the (N, L, V) tensor)
        tgt = ids.masked_fill((mask == 0) | (pidx >= 0), -100).roll(-1, dims=1)
        tgt[:, -1] = -100
        if not bool((tgt >= 0).any()):
            return logits.new_zeros((), dtype=torch.float32)
        work = torch.promote_types(logits.dtype, torch.float32)
        return F.cross_entropy(logits.to(work).reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def predict(self, encoding: dict[str, Tensor], *, batch_size: int = 32) -> Tensor:
        """Class scores ``(B, C)`` (CPU) for an :meth:`encode` result, in eval mode and batches."""
        was = self.training
        self.eval()
        dev = self.label_ids.device
        n = encoding["input_ids"].shape[0]
        keys = ("input_ids", "attention_mask", "prompt_index", "slot_pos")
        outs = []
        for i in range(0, n, batch_size):
            args = [encoding[k][i : i + batch_size].to(dev) for k in keys]
            outs.append(self(*args)["logits"].cpu())
        self.train(was)
        return torch.cat(outs)

    # ----------------------------------------------------------------------------------------- parameters
    def prompt_parameters(self) -> list[nn.Parameter]:
        """The prompt encoder's and the trainable rows' parameters."""
        ps = [p for p in self.prompt.parameters() if p.numel() > 0]
        if self.rows is not None:
            ps += list(self.rows.parameters())
        return ps

    def param_groups(
        self, *, lr_prompt: float, lr_lm: float | None = None, weight_decay: float = 0.0
    ) -> list[dict[str, Any]]:
        """Optimiser groups: the prompt parameters at ``lr_prompt``, the LM (when tuned) at ``lr_lm``.

        The paper tunes the LM jointly with a larger learning rate for the prompt; a frozen LM contributes no
        group. Example: ``torch.optim.AdamW(pt.param_groups(lr_prompt=6e-4, lr_lm=1e-5))``.
        """
        groups: list[dict[str, Any]] = []
        prompt = [p for p in self.prompt_parameters() if p.requires_grad]
        if prompt:
            groups.append({"params": prompt, "lr": lr_prompt, "weight_decay": weight_decay})
        if not self.freeze_lm:
            lm = [p for p in self.lm.parameters() if p.requires_grad]
            groups.append({"params": lm, "lr": lr_lm if lr_lm is not None else lr_prompt, "weight_decay": weight_decay})
        if not groups:
            raise ValueError("nothing to train: the LM is frozen and the template has no prompt vectors or rows")
        return groups

    def num_trainable(self) -> int:
        """Number of trainable scalars (prompt parameters, plus the LM when tuned)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def prompt_state_dict(self) -> dict[str, Any]:
        """The prompt parameters alone (no LM weights), with the template and sizes for checking on load."""
        state: dict[str, Any] = {
            "template": self.template.pattern,
            "verbalizer": self.verbalizer,
            "prompt": {k: v.detach().cpu().clone() for k, v in self.prompt.state_dict().items()},
            "prompt_kind": self.prompt.kind,
        }
        if self.rows is not None:
            state["rows"] = {k: v.detach().cpu().clone() for k, v in self.rows.state_dict().items()}
        return state

    def load_prompt_state_dict(self, state: dict[str, Any]) -> None:
        """Load :meth:`prompt_state_dict` output; raises ``ValueError`` on a template / encoder mismatch."""
        if state.get("template") != self.template.pattern or state.get("prompt_kind") != self.prompt.kind:
            raise ValueError(
                f"prompt state is for template {state.get('template')!r} / {state.get('prompt_kind')!r}, "
                "this "
                f"model has {self.template.pattern!r} / {self.prompt.kind!r}"
            )
        self.prompt.load_state_dict(state["prompt"])
        if ("rows" in state) != (self.rows is not None):
            raise ValueError("prompt state and model disagree on trainable_tokens")
        if self.rows is not None:
            self.rows.load_state_dict(state["rows"])

    def save_prompt(self, path: str | Path) -> None:
        """Write :meth:`prompt_state_dict` to ``path`` (a few KB to MB; the LM is not saved)."""
        torch.save(self.prompt_state_dict(), Path(path))

    def load_prompt(self, path: str | Path) -> None:
        """Read a file written by :meth:`save_prompt`."""
        self.load_prompt_state_dict(torch.load(Path(path), map_location="cpu", weights_only=True))

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, template={self.template.pattern!r}, verbalizer={self.verbalizer!r}, "
            f"freeze_lm={self.freeze_lm}, aux_weight={self.aux_weight}"
        )


@torch.no_grad()
def extract_features(
    model: nn.Module, tokenizer: Any, texts: list[str], *, max_length: int = 128, batch_size: int = 32
) -> Tensor:
    """Mean-pooled last hidden states of a transformers LM over the real tokens: ``(N, H)`` float32 (CPU).

    The linear-probe baseline's features (the LM frozen). Masked LMs get ``[CLS] ... [SEP]``.
    """
    base = getattr(model, "base_model", model)
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[i : i + batch_size],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        h = base(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev))[0]
        m = enc["attention_mask"].to(dev).unsqueeze(-1).to(h.dtype)
        out.append(((h * m).sum(1) / m.sum(1)).float().cpu())
    model.train(was)
    return torch.cat(out)
