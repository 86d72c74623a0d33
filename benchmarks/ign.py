"""IGN training step: the frozen copy as detached parameters (ours) vs copying the network every step.

Public IGN reimplementations follow the paper's listing and refresh a second network every step, either with
``copy.deepcopy(f)`` or with ``f_copy.load_state_dict(f.state_dict())``. ``kexue.methods.IGN`` runs the frozen
pass with :func:`torch.func.functional_call` on detached parameters (no copy), and ``form="copy_free"`` is the
article's single loss with stop-gradients. One timed call = loss + backward + Adam step on one batch, the
paper's configuration (L1, 20/20/2.5, clamp a=1.5) on the DCGAN autoencoder. Before timing, the gradients of
every case are checked against the deepcopy baseline on the same batch.

Timing is interleaved (see ``_timing``): ratios to the deepcopy baseline, per round.

Run: ``python benchmarks/ign.py``.
"""

from __future__ import annotations

import os

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read once when torch loads: idle OpenMP threads sleep, not spin

import copy

import torch
from torch import Tensor, nn

from _timing import Bench, Case
from kexue.methods import IGN
from kexue.modules import DCGANAutoencoder


def _listing_loss(f: nn.Module, f_copy: nn.Module, x: Tensor, z: Tensor) -> Tensor:
    """The paper's listing with L1, 20/20/2.5 and the tanh clamp over the paired reconstruction loss."""

    def dist(a: Tensor, b: Tensor) -> Tensor:
        return (a - b).abs().flatten(1).mean(1)

    fx = f(x)
    fz = f(z)
    f_z = fz.detach()
    ff_z = f(f_z)
    f_fz = f_copy(fz)
    rec = dist(fx, x)
    idem = dist(f_fz, fz)
    raw = dist(ff_z, f_z)
    scale = (1.5 * rec).clamp_min(1e-6)
    tight = -torch.tanh(raw / scale) * scale
    return 20 * rec.mean() + 20 * idem.mean() + 2.5 * tight.mean()


def _cases(width: int, latent: int, batch: int) -> tuple[list[Case], dict[str, float]]:
    torch.manual_seed(0)
    x = torch.rand(batch, 1, 28, 28) * 2 - 1
    z = torch.randn(batch, 1, 28, 28)
    base = DCGANAutoencoder(width=width, latent_dim=latent)
    models = {name: copy.deepcopy(base) for name in ("deepcopy", "load_state_dict", "frozen", "copy_free")}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4, betas=(0.5, 0.999)) for k, m in models.items()}
    persistent = copy.deepcopy(base).requires_grad_(False)
    ign_frozen = IGN.paper(models["frozen"])
    ign_free = IGN.paper(models["copy_free"], form="copy_free")

    def loss_deepcopy() -> Tensor:
        f = models["deepcopy"]
        f_copy = copy.deepcopy(f).requires_grad_(False)
        return _listing_loss(f, f_copy, x, z)

    def loss_load() -> Tensor:
        f = models["load_state_dict"]
        persistent.load_state_dict(f.state_dict())
        return _listing_loss(f, persistent, x, z)

    losses = {
        "deepcopy": loss_deepcopy,
        "load_state_dict": loss_load,
        "frozen": lambda: ign_frozen(x, z)["loss"],
        "copy_free": lambda: ign_free(x, z)["loss"],
    }

    # gradient check on the first batch, before any optimizer step (all models are still identical)
    grads: dict[str, list[Tensor]] = {}
    for name, fn in losses.items():
        models[name].zero_grad()
        fn().backward()
        grads[name] = [p.grad.clone() for p in models[name].parameters()]  # type: ignore[union-attr]
    ref = grads["deepcopy"]
    max_rel = {
        name: max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) for a, b in zip(g, ref))
        for name, g in grads.items()
    }

    def step(name: str):  # type: ignore[no-untyped-def]
        def run() -> None:
            opts[name].zero_grad(set_to_none=True)
            losses[name]().backward()
            opts[name].step()

        return run

    cases = [
        Case("deepcopy per step", step("deepcopy")),
        Case("load_state_dict per step", step("load_state_dict")),
        Case("kexue frozen copy (functional_call)", step("frozen")),
        Case("kexue copy-free single loss", step("copy_free")),
    ]
    return cases, max_rel


def main() -> None:
    bench = Bench("ign", "IGN training step: frozen copy as detached parameters vs a per-step copy")
    configs = ((16, 32, 8), (16, 32, 64), (64, 128, 8), (64, 128, 32))
    for width, latent, batch in configs:
        params = sum(p.numel() for p in DCGANAutoencoder(width=width, latent_dim=latent).parameters())
        cases, max_rel = _cases(width, latent, batch)
        title = f"IGN step, width {width}, latent {latent} ({params / 1e6:.2f}M params), batch {batch}"
        shown = ", ".join(f"{k} {v:.1e}" for k, v in max_rel.items() if k != "deepcopy")
        bench.compare(
            f"w{width}_b{batch}",
            title,
            cases,
            baseline="deepcopy per step",
            budget_s=30,
            note=f"max relative gradient difference to deepcopy: {shown}",
        )
    ids = [f"w{w}_b{b}" for w, _, b in configs]
    for t in ids:
        bench.target(
            f"{t}_speedup",
            f"frozen copy ≥ 1.3× faster than deepcopy ({t})",
            table=t,
            case="kexue frozen copy (functional_call)",
            limit=1 / 1.3,
        )
    bench.summary = {
        "technique": "IGN",
        "doc": "docs/ign.md",
        "what": "one training step × a per-step `deepcopy` frozen copy, DCGAN autoencoder, batch 8–64",
        "headlines": [
            {"label": "frozen copy (`functional_call`)", "case": "kexue frozen copy (functional_call)", "tables": ids},
            {"label": "copy-free single loss", "case": "kexue copy-free single loss", "tables": ids},
            {"label": "`load_state_dict` per step", "case": "load_state_dict per step", "tables": ids},
        ],
        "target": "≥ 1.3× faster than deepcopy (ratio ≤ 0.77)",
    }
    bench.save()


if __name__ == "__main__":
    main()
