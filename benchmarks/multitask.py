"""Step time of the multi-task strategies (kexue.losses.multitask) against the plain sum and the peers.

A shared MLP trunk with 4 regression heads; each case runs one forward, the strategy's backward (filling
``.grad``) and ``zero_grad``: the part a strategy changes. Loss-level schemes are compared with the plain sum
(the floor) and torchjd's scalarizers; gradient-level methods with torchjd's ``mtl_backward`` + aggregator and
with gradnorm-pytorch. Cases are interleaved (see ``_timing``); peak memory is not measured here.
Run: ``python benchmarks/multitask.py``.
"""

from __future__ import annotations

import os

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read once when torch loads: idle OpenMP threads sleep, not spin

import argparse
from collections.abc import Callable

import torch
from torch import Tensor, nn

from _timing import Bench, Case
from kexue.losses import multitask as mt

try:
    from torchjd import aggregation as jd_agg
    from torchjd import scalarization as jd_scal
    from torchjd.autojac import jac_to_grad, mtl_backward
except ImportError:  # pragma: no cover - optional peer
    jd_agg = jd_scal = None  # type: ignore[assignment]
try:
    from gradnorm_pytorch import GradNormLossWeighter
except ImportError:  # pragma: no cover - optional peer
    GradNormLossWeighter = None  # type: ignore[assignment,misc]

N_TASKS = 4


class Net(nn.Module):
    def __init__(self, d_in: int, width: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.heads = nn.ModuleList([nn.Linear(width, 1) for _ in range(N_TASKS)])

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = self.trunk(x)
        return h, [((head(h).squeeze(-1) - y[:, i]) ** 2).mean() + 0.1 for i, head in enumerate(self.heads)]


def _case(name: str, net: Net, x: Tensor, y: Tensor, backward: Callable[[Tensor, list[Tensor]], object]) -> Case:
    def fn() -> None:
        net.zero_grad(set_to_none=True)
        h, losses = net(x, y)
        backward(h, losses)

    return Case(name, fn)


def _not_installed(name: str) -> Case:
    def fn() -> None:
        raise ImportError("not installed")

    return Case(name, fn)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--d-in", type=int, default=128)
    bench = Bench("multitask", "step time of the multi-task strategies vs the plain sum and the peers", p)
    bench.peer("torchjd", "gradnorm-pytorch")
    args = bench.args
    torch.manual_seed(0)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = Net(args.d_in, args.width).to(dev)
    x = torch.randn(args.batch, args.d_in, device=dev)
    y = torch.randn(args.batch, N_TASKS, device=dev)
    shared = list(net.trunk.parameters())
    print(f"shared MLP {args.d_in}-{args.width}-{args.width}, {N_TASKS} heads, batch {args.batch}\n")

    def ours(name: str, **k: object) -> Callable[[Tensor, list[Tensor]], object]:
        s = mt.make_strategy(name, N_TASKS, **k).to(dev)
        return lambda h, losses: s.backward(losses, shared)

    plain = _case("plain sum", net, x, y, lambda h, losses: sum(losses).backward())  # type: ignore[union-attr]

    loss_cases = [plain]
    for name, k in [
        ("equal", {}),
        ("initial", {}),
        ("prior", {"prior": [1.0] * N_TASKS}),
        ("realtime", {}),
        ("realtime", {"ema": 0.9}),
        ("log", {}),
        ("power_mean", {"gamma": 2.0}),
        ("uncertainty", {}),
        ("dwa", {}),
    ]:
        label = f"ours {name}" + (" (ema)" if "ema" in k else "")
        loss_cases.append(_case(label, net, x, y, ours(name, **k)))
    if jd_scal is not None:
        uw, dwa, gm = jd_scal.UW(N_TASKS).to(dev), jd_scal.DWA(N_TASKS), jd_scal.GeometricMean()
        loss_cases += [
            _case("torchjd UW", net, x, y, lambda h, losses: uw(torch.stack(losses)).backward()),
            _case("torchjd DWA", net, x, y, lambda h, losses: dwa(torch.stack(losses)).backward()),
            _case("torchjd GeometricMean", net, x, y, lambda h, losses: gm(torch.stack(losses)).backward()),
        ]
    else:
        loss_cases += [_not_installed("torchjd UW"), _not_installed("torchjd DWA")]
    bench.compare("loss", "loss-level strategies (forward + backward)", loss_cases, baseline="plain sum", budget_s=40)

    grad_cases = [plain]
    for name in ("gradient_normalization", "mgda", "projection", "gradnorm", "l2_auxiliary"):
        grad_cases.append(_case(f"ours {name}", net, x, y, ours(name)))
    for name in ("gradient_normalization", "mgda", "projection"):
        grad_cases.append(_case(f"ours {name} (batched)", net, x, y, ours(name, batched=True)))
    grad_cases.append(_case("ours gradnorm (layer=all)", net, x, y, ours("gradnorm", layer="all")))
    if jd_agg is not None:
        for label, agg in (("MGDA", jd_agg.MGDA()), ("PCGrad", jd_agg.PCGrad()), ("Mean", jd_agg.Mean())):

            def jd(h: Tensor, losses: list[Tensor], agg: object = agg) -> None:
                mtl_backward(losses, features=h)
                jac_to_grad(shared, agg)  # type: ignore[arg-type]

            grad_cases.append(_case(f"torchjd {label}", net, x, y, jd))
    else:
        grad_cases += [_not_installed("torchjd MGDA"), _not_installed("torchjd PCGrad")]
    if GradNormLossWeighter is not None:
        last = net.trunk[2].weight
        gn = GradNormLossWeighter(
            num_losses=N_TASKS, learning_rate=0.025, restoring_force_alpha=1.5, grad_norm_parameters=last
        ).to(dev)
        grad_cases.append(_case("gradnorm-pytorch", net, x, y, lambda h, losses: gn.backward(losses)))
    else:
        grad_cases.append(_not_installed("gradnorm-pytorch"))
    bench.compare(
        "grad",
        "gradient-level strategies (forward + per-task backward + combination)",
        grad_cases,
        baseline="plain sum",
        budget_s=60,
    )
    for name in ("equal", "uncertainty", "dwa"):
        bench.target(
            f"loss_{name}", f"loss-level `{name}` ≤ 1.05× plain sum", table="loss", case=f"ours {name}", limit=1.05
        )
    bench.summary = {
        "technique": "multi-task weighting",
        "doc": "docs/multitask.md",
        "what": f"one step (forward + backward) × the plain sum, shared MLP with {N_TASKS} heads, batch {args.batch}",
        "headlines": [
            {"label": "loss-level: uncertainty", "case": "ours uncertainty", "tables": ["loss"]},
            {"label": "DWA", "case": "ours dwa", "tables": ["loss"]},
            {"label": "torchjd UW", "case": "torchjd UW", "tables": ["loss"]},
            {"label": "MGDA", "case": "ours mgda", "tables": ["grad"]},
            {"label": "MGDA batched", "case": "ours mgda (batched)", "tables": ["grad"]},
            {"label": "torchjd MGDA", "case": "torchjd MGDA", "tables": ["grad"]},
            {"label": "GradNorm", "case": "ours gradnorm", "tables": ["grad"]},
            {"label": "gradnorm-pytorch", "case": "gradnorm-pytorch", "tables": ["grad"]},
        ],
        "target": "loss-level ≤ 1.05× the plain sum; gradient-level ≤ the peer",
    }
    bench.target(
        "mgda_vs_torchjd", "MGDA ≤ 1.0× torchjd MGDA", table="grad", case="ours mgda", other="torchjd MGDA", limit=1.0
    )
    bench.target(
        "gradnorm_vs_peer",
        "GradNorm ≤ 1.0× gradnorm-pytorch",
        table="grad",
        case="ours gradnorm",
        other="gradnorm-pytorch",
        limit=1.0,
    )
    bench.save()


if __name__ == "__main__":
    main()
