"""kexue inside your own PyTorch training loop: a text classifier trained with TaiLr, FGM and VAT.

Your model, your optimiser, your loop; kexue supplies three functions:

* ``tailr_loss``: cross entropy that stops trusting low-probability (likely noisy) labels (kexue.fm/archives/9526);
* ``fgm_loss``: the adversarial loss on the embedding output, the author's text settings (kexue.fm/archives/7466);
* ``VAT``: virtual adversarial training on unlabelled batches (semi-supervised).

The data is synthetic (the label says whether "positive" or "negative" marker tokens dominate a sentence), so the
script runs anywhere in seconds, CPU or GPU:

    python examples/own_loop.py --steps 200
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

from kexue.losses import tailr_loss
from kexue.regularizers import VAT, fgm_loss

VOCAB, LENGTH = 200, 24
POSITIVE, NEGATIVE = torch.arange(10, 20), torch.arange(20, 30)  # marker tokens


class BagOfWords(nn.Module):
    """Any model works: kexue finds its nn.Embedding (or get_input_embeddings()) to perturb."""

    def __init__(self, vocab: int, dim: int = 32, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, classes))

    def forward(self, ids: Tensor) -> Tensor:
        mask = (ids != 0).unsqueeze(-1).float()
        h = (self.embed(ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # mean over real tokens
        return self.head(h)  # (B, classes) logits


def make_batch(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` sentences of random filler tokens with 3 to 5 marker tokens; label 1 when most markers are positive."""
    ids = torch.randint(30, VOCAB, (n, LENGTH), generator=generator)
    label = torch.randint(0, 2, (n,), generator=generator)
    for i in range(n):
        k = int(torch.randint(3, 6, (1,), generator=generator))
        major = POSITIVE if label[i] == 1 else NEGATIVE
        minor = NEGATIVE if label[i] == 1 else POSITIVE
        markers = torch.cat([major[torch.randint(0, 10, (k,), generator=generator)], minor[:1]])
        ids[i, torch.randperm(LENGTH, generator=generator)[: len(markers)]] = markers
    return ids, label


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = BagOfWords(VOCAB).to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    vat = VAT.author()  # xi=10, eps=1, one power iteration over the whole embedding matrix

    def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
        return tailr_loss(logits, target, gamma=0.5)  # drop-in for F.cross_entropy

    test_ids, test_y = (t.to(args.device) for t in make_batch(512, gen))
    for step in range(args.steps):
        ids, y = (t.to(args.device) for t in make_batch(args.batch_size, gen))
        unlabelled, _ = make_batch(args.batch_size, gen)
        # L(x) + L(x + delta) with delta the FGM step on the embedding output, then the VAT penalty
        loss = fgm_loss(model, ids, y, eps=0.5, site="embedding", scope="global", loss_fn=loss_fn)
        loss = loss + vat(model, unlabelled.to(args.device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            with torch.no_grad():
                acc = float((model(test_ids).argmax(-1) == test_y).float().mean())
            print(f"step {step:4d}  loss {loss.item():.4f}  test accuracy {acc:.3f}")
    return acc


if __name__ == "__main__":
    main()
