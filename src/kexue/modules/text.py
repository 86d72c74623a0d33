"""A small from-scratch text classifier that exposes its embedding output (for noise, FGM, VAT on embeddings)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kexue._validate import check_float_tensor, check_int, check_real

__all__ = ["EmbeddingBagClassifier"]


class EmbeddingBagClassifier(nn.Module):
    """Token embeddings -> masked mean pool -> MLP -> logits (a fastText-style baseline).

    The forward pass is split so perturbation methods can act on the embedding *output* rather than on the
    weight matrix: ``embed(ids)`` gives ``(B, L, D)`` embeddings and ``classify(embeds, mask)`` the logits.
    ``forward(ids)`` is ``classify(embed(ids), ids != pad_id)``.

    Args:
        vocab_size: number of token ids.
        num_classes: output logits.
        dim: embedding width.
        hidden: MLP hidden width (0 = a linear head).
        pad_id: id of padding (ignored by the pool).
        dropout: dropout on the pooled vector.

    Shapes:
        ids ``(B, L)`` int64 -> logits ``(B, num_classes)``.

    Raises:
        TypeError: a size or ``pad_id`` that is not an int, ``dropout`` not a real number; ``ids`` not an
            integer tensor, ``embeds`` not a floating-point tensor.
        ValueError: sizes out of range, ``pad_id`` outside the vocabulary, ``dropout`` outside ``[0, 1]``; ``ids``
            not ``(B, L)`` or with ids outside ``[0, vocab_size)``; ``embeds``/``mask`` of the wrong shape, or
            NaN/inf embeddings.

    Example:
        >>> import torch
        >>> EmbeddingBagClassifier(100, 2)(torch.tensor([[5, 6, 0]])).shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        *,
        dim: int = 64,
        hidden: int = 64,
        pad_id: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_int("vocab_size", vocab_size, low=2)
        check_int("num_classes", num_classes, low=2)
        check_int("dim", dim, low=1)
        check_int("hidden", hidden, low=0)
        check_int("pad_id", pad_id, low=0, high=vocab_size - 1)
        check_real("dropout", dropout, low=0.0, high=1.0)
        self.vocab_size, self.dim = vocab_size, dim
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        head: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            head += [nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
        else:
            head += [nn.Linear(dim, num_classes)]
        self.head = nn.Sequential(*head)

    def _check_ids(self, ids: Tensor) -> Tensor:
        if not isinstance(ids, Tensor):
            raise TypeError(f"ids must be a torch.Tensor, got {type(ids).__name__}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"ids must be an integer tensor of token ids, got dtype {ids.dtype}")
        if ids.dim() != 2:
            raise ValueError(f"ids must be (B, L), got shape {tuple(ids.shape)}")
        # nn.Embedding raises an IndexError for an id out of range (and a device assert on CUDA)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(
                f"ids must lie in [0, {self.vocab_size}), got values in [{int(ids.min())}, {int(ids.max())}]"
            )
        return ids

    def embed(self, ids: Tensor) -> Tensor:
        """Embeddings ``(B, L, dim)``."""
        return self.embedding(self._check_ids(ids))

    def classify(self, embeds: Tensor, mask: Tensor) -> Tensor:
        """Logits from embeddings ``(B, L, dim)`` and a boolean mask ``(B, L)`` of real tokens."""
        check_float_tensor("embeds", embeds, ndim=3, allow_empty=True)
        if embeds.shape[-1] != self.dim:
            raise ValueError(f"embeds must be (B, L, {self.dim}), got shape {tuple(embeds.shape)}")
        if not isinstance(mask, Tensor) or mask.shape != embeds.shape[:2]:
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a tensor of shape {tuple(embeds.shape[:2])} (embeds' (B, L)), got {got}")
        m = mask.unsqueeze(-1).to(embeds.dtype)
        pooled = (embeds * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, dim) masked mean
        return self.head(pooled)

    def forward(self, ids: Tensor) -> Tensor:
        return self.classify(self.embed(ids), ids != self.pad_id)
