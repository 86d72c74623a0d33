"""Step time of the multi-task strategies (kexue.losses.multitask) against the plain sum and the peers.

A shared MLP trunk with 4 regression heads; each case runs one forward, the strategy's backward (filling
``.grad``) and ``zero_grad``: the part a strategy changes. Loss-level schemes are compared with the plain sum
(the floor) and torchjd's scalarizers; gradient-level methods with torchjd's ``mtl_backward`` + aggregator and
with gradnorm-pytorch. Cases are timed round-robin (see :func:`interleaved`); the peak-memory column is not
measured here. Run: ``python benchmarks/multitask.py``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from _timing import Case, Timing, header, markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
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


def interleaved(title: str, cases: list[Case], *, baseline: str, rounds: int, warmup: int = 3) -> None:
    """Time ``cases`` round-robin (one call of each per round) and print the ratio table.

    On a shared, contended machine the speed drifts over seconds; interleaving (in a shuffled order each
    round) makes every case see the same drift, so the ratios (medians over rounds) stay meaningful where
    back-to-back blocks would not.
    """
    ok: list[Case] = []
    errors: dict[str, str] = {}
    for c in cases:
        try:
            for _ in range(warmup):
                c.fn()
            ok.append(c)
        except Exception as e:  # a failing or missing peer is reported, not fatal
            errors[c.name] = f"{type(e).__name__}: {e}"
    times: dict[str, list[float]] = {c.name: [] for c in ok}
    order = random.Random(0)
    for _ in range(rounds):
        # a fresh order every round: no case always runs first (the first slot measured ~5% slower)
        for c in order.sample(ok, len(ok)):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            c.fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[c.name].append(time.perf_counter() - t0)
    out = []
    for c in cases:
        if c.name in errors:
            out.append(Timing(c.name, float("nan"), float("nan"), float("nan"), 0, None, errors[c.name]))
            continue
        ts = times[c.name]
        q = statistics.quantiles(ts, n=4)
        out.append(Timing(c.name, statistics.median(ts), q[0], q[2], len(ts), None))
    print(markdown_table(title, out, baseline))
    print()


def _not_installed(name: str) -> Case:
    def fn() -> None:
        raise ImportError("not installed")

    return Case(name, fn)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--d-in", type=int, default=128)
    p.add_argument("--rounds", type=int, default=25)
    args = p.parse_args()
    torch.manual_seed(0)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = Net(args.d_in, args.width).to(dev)
    x = torch.randn(args.batch, args.d_in, device=dev)
    y = torch.randn(args.batch, N_TASKS, device=dev)
    shared = list(net.trunk.parameters())
    print(header())
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
    interleaved("loss-level strategies (forward + backward)", loss_cases, baseline="plain sum", rounds=args.rounds)

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
    interleaved(
        "gradient-level strategies (forward + per-task backward + combination)",
        grad_cases,
        baseline="plain sum",
        rounds=args.rounds,
    )


if __name__ == "__main__":
    main()
