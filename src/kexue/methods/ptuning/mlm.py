"""The masked-LM forward of :class:`~kexue.methods.PTuning`: one ``[MASK]`` per label token, scored in parallel.

Su's auxiliary loss for BERT (https://kexue.fm/archives/8295, ``bojone/P-tuning/bert.py``): BERT masking (15%:
80% ``[MASK]``, 10% random, 10% kept) of the other text tokens, predicted in the same forward pass. The label
slot is never re-masked (Su forces it back to ``[MASK]``); prompt positions and special tokens are spared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ._scoring import Project, slot_scores, trunk

if TYPE_CHECKING:
    from .model import PTuning

__all__ = ["masked_token_loss", "mlm_forward", "random_mask"]


def mlm_forward(
    pt: PTuning, ids: Tensor, mask: Tensor, pidx: Tensor, spos: Tensor, *, G: int, aux_labels: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """``(class scores (B, C), aux MLM loss or None)`` for ``(N, L)`` inputs, ``N = B * G``.

    ``aux_labels`` switches the auxiliary loss on (its values are not needed: the MLM targets are the text).
    """
    targets = None
    if aux_labels is not None:
        ids, targets = random_mask(
            ids,
            mask,
            pidx,
            spos,
            mask_id=int(pt.mask_id or 0),
            special_ids=pt.layout.special_ids(),
            vocab_size=pt.vocab_size,
            probability=pt.mlm_probability,
        )
    features, project = trunk(pt.lm, pt.head_name, pt.embed(ids, pidx), mask)
    scores = slot_scores(features, project, spos, pt.label_ids, G)
    if targets is None:
        return scores, None
    return scores, masked_token_loss(features, project, targets)


def random_mask(
    ids: Tensor,
    mask: Tensor,
    pidx: Tensor,
    spos: Tensor,
    *,
    mask_id: int,
    special_ids: list[int],
    vocab_size: int,
    probability: float,
) -> tuple[Tensor, Tensor]:
    """BERT masking of the real text tokens: ``(new ids, targets)`` with targets ``-100`` where not picked.

    Candidates: attended, non-prompt, non-special positions other than the label slot. Each is picked with
    ``probability``; a picked token becomes ``[MASK]`` (80%), a random id (10%) or stays (10%).
    """
    cand = (mask > 0) & (pidx < 0)
    for sid in special_ids:
        cand &= ids != sid
    cand.scatter_(1, spos.clamp(min=0), False)  # never the label slot
    pick = cand & (torch.rand(ids.shape, device=ids.device) < probability)
    targets = torch.where(pick, ids, torch.full_like(ids, -100))
    r = torch.rand(ids.shape, device=ids.device)
    new = torch.where(pick & (r < 0.8), torch.full_like(ids, mask_id), ids)
    rand_tok = torch.randint(0, vocab_size, ids.shape, device=ids.device)
    new = torch.where(pick & (r >= 0.8) & (r < 0.9), rand_tok, new)
    return new, targets


def masked_token_loss(features: Tensor, project: Project, targets: Tensor) -> Tensor:
    """Mean cross-entropy at the picked positions (projected there only); 0 when nothing was picked."""
    sel = targets >= 0
    if not bool(sel.any()):
        return features.new_zeros((), dtype=torch.float32)
    logits = project(features[sel])  # (n, V)
    work = torch.promote_types(logits.dtype, torch.float32)
    return F.cross_entropy(logits.to(work), targets[sel])
