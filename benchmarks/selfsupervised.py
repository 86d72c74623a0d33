"""SimSiam / BYOL training-step time: kexue vs lightly's heads + loss and byol-pytorch, same backbone and
batch.

Every case runs one full training step on the same pre-augmented views: forward of both views, loss, backward,
SGD step, and for BYOL the EMA update of the target. The backbone is ``kexue.modules.SmallCNN(num_classes=0)``
on 3x32x32 images for every case (byol-pytorch's constructor runs a 3-channel mock image). Head sizes are
equal across cases. Architecture notes:

* lightly: ``SimSiamProjectionHead`` / ``SimSiamPredictionHead`` / ``BYOLProjectionHead`` /
  ``BYOLPredictionHead``, ``NegativeCosineSimilarity`` and ``update_momentum``, wired as in lightly's examples
  (two separate passes, one per view).
* byol-pytorch: ``BYOL(net, hidden_layer=-1, use_simplicial_embeddings=False)`` with the two views passed as
  its augmentations; it runs both views as ONE concatenated batch (BatchNorm statistics over both views),
  which is cheaper on small inputs but not the papers' per-view BatchNorm. ``use_momentum=False`` is its
  SimSiam mode, whose predictor is BYOL's MLP (no d/4 bottleneck), so its SimSiam row is a near but not exact
  match.
* lightly and byol-pytorch import torchvision at module level but do not use it on these code paths; a stub
  module stands in for it (installing torchvision would replace the CPU torch).

Run: ``python benchmarks/selfsupervised.py`` (peers from ``benchmarks/peers.txt`` installed with ``--no-deps``; missing
peers print as "not installed").
"""

from __future__ import annotations

import os

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read once when torch loads: idle OpenMP threads sleep, not spin

import copy
import sys
import types
from collections.abc import Callable

import torch
from torch import nn

from _timing import Bench, Case
from kexue.methods import BYOL, SimSiam, cosine_tau
from kexue.modules import SmallCNN

B, SIDE, FEAT = 128, 32, 128
SS_DIM, SS_PRED = 512, 128  # SimSiam: d and the d/4 bottleneck
BY_HID, BY_DIM = 512, 128  # BYOL: hidden width and projection size
LR = 0.05


def _stub_torchvision() -> None:
    """A placeholder ``torchvision`` so peers import; any use of it raises."""
    if "torchvision" in sys.modules:
        return

    class _Missing(nn.Module):  # constructible (peers build default augmentations), fails when called
        def __init__(self, *a: object, **k: object) -> None:
            super().__init__()

        def forward(self, *a: object, **k: object) -> None:
            raise RuntimeError("torchvision is stubbed in this benchmark")

    def getattr_(name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Missing

    tv = types.ModuleType("torchvision")
    for sub in ("ops", "transforms", "models", "datasets", "io", "utils"):
        m = types.ModuleType(f"torchvision.{sub}")
        m.__getattr__ = getattr_  # type: ignore[method-assign]
        setattr(tv, sub, m)
        sys.modules[f"torchvision.{sub}"] = m
    tv.__getattr__ = getattr_  # type: ignore[method-assign]
    sys.modules["torchvision"] = tv


def _backbone() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(3, num_classes=0, width=16, feature_dim=FEAT, image_size=SIDE)


def _sgd_step(params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()

    return step


def _not_installed(name: str) -> Case:
    def fn() -> None:
        raise ModuleNotFoundError(f"{name} not installed")

    return Case(f"{name} (not installed)", fn)


def simsiam_cases(x1: torch.Tensor, x2: torch.Tensor) -> list[Case]:
    ours = SimSiam(_backbone(), FEAT, dim=SS_DIM, hidden_dim=SS_DIM, pred_hidden_dim=SS_PRED).train()
    cases = [Case("kexue SimSiam", _sgd_step(list(ours.parameters()), lambda: ours(x1, x2)["loss"]))]
    try:
        _stub_torchvision()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import SimSiamPredictionHead as LPred
        from lightly.models.modules import SimSiamProjectionHead as LProj

        bb, proj, pred = _backbone(), LProj(FEAT, SS_DIM, SS_DIM), LPred(SS_DIM, SS_PRED, SS_DIM)
        crit = NegativeCosineSimilarity()
        mods = nn.ModuleList([bb, proj, pred]).train()

        def lightly_loss() -> torch.Tensor:
            z1, z2 = proj(bb(x1)), proj(bb(x2))
            p1, p2 = pred(z1), pred(z2)
            return 0.5 * (crit(p1, z2.detach()) + crit(p2, z1.detach()))

        cases.append(Case("lightly heads+loss", _sgd_step(list(mods.parameters()), lightly_loss)))
    except ImportError:
        cases.append(_not_installed("lightly"))
    try:
        _stub_torchvision()
        from byol_pytorch import BYOL as BP

        net = BP(
            _backbone(),
            image_size=SIDE,
            hidden_layer=-1,
            projection_size=SS_DIM,
            projection_hidden_size=SS_DIM,
            augment_fn=lambda x: x,
            augment_fn2=lambda x: x2 if x.shape[0] == x2.shape[0] else x,
            use_momentum=False,
            use_simplicial_embeddings=False,
        ).train()
        cases.append(Case("byol-pytorch (SimSiam mode)", _sgd_step(list(net.parameters()), lambda: net(x1))))
    except ImportError:
        cases.append(_not_installed("byol-pytorch"))
    return cases


def byol_cases(x1: torch.Tensor, x2: torch.Tensor) -> list[Case]:
    total = 10_000
    ours = BYOL(_backbone(), FEAT, hidden_dim=BY_HID, dim=BY_DIM).train()
    step_k = [0]
    ours_step = _sgd_step([p for p in ours.parameters() if p.requires_grad], lambda: ours(x1, x2)["loss"])

    def ours_fn() -> None:
        ours_step()
        step_k[0] += 1
        ours.update_target(step_k[0], total)

    cases = [Case("kexue BYOL", ours_fn)]
    try:
        _stub_torchvision()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead as LPred
        from lightly.models.modules import BYOLProjectionHead as LProj
        from lightly.models.utils import deactivate_requires_grad, update_momentum

        bb, proj = _backbone(), LProj(FEAT, BY_HID, BY_DIM)
        pred = LPred(BY_DIM, BY_HID, BY_DIM)
        bb_t, proj_t = copy.deepcopy(bb), copy.deepcopy(proj)
        deactivate_requires_grad(bb_t)
        deactivate_requires_grad(proj_t)
        crit = NegativeCosineSimilarity()
        online = nn.ModuleList([bb, proj, pred]).train()
        nn.ModuleList([bb_t, proj_t]).train()

        def lightly_loss() -> torch.Tensor:
            p1, p2 = pred(proj(bb(x1))), pred(proj(bb(x2)))
            with torch.no_grad():
                t1, t2 = proj_t(bb_t(x1)).detach(), proj_t(bb_t(x2)).detach()
            return 0.5 * (crit(p1, t2) + crit(p2, t1))

        lstep = _sgd_step(list(online.parameters()), lightly_loss)
        lk = [0]

        def lightly_fn() -> None:
            lstep()
            lk[0] += 1
            m = cosine_tau(lk[0], total)
            update_momentum(bb, bb_t, m)
            update_momentum(proj, proj_t, m)

        cases.append(Case("lightly heads+loss", lightly_fn))
    except ImportError:
        cases.append(_not_installed("lightly"))
    try:
        _stub_torchvision()
        from byol_pytorch import BYOL as BP

        net = BP(
            _backbone(),
            image_size=SIDE,
            hidden_layer=-1,
            projection_size=BY_DIM,
            projection_hidden_size=BY_HID,
            augment_fn=lambda x: x,
            augment_fn2=lambda x: x2 if x.shape[0] == x2.shape[0] else x,
            moving_average_decay=0.996,
            use_simplicial_embeddings=False,
        ).train()
        bstep = _sgd_step([p for p in net.parameters() if p.requires_grad], lambda: net(x1))

        def bp_fn() -> None:
            bstep()
            net.update_moving_average()

        cases.append(Case("byol-pytorch", bp_fn))
    except ImportError:
        cases.append(_not_installed("byol-pytorch"))
    return cases


def main() -> None:
    bench = Bench("selfsupervised", "SimSiam / BYOL training step vs lightly and byol-pytorch")
    bench.peer("lightly", "byol-pytorch")
    print(f"batch {B} x 2 views of 3x{SIDE}x{SIDE}, SmallCNN(width=16, feature_dim={FEAT}); one training step\n")
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.rand(B, 3, SIDE, SIDE, generator=g), torch.rand(B, 3, SIDE, SIDE, generator=g)
    bench.compare(
        "simsiam",
        f"SimSiam step (d={SS_DIM}, predictor bottleneck {SS_PRED})",
        simsiam_cases(x1, x2),
        baseline="kexue SimSiam",
        budget_s=60,
    )
    bench.compare(
        "byol",
        f"BYOL step + EMA (hidden {BY_HID}, dim {BY_DIM})",
        byol_cases(x1, x2),
        baseline="kexue BYOL",
        budget_s=60,
    )
    # "no slower than the fastest peer": the peer's time over ours >= 1 (within the ratio's spread)
    bench.target(
        "simsiam_lightly",
        "SimSiam no slower than lightly",
        table="simsiam",
        case="lightly heads+loss",
        limit=1.0,
        below=False,
    )
    bench.target(
        "byol_lightly", "BYOL no slower than lightly", table="byol", case="lightly heads+loss", limit=1.0, below=False
    )
    bench.summary = {
        "technique": "SimSiam / BYOL",
        "doc": "docs/simsiam.md",
        "what": "a peer's training step × ours, same backbone and batch (> 1: the peer is slower)",
        "headlines": [
            {"label": "lightly SimSiam", "case": "lightly heads+loss", "tables": ["simsiam"]},
            {"label": "byol-pytorch SimSiam mode", "case": "byol-pytorch (SimSiam mode)", "tables": ["simsiam"]},
            {"label": "lightly BYOL", "case": "lightly heads+loss", "tables": ["byol"]},
            {"label": "byol-pytorch BYOL", "case": "byol-pytorch", "tables": ["byol"]},
        ],
        "target": "no slower than the fastest peer",
    }
    bench.save()


if __name__ == "__main__":
    main()
