"""A small from-scratch text classifier that exposes its embedding output (for noise, FGM, VAT on embeddings)."""

from __future__ import annotations

from torch import Tensor, nn

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
        if vocab_size < 2 or num_classes < 2 or dim < 1 or hidden < 0:
            raise ValueError(
                f"need vocab_size >= 2, num_classes >= 2, dim >= 1, hidden >= 0; "
                f"got {vocab_size}, {num_classes}, {dim}, {hidden}"
            )
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        head: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            head += [nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
        else:
            head += [nn.Linear(dim, num_classes)]
        self.head = nn.Sequential(*head)

    def embed(self, ids: Tensor) -> Tensor:
        """Embeddings ``(B, L, dim)``."""
        return self.embedding(ids)

    def classify(self, embeds: Tensor, mask: Tensor) -> Tensor:
        """Logits from embeddings ``(B, L, dim)`` and a boolean mask ``(B, L)`` of real tokens."""
        m = mask.unsqueeze(-1).to(embeds.dtype)
        pooled = (embeds * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, dim) masked mean
        return self.head(pooled)

    def forward(self, ids: Tensor) -> Tensor:
        return self.classify(self.embed(ids), ids != self.pad_id)
