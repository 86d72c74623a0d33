"""Step-time overhead of kexue.regularizers over a plain training step, next to the usual alternatives.

Every case is one full training step (zero_grad, losses, backward, SGD step) on the same model and batch,
timed side by side in this process and printed as a ratio to the plain step. Peers: torchattacks' PGD
(image-only; install with ``pip install --no-deps torchattacks scipy``) and the hand-written FGM snippet users
copy (backward, perturb, second forward/backward; on text, the embedding weight edited in place and restored).

Targets: VAT (r=1) <= 3.2x, FGM <= 2.2x, finite-difference gradient penalty <= 2.2x a plain step.

Run: ``python benchmarks/regularizers.py``
"""

from __future__ import annotations

import os

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read once when torch loads: idle OpenMP threads sleep, not spin

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from _timing import Bench, Case
from kexue.modules import EmbeddingBagClassifier, SmallCNN
from kexue.regularizers import fgm_loss, gradient_penalty_loss, noisy_loss, pgd_loss, vat_loss

try:
    import torchattacks
except ImportError:  # peer missing: its row says so
    torchattacks = None


def _step(model: nn.Module, opt: torch.optim.Optimizer, make_loss) -> None:  # type: ignore[no-untyped-def]
    opt.zero_grad(set_to_none=True)
    make_loss().backward()
    opt.step()


def _vat_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, **kw) -> None:  # type: ignore[no-untyped-def]
    # The documented use: the supervised forward's logits double as VAT's clean target (saves a forward).
    opt.zero_grad(set_to_none=True)
    logits = model(x)
    (F.cross_entropy(logits, y) + vat_loss(model, x, clean_logits=logits, **kw)).backward()
    opt.step()


def _fgm_snippet_input(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, eps: float) -> None:
    opt.zero_grad(set_to_none=True)
    xg = x.clone().requires_grad_(True)
    F.cross_entropy(model(xg), y).backward()
    g = xg.grad
    assert g is not None
    delta = eps * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))
    F.cross_entropy(model(x + delta), y).backward()
    opt.step()


def _fgm_snippet_embedding(model: EmbeddingBagClassifier, opt: torch.optim.Optimizer, ids: Tensor, y: Tensor) -> None:
    # The widely copied FGM class: attack the embedding *weight* by name, back it up, restore it.
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(ids), y).backward()
    w = model.embedding.weight
    backup = w.data.clone()
    assert w.grad is not None
    norm = torch.norm(w.grad)
    if norm != 0:
        w.data.add_(0.5 * w.grad / norm)
    F.cross_entropy(model(ids), y).backward()
    w.data = backup
    opt.step()


def cnn_table(bench: Bench) -> None:
    torch.manual_seed(0)
    model = SmallCNN(width=16)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    x_leaf = x.clone().requires_grad_(True)  # its .grad (accumulated, never read) is the input gradient
    ce = F.cross_entropy
    cases = [
        Case("plain", lambda: _step(model, opt, lambda: ce(model(x), y))),
        # what FGM, VAT and the gradient penalties add to a plain step before any second pass: grad_x L
        Case("plain + input gradient", lambda: _step(model, opt, lambda: ce(model(x_leaf), y))),
        Case("noise (input, k=1)", lambda: _step(model, opt, lambda: noisy_loss(model, x, y, sigma=0.1))),
        Case("FGM (kexue, l2)", lambda: _step(model, opt, lambda: fgm_loss(model, x, y, eps=1.0))),
        Case("FGM (hand-written snippet)", lambda: _fgm_snippet_input(model, opt, x, y, 1.0)),
        Case(
            "GP double backward",
            lambda: _step(model, opt, lambda: gradient_penalty_loss(model, x, y, eps=1.0)),
        ),
        Case(
            "GP finite difference",
            lambda: _step(model, opt, lambda: gradient_penalty_loss(model, x, y, eps=1.0, method="finite_difference")),
        ),
        Case(
            "PGD linf 3 steps (kexue)",
            lambda: _step(model, opt, lambda: pgd_loss(model, x, y, eps=0.1, steps=3, clamp=(0.0, 1.0))),
        ),
        Case("VAT r=0 (noise control)", lambda: _vat_step(model, opt, x, y, eps=2.0, n_power=0)),
        Case("VAT r=1", lambda: _vat_step(model, opt, x, y, eps=2.0)),
    ]
    if torchattacks is not None:
        atk = torchattacks.PGD(model, eps=0.1, alpha=0.025, steps=3, random_start=False)

        def ta_pgd() -> None:
            x_adv = atk(x, y)
            model.train()
            _step(model, opt, lambda: ce(model(x), y) + ce(model(x_adv), y))

        cases.insert(7, Case("PGD linf 3 steps (torchattacks)", ta_pgd))
    bench.compare("cnn", "SmallCNN(width=16), batch 64x1x28x28, one SGD step", cases, baseline="plain", budget_s=60)
    if torchattacks is None:
        print("PGD linf 3 steps (torchattacks): not installed\n")


def text_table(bench: Bench) -> None:
    torch.manual_seed(0)
    model = EmbeddingBagClassifier(20000, 2, dim=64, hidden=64)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    ids, y = torch.randint(1, 20000, (32, 128)), torch.randint(0, 2, (32,))
    ce = F.cross_entropy
    emb = {"site": "embedding"}
    cases = [
        Case("plain", lambda: _step(model, opt, lambda: ce(model(ids), y))),
        Case(
            "FGM (kexue, embedding, global)",
            lambda: _step(model, opt, lambda: fgm_loss(model, ids, y, eps=0.5, scope="global", **emb)),
        ),
        Case(
            "FGM (kexue, embedding, per sample)",
            lambda: _step(model, opt, lambda: fgm_loss(model, ids, y, eps=0.5, **emb)),
        ),
        Case("FGM (hand-written weight snippet)", lambda: _fgm_snippet_embedding(model, opt, ids, y)),
        Case(
            "GP double backward",
            lambda: _step(model, opt, lambda: gradient_penalty_loss(model, ids, y, **emb)),
        ),
        Case(
            "GP finite difference",
            lambda: _step(model, opt, lambda: gradient_penalty_loss(model, ids, y, method="finite_difference", **emb)),
        ),
        Case(
            "PGD l2 3 steps (kexue)",
            lambda: _step(model, opt, lambda: pgd_loss(model, ids, y, eps=1.0, steps=3, norm="l2", **emb)),
        ),
        Case("VAT r=1 per sample", lambda: _vat_step(model, opt, ids, y, eps=5.0, xi=0.1, site="embedding")),
        Case(
            "VAT r=1 global (author)",
            lambda: _vat_step(model, opt, ids, y, eps=1.0, xi=10.0, scope="global", site="embedding"),
        ),
    ]
    bench.compare(
        "text",
        "EmbeddingBagClassifier(20000, dim 64), batch 32x128 tokens, one SGD step",
        cases,
        baseline="plain",
        budget_s=60,
        note="PGD (torchattacks): not applicable (image attacks only, no embedding input).",
    )


def main() -> None:
    bench = Bench("regularizers", "step time of kexue.regularizers over a plain training step")
    bench.peer("torchattacks")
    cnn_table(bench)
    text_table(bench)
    for table, model in (("cnn", "CNN"), ("text", "text")):
        fgm = "FGM (kexue, l2)" if table == "cnn" else "FGM (kexue, embedding, global)"
        bench.target(
            f"{table}_vat",
            f"{model} VAT r=1 ≤ 3.2×",
            table=table,
            case="VAT r=1" if table == "cnn" else "VAT r=1 per sample",
            limit=3.2,
        )
        if table == "text":
            bench.target(
                "text_vat_global", "text VAT r=1 global ≤ 3.2×", table=table, case="VAT r=1 global (author)", limit=3.2
            )
        bench.target(f"{table}_fgm", f"{model} FGM ≤ 2.2×", table=table, case=fgm, limit=2.2)
        bench.target(
            f"{table}_fd",
            f"{model} finite-difference penalty ≤ 2.2×",
            table=table,
            case="GP finite difference",
            limit=2.2,
        )
    bench.summary = {
        "technique": "noise / GP / FGM / VAT",
        "doc": "docs/regularizers.md",
        "what": "one SGD step × a plain step; SmallCNN, 64 MNIST-size images; EmbeddingBag text model, 32×128 tokens",
        "headlines": [
            {"label": "CNN plain step + input gradient", "case": "plain + input gradient", "tables": ["cnn"]},
            {"label": "CNN VAT r=1", "case": "VAT r=1", "tables": ["cnn"]},
            {"label": "CNN FGM", "case": "FGM (kexue, l2)", "tables": ["cnn"]},
            {"label": "CNN hand-written FGM", "case": "FGM (hand-written snippet)", "tables": ["cnn"]},
            {"label": "CNN FD penalty", "case": "GP finite difference", "tables": ["cnn"]},
            {"label": "CNN PGD-3", "case": "PGD linf 3 steps (kexue)", "tables": ["cnn"]},
            {"label": "torchattacks PGD-3", "case": "PGD linf 3 steps (torchattacks)", "tables": ["cnn"]},
            {"label": "text FGM", "case": "FGM (kexue, embedding, global)", "tables": ["text"]},
            {"label": "text hand-written FGM", "case": "FGM (hand-written weight snippet)", "tables": ["text"]},
            {"label": "text FD penalty", "case": "GP finite difference", "tables": ["text"]},
            {"label": "text VAT r=1", "case": "VAT r=1 per sample", "tables": ["text"]},
            {"label": "text VAT global", "case": "VAT r=1 global (author)", "tables": ["text"]},
        ],
        "target": "VAT ≤ 3.2×, FGM ≤ 2.2×, FD ≤ 2.2×",
    }
    bench.save()


if __name__ == "__main__":
    main()
