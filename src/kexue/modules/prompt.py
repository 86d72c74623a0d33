"""Continuous prompt parameterisations for P-tuning, and the splice that puts them into ``inputs_embeds``.

P-tuning (Liu et al., *GPT Understands, Too*, arXiv 2103.10385; Su, https://kexue.fm/archives/8295) replaces the words
of a PET template with ``m`` trainable vectors. This file holds the ways of producing those vectors:

* :class:`PromptEncoder` with ``kind="none"``: free vectors (one ``nn.Parameter`` of shape ``(m, H)``);
  ``kind="mlp"``: a position-indexed embedding through ``Linear(H, H) -> ReLU -> Linear(H, H)``; ``kind="lstm"``: the
  paper's ``MLP(BiLSTM(E))`` with a 2-layer bidirectional LSTM of ``H/2`` units per direction (THUDM/P-tuning
  ``LAMA/p_tuning/prompt_encoder.py``). The encoder input is a trainable position embedding, not the vocabulary
  embeddings, and the output replaces the pseudo tokens in every example of the batch. With ``output_init`` (e.g.
  the LM embeddings of a hand-written template's words) the encoders take a **residual form**
  ``output_init + MLP(...)`` whose last ``Linear`` starts at zero, so the prompt equals ``output_init`` exactly at
  step 0 and training moves it from there (the template's cue is kept instead of replaced by random vectors).
* :class:`TokenRows`: Su's variant that trains only a few rows of the LM's own embedding matrix
  (``[unused1..8]`` in his code). Su writes it as ``E * mask + stop_gradient(E) * (1 - mask)``; with AdamW's decoupled
  weight decay that trick still shrinks the "frozen" rows, so here the trainable rows are a **separate parameter**
  initialised from the chosen rows and spliced in where those token ids occur; the LM's matrix is never touched.

:func:`splice_prompts` (and the functional core shared by both modules) writes prompt vectors into given positions of an
``inputs_embeds`` tensor with ``torch.where``, so gradients reach the prompt and nothing else is modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from kexue._validate import check_choice, check_float_tensor, check_int, check_real

__all__ = ["PromptEncoder", "PromptKind", "TokenRows", "splice_prompts"]

PromptKind = Literal["none", "mlp", "lstm"]
_KINDS = ("none", "mlp", "lstm")


def _check_index(name: str, index: object) -> Tensor:
    """An integer tensor (not bool, float or complex): the kinds of index tensors this module reads."""
    if not isinstance(index, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(index).__name__}")
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {index.dtype}")
    return index


def splice_prompts(inputs_embeds: Tensor, prompts: Tensor, prompt_index: Tensor) -> Tensor:
    """Replace the embeddings at prompt positions by prompt vectors.

    Args:
        inputs_embeds: token embeddings ``(B, L, H)``.
        prompts: prompt vectors ``(m, H)``.
        prompt_index: ``(B, L)`` int64, the prompt vector for each position, ``-1`` where the token embedding
            stays.

    Returns:
        ``(B, L, H)``: ``prompts[prompt_index]`` where ``prompt_index >= 0``, ``inputs_embeds`` elsewhere.

    Raises:
        TypeError: float tensors that are not floating point, ``prompt_index`` not an integer tensor.
        ValueError: wrong ranks or shapes, NaN/inf entries, a ``prompt_index`` below -1 or past the last prompt.

    Example:
        >>> e = torch.zeros(1, 3, 2); p = torch.ones(1, 2)
        >>> splice_prompts(e, p, torch.tensor([[-1, 0, -1]]))[0, :, 0].tolist()
        [0.0, 1.0, 0.0]
    """
    check_float_tensor("inputs_embeds", inputs_embeds, ndim=3, allow_empty=True)
    check_float_tensor("prompts", prompts, ndim=2, allow_empty=True)  # a template without prompts has none
    _check_index("prompt_index", prompt_index)
    if prompt_index.shape != inputs_embeds.shape[:2]:
        raise ValueError(
            f"prompt_index must have the shape {tuple(inputs_embeds.shape[:2])} of inputs_embeds' (B, L), got "
            f"{tuple(prompt_index.shape)}"
        )
    if prompts.shape[1] != inputs_embeds.shape[2]:
        raise ValueError(f"prompts width {prompts.shape[1]} != inputs_embeds width {inputs_embeds.shape[2]}")
    if prompt_index.numel():
        lo, hi = int(prompt_index.min()), int(prompt_index.max())
        # -2 or an index past the last vector would otherwise be read as "keep the token" or fail in indexing;
        # checked before the no-prompt shortcut so that an index into an empty prompt table is not ignored
        if lo < -1 or hi >= prompts.shape[0]:
            raise ValueError(
                f"prompt_index must be -1 (keep the token) or a vector in [0, {prompts.shape[0]}) of prompts, got "
                f"values in [{lo}, {hi}]"
            )
    if prompts.shape[0] == 0:
        return inputs_embeds
    is_prompt = (prompt_index >= 0).unsqueeze(-1)  # (B, L, 1)
    gathered = prompts.to(inputs_embeds.dtype)[prompt_index.clamp(min=0)]  # (B, L, H)
    return torch.where(is_prompt, gathered, inputs_embeds)


class PromptEncoder(nn.Module):
    """``m`` continuous prompt vectors of width ``H``: free, through an MLP, or through the paper's
    BiLSTM+MLP.

    Paper: arXiv 2103.10385 §3 ("prompt encoder"), code THUDM/P-tuning ``LAMA/p_tuning/prompt_encoder.py``.

    Args:
        num_tokens: ``m``, the number of prompt vectors.
        hidden_size: ``H``, the LM's embedding width.
        kind: ``"none"`` (free vectors), ``"mlp"`` or ``"lstm"`` (BiLSTM + MLP, the paper's default).
        lstm_dropout: dropout between the two LSTM layers (paper default 0.0).
        init: optional ``(m, H)`` initial values; for ``"none"`` they are the vectors themselves, for the
            encoders the input embedding (e.g. the LM embeddings of real words). Default: ``N(0, 0.02^2)``
            free vectors / ``nn.Embedding``'s ``N(0, 1)`` encoder input as in the paper code.
        output_init: optional ``(m, H)`` values that :meth:`forward` returns at construction. For ``"none"`` the
            vectors start there (same as ``init``). For ``"mlp"`` / ``"lstm"`` the encoder becomes residual:
            ``output_init + MLP(BiLSTM(E))`` with ``output_init`` a frozen buffer, the MLP's last ``Linear``
            zero-initialised (weight and bias, so its output is exactly 0 at step 0) and ``E`` initialised from
            ``init`` if given, else from ``output_init``. Used to start P-tuning from a hand-written template.

    Shape:
        ``forward() -> (m, H)``.

    Raises:
        TypeError: sizes that are not ints, ``lstm_dropout`` not a real number, ``init`` not floating point.
        ValueError: an unknown ``kind``, sizes out of range (an odd ``hidden_size`` for ``"lstm"``),
            ``lstm_dropout`` outside ``[0, 1]``, ``init`` / ``output_init`` of another shape or with NaN/inf
            entries, both ``init`` and ``output_init`` for ``kind="none"``.

    Example:
        >>> enc = PromptEncoder(4, 8, kind="lstm")
        >>> enc().shape
        torch.Size([4, 8])
        >>> start = torch.randn(4, 8)
        >>> torch.equal(PromptEncoder(4, 8, kind="mlp", output_init=start)(), start)
        True
    """

    base: Tensor | None

    def __init__(
        self,
        num_tokens: int,
        hidden_size: int,
        *,
        kind: PromptKind = "lstm",
        lstm_dropout: float = 0.0,
        init: Tensor | None = None,
        output_init: Tensor | None = None,
    ) -> None:
        super().__init__()
        check_choice("kind", kind, _KINDS)
        check_int("num_tokens", num_tokens, low=0)
        check_int("hidden_size", hidden_size, low=1)
        check_real("lstm_dropout", lstm_dropout, low=0.0, high=1.0)
        if kind == "lstm" and hidden_size % 2:
            raise ValueError(f"kind='lstm' needs an even hidden_size (H/2 units per direction), got {hidden_size}")
        for name, t in (("init", init), ("output_init", output_init)):
            if t is not None:
                check_float_tensor(name, t, ndim=2, allow_empty=True)
                if tuple(t.shape) != (num_tokens, hidden_size):
                    raise ValueError(f"{name} must have shape {(num_tokens, hidden_size)}, got {tuple(t.shape)}")
        if kind == "none" and init is not None and output_init is not None:
            raise ValueError("kind='none': init and output_init both set the vectors; pass one of them")
        self.num_tokens = num_tokens
        self.hidden_size = hidden_size
        self.kind: PromptKind = kind
        self.residual = output_init is not None and kind != "none"
        self.register_buffer("base", output_init.detach().clone() if self.residual else None)  # type: ignore[union-attr]
        if kind == "none":
            start = output_init if output_init is not None else init
            w = start.detach().clone() if start is not None else torch.randn(num_tokens, hidden_size) * 0.02
            self.weight = nn.Parameter(w)
            return
        self.embedding = nn.Embedding(max(num_tokens, 1), hidden_size)
        first = init if init is not None else output_init
        if first is not None and num_tokens:
            with torch.no_grad():
                self.embedding.weight[:num_tokens].copy_(first)
        self.lstm: nn.LSTM | None = None
        if kind == "lstm":
            self.lstm = nn.LSTM(
                hidden_size,
                hidden_size // 2,
                num_layers=2,
                dropout=lstm_dropout,
                bidirectional=True,
                batch_first=True,
            )
        last = nn.Linear(hidden_size, hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU(), last)
        if self.residual:
            # LoRA-style zero start: the correction is exactly 0 at step 0, yet the last layer gets gradient at once
            # (its input, the hidden ReLU features, is not zero), so the encoder leaves the template from step 1
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self) -> Tensor:
        if self.kind == "none":
            return self.weight
        if self.num_tokens == 0:
            return self.embedding.weight[:0]
        h = self.embedding.weight[: self.num_tokens].unsqueeze(0)  # (1, m, H)
        if self.lstm is not None:
            h = self.lstm(h)[0]  # (1, m, H): both directions concatenated
        out = self.mlp(h).squeeze(0)
        if self.base is not None:
            out = self.base.to(out.dtype) + out
        return out

    def extra_repr(self) -> str:
        res = ", residual=True" if self.residual else ""
        return f"num_tokens={self.num_tokens}, hidden_size={self.hidden_size}, kind={self.kind!r}{res}"


class TokenRows(nn.Module):
    """Su's "train only a few embedding rows" variant, as a separate parameter (not a mask on the LM's
    matrix).

    Article: https://kexue.fm/archives/8295 (``bojone/P-tuning``: ``mask[1:9] = 1`` over the embedding matrix). The rows
    of ``token_ids`` are copied once into a trainable ``(k, H)`` parameter; :meth:`splice` puts row ``j`` wherever
    ``token_ids[j]`` occurs in ``input_ids``. The LM's embedding matrix stays frozen, so no optimiser (weight decay
    included) can move it. The rows are *input* embeddings only: with a tied output layer, Su's code also uses them as
    output classes; here the output layer keeps the original rows (documented deviation).

    Args:
        embedding_weight: the LM's input embedding matrix ``(V, H)`` (copied, never modified).
        token_ids: the ``k`` vocabulary ids whose rows become trainable.

    Raises:
        TypeError: ``embedding_weight`` not floating point, ``token_ids`` not ints; ``input_ids`` not an integer
            tensor.
        ValueError: ``embedding_weight`` not a finite non-empty ``(V, H)`` matrix, ``token_ids`` repeated or
            outside ``[0, V)``; ``input_ids`` of another shape than ``inputs_embeds``' ``(B, L)``.

    Example:
        >>> E = torch.randn(10, 4); rows = TokenRows(E, [1, 2])
        >>> out = rows.splice(torch.tensor([[1, 5]]), E[torch.tensor([[1, 5]])])
        >>> torch.equal(out, E[torch.tensor([[1, 5]])])
        True
    """

    def __init__(self, embedding_weight: Tensor, token_ids: Sequence[int]) -> None:
        super().__init__()
        check_float_tensor("embedding_weight", embedding_weight, ndim=2)
        vocab = embedding_weight.shape[0]
        if isinstance(token_ids, (str, bytes)) or not isinstance(token_ids, Sequence):
            raise TypeError(f"token_ids must be a sequence of ints, got {type(token_ids).__name__}")
        for i, t in enumerate(token_ids):
            check_int(f"token_ids[{i}]", t, low=0, high=vocab - 1)
        if len(set(token_ids)) != len(token_ids):
            raise ValueError(f"token_ids must be distinct, got {list(token_ids)}")
        token_ids = [int(t) for t in token_ids]
        self.register_buffer("token_ids", torch.tensor(token_ids, dtype=torch.long), persistent=True)
        self.weight = nn.Parameter(embedding_weight.detach()[self.token_ids].clone())

    def prompt_index(self, input_ids: Tensor) -> Tensor:
        """``(B, L)``: the row of each position's token id, ``-1`` for ids that are not trainable."""
        _check_index("input_ids", input_ids)  # a float id would compare equal to a token id and be replaced
        match = input_ids.unsqueeze(-1) == self.token_ids  # (B, L, k)
        return torch.where(match.any(-1), match.long().argmax(-1), torch.full_like(input_ids, -1))

    def splice(self, input_ids: Tensor, inputs_embeds: Tensor) -> Tensor:
        """Replace the embeddings of the trainable token ids by the trainable rows: ``(B, L, H)``."""
        _check_index("input_ids", input_ids)
        if isinstance(inputs_embeds, Tensor) and input_ids.shape != inputs_embeds.shape[:2]:
            raise ValueError(
                f"input_ids must have the shape {tuple(inputs_embeds.shape[:2])} of inputs_embeds' (B, L), got "
                f"{tuple(input_ids.shape)}"
            )
        return splice_prompts(inputs_embeds, self.weight, self.prompt_index(input_ids))

    token_ids: Tensor

    def forward(self) -> Tensor:
        return self.weight

    def extra_repr(self) -> str:
        return f"token_ids={self.token_ids.tolist()}, hidden_size={self.weight.shape[1]}"
