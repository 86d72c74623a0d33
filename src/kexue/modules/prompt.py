"""Continuous prompt parameterisations for P-tuning, and the splice that puts them into ``inputs_embeds``.

P-tuning (Liu et al., *GPT Understands, Too*, arXiv 2103.10385; Su, https://kexue.fm/archives/8295) replaces
the
words of a PET template with ``m`` trainable vectors. This file holds the ways of producing those vectors:

* :class:`PromptEncoder` with ``kind="none"``: free vectors (one ``nn.Parameter`` of shape ``(m, H)``);
  ``kind="mlp"``: a position-indexed embedding through ``Linear(H, H) -> ReLU -> Linear(H, H)``;
  ``kind="lstm"``: the paper's ``MLP(BiLSTM(E))`` with a 2-layer bidirectional LSTM of ``H/2`` units per
  direction
  (THUDM/P-tuning ``LAMA/p_tuning/prompt_encoder.py``). The encoder input is a trainable position embedding,
  not
  the vocabulary embeddings, and the output replaces the pseudo tokens in every example of the batch.
* :class:`TokenRows`: Su's variant that trains only a few rows of the LM's own embedding matrix
  (``[unused1..8]``
  in his code). Su writes it as ``E * mask + stop_gradient(E) * (1 - mask)``; with AdamW's decoupled weight
  decay
  that trick still shrinks the "frozen" rows, so here the trainable rows are a **separate parameter**
  initialised
  from the chosen rows and spliced in where those token ids occur; the LM's matrix is never touched.

:func:`splice_prompts` (and the functional core shared by both modules) writes prompt vectors into given
positions
of an ``inputs_embeds`` tensor with ``torch.where``, so gradients reach the prompt and nothing else is
modified.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["PromptEncoder", "PromptKind", "TokenRows", "splice_prompts"]

PromptKind = Literal["none", "mlp", "lstm"]
_KINDS = ("none", "mlp", "lstm")


def splice_prompts(inputs_embeds: Tensor, prompts: Tensor, prompt_index: Tensor) -> Tensor:
    """Replace the embeddings at prompt positions by prompt vectors.

    Args:
        inputs_embeds: token embeddings ``(B, L, H)``.
        prompts: prompt vectors ``(m, H)``.
        prompt_index: ``(B, L)`` int64, the prompt vector for each position, ``-1`` where the token embedding
            stays.

    Returns:
        ``(B, L, H)``: ``prompts[prompt_index]`` where ``prompt_index >= 0``, ``inputs_embeds`` elsewhere.

    Example:
        >>> e = torch.zeros(1, 3, 2); p = torch.ones(1, 2)
        >>> splice_prompts(e, p, torch.tensor([[-1, 0, -1]]))[0, :, 0].tolist()
        [0.0, 1.0, 0.0]
    """
    if inputs_embeds.dim() != 3 or prompts.dim() != 2:
        raise ValueError(
            f"inputs_embeds must be (B, L, H) and prompts (m, H), got {tuple(inputs_embeds.shape)} and "
            f"{tuple(prompts.shape)}"
        )
    if prompt_index.shape != inputs_embeds.shape[:2]:
        raise ValueError(
            f"prompt_index must have shape {tuple(inputs_embeds.shape[:2])}, got {tuple(prompt_index.shape)}"
        )
    if prompts.shape[1] != inputs_embeds.shape[2]:
        raise ValueError(f"prompt width {prompts.shape[1]} != embedding width {inputs_embeds.shape[2]}")
    if prompts.shape[0] == 0:
        return inputs_embeds
    if int(prompt_index.max()) >= prompts.shape[0]:
        raise ValueError(f"prompt_index refers to vector {int(prompt_index.max())} of only {prompts.shape[0]}")
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

    Shape:
        ``forward() -> (m, H)``.

    Example:
        >>> enc = PromptEncoder(4, 8, kind="lstm")
        >>> enc().shape
        torch.Size([4, 8])
    """

    def __init__(
        self,
        num_tokens: int,
        hidden_size: int,
        *,
        kind: PromptKind = "lstm",
        lstm_dropout: float = 0.0,
        init: Tensor | None = None,
    ) -> None:
        super().__init__()
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        if num_tokens < 0 or hidden_size < 1:
            raise ValueError(f"need num_tokens >= 0 and hidden_size >= 1, got {num_tokens}, {hidden_size}")
        if kind == "lstm" and hidden_size % 2:
            raise ValueError(f"kind='lstm' needs an even hidden_size (H/2 units per direction), got {hidden_size}")
        if init is not None and tuple(init.shape) != (num_tokens, hidden_size):
            raise ValueError(f"init must have shape {(num_tokens, hidden_size)}, got {tuple(init.shape)}")
        self.num_tokens = num_tokens
        self.hidden_size = hidden_size
        self.kind: PromptKind = kind
        if kind == "none":
            w = init.detach().clone() if init is not None else torch.randn(num_tokens, hidden_size) * 0.02
            self.weight = nn.Parameter(w)
            return
        self.embedding = nn.Embedding(max(num_tokens, 1), hidden_size)
        if init is not None and num_tokens:
            with torch.no_grad():
                self.embedding.weight[:num_tokens].copy_(init)
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
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self) -> Tensor:
        if self.kind == "none":
            return self.weight
        if self.num_tokens == 0:
            return self.embedding.weight[:0]
        h = self.embedding.weight[: self.num_tokens].unsqueeze(0)  # (1, m, H)
        if self.lstm is not None:
            h = self.lstm(h)[0]  # (1, m, H): both directions concatenated
        return self.mlp(h).squeeze(0)

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, hidden_size={self.hidden_size}, kind={self.kind!r}"


class TokenRows(nn.Module):
    """Su's "train only a few embedding rows" variant, as a separate parameter (not a mask on the LM's
    matrix).

    Article: https://kexue.fm/archives/8295 (``bojone/P-tuning``: ``mask[1:9] = 1`` over the embedding
    matrix).
    The rows of ``token_ids`` are copied once into a trainable ``(k, H)`` parameter; :meth:`splice` puts row
    ``j``
    wherever ``token_ids[j]`` occurs in ``input_ids``. The LM's embedding matrix stays frozen, so no optimiser
    (weight decay included) can move it. The rows are *input* embeddings only: with a tied output layer, Su's
    code also uses them as output classes; here the output layer keeps the original rows (documented
    deviation).

    Args:
        embedding_weight: the LM's input embedding matrix ``(V, H)`` (copied, never modified).
        token_ids: the ``k`` vocabulary ids whose rows become trainable.

    Example:
        >>> E = torch.randn(10, 4); rows = TokenRows(E, [1, 2])
        >>> out = rows.splice(torch.tensor([[1, 5]]), E[torch.tensor([[1, 5]])])
        >>> torch.equal(out, E[torch.tensor([[1, 5]])])
        True
    """

    def __init__(self, embedding_weight: Tensor, token_ids: list[int]) -> None:
        super().__init__()
        if embedding_weight.dim() != 2:
            raise ValueError(f"embedding_weight must be (V, H), got {tuple(embedding_weight.shape)}")
        vocab = embedding_weight.shape[0]
        if len(set(token_ids)) != len(token_ids) or any(not 0 <= t < vocab for t in token_ids):
            raise ValueError(f"token_ids must be distinct ids in [0, {vocab}), got {token_ids}")
        self.register_buffer("token_ids", torch.tensor(token_ids, dtype=torch.long), persistent=True)
        self.weight = nn.Parameter(embedding_weight.detach()[self.token_ids].clone())

    def prompt_index(self, input_ids: Tensor) -> Tensor:
        """``(B, L)``: the row of each position's token id, ``-1`` for ids that are not trainable."""
        match = input_ids.unsqueeze(-1) == self.token_ids  # (B, L, k)
        return torch.where(match.any(-1), match.long().argmax(-1), torch.full_like(input_ids, -1))

    def splice(self, input_ids: Tensor, inputs_embeds: Tensor) -> Tensor:
        """Replace the embeddings of the trainable token ids by the trainable rows: ``(B, L, H)``."""
        return splice_prompts(inputs_embeds, self.weight, self.prompt_index(input_ids))

    token_ids: Tensor

    def forward(self) -> Tensor:
        return self.weight

    def extra_repr(self) -> str:
        return f"token_ids={self.token_ids.tolist()}, hidden_size={self.weight.shape[1]}"
