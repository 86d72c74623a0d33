"""The 2-D ring of 8 Gaussians for the IGN experiment: IGN arms and a WGAN-GP of the same size, all seeds at once.

Every arm trains ``S`` independent models (one per seed) in one batched computation: a :class:`StackedMLP` holds
``S`` MLPs as stacked weights ``(S, in, out)`` and maps rows ``(S * B, d)`` (seed-major) with batched matrix
products, so row block ``s`` only ever meets model ``s``. The losses are batch means over all ``S * B`` rows; the
training loop multiplies them by ``S`` so each model's gradient is exactly that of its own per-seed mean loss, and
Adam, which acts element-wise, then updates each model as if it were trained alone.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from kexue.methods import IGN

__all__ = ["RingConfig", "StackedMLP", "ring_centers", "ring_metrics", "sample_ring", "train_ign", "train_wgan_gp"]


@dataclass(frozen=True)
class RingConfig:
    """Settings of the ring runs (see the experiment module's docstring for the claims built on them).

    Attributes:
        seeds: independent runs per arm (trained together, one stacked model each).
        steps: optimiser steps (WGAN-GP: generator steps, each after ``n_critic`` critic steps).
        batch_size: data points and noise samples per step and seed.
        hidden: width of the MLPs; f has three hidden layers, the WGAN-GP generator and critic two each, so the
            WGAN-GP's two networks together have about as many parameters as IGN's one f.
        lr: Adam learning rate of every arm.
        radius: radius of the ring of mode centres.
        sigma: standard deviation of each Gaussian mode.
        n_critic: critic steps per generator step (WGAN-GP paper).
        gp_weight: gradient-penalty weight (the WGAN-GP paper's toy experiments use 0.1).
        n_eval: samples per seed for the metrics.
        quality_sigmas: a sample is high quality when within this many ``sigma`` of a mode centre.
        mode_share: a mode is covered when it receives at least this share of the ``n_eval`` samples as high-quality
            samples (an eighth of the samples, 0.125, would be a perfect share).
        min_modes: a run *covers the ring* when it covers at least this many of the 8 modes; otherwise it *collapsed*.
    """

    seeds: int = 10
    steps: int = 3000
    batch_size: int = 128
    hidden: int = 64
    lr: float = 1e-3
    radius: float = 2.0
    sigma: float = 0.05
    n_critic: int = 5
    gp_weight: float = 0.1
    n_eval: int = 2000
    quality_sigmas: float = 3.0
    mode_share: float = 0.02
    min_modes: int = 6


class StackedMLP(nn.Module):
    """``S`` independent ReLU MLPs ``dims[0] -> ... -> dims[-1]`` applied to seed-major rows ``(S * B, dims[0])``.

    Model ``s`` is initialised as ``nn.Linear`` would be (uniform in ``+-1/sqrt(fan_in)``) from
    ``torch.Generator().manual_seed(seeds[s] * 1000 + salt)``, so the same seed gives the same initial model in
    every arm that uses the same ``salt``.
    """

    def __init__(self, dims: tuple[int, ...], seeds: list[int], *, salt: int = 0) -> None:
        super().__init__()
        self.n = len(seeds)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            w = torch.empty(self.n, a, b)
            bias = torch.empty(self.n, 1, b)
            bound = 1.0 / math.sqrt(a)
            for s, seed in enumerate(seeds):
                g = torch.Generator().manual_seed(seed * 1000 + salt * 100 + i)
                w[s] = (torch.rand(a, b, generator=g) * 2 - 1) * bound
                bias[s] = (torch.rand(1, b, generator=g) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(bias))

    def forward(self, x: Tensor) -> Tensor:
        h = x.reshape(self.n, -1, x.shape[-1])
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.relu(h)
        return h.reshape(-1, h.shape[-1])


def ring_centers(cfg: RingConfig) -> Tensor:
    """The 8 mode centres ``(8, 2)`` on the circle of radius ``cfg.radius``."""
    ang = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return (cfg.radius * torch.stack([ang.cos(), ang.sin()], -1)).float()


def sample_ring(cfg: RingConfig, n: int, gen: torch.Generator) -> Tensor:
    """``n`` points from the mixture of 8 Gaussians (equal weights) on the ring."""
    k = torch.randint(0, 8, (n,), generator=gen)
    return ring_centers(cfg)[k] + cfg.sigma * torch.randn(n, 2, generator=gen)


@torch.no_grad()
def ring_metrics(cfg: RingConfig, y: Tensor) -> dict[str, Any]:
    """Per-seed metrics of samples ``y (S * n, 2)`` (seed-major): modes covered, high-quality share, collapse."""
    c = ring_centers(cfg)
    out: dict[str, Any] = {"modes": [], "hq": [], "collapsed": [], "mode_counts": []}
    for ys in y.reshape(-1, cfg.n_eval, 2):
        d = torch.cdist(ys.double(), c.double())
        dmin, k = d.min(-1)
        good = dmin < cfg.quality_sigmas * cfg.sigma
        counts = torch.bincount(k[good], minlength=8)
        modes = int((counts >= cfg.mode_share * cfg.n_eval).sum())
        out["modes"].append(modes)
        out["hq"].append(float(good.double().mean()) if torch.isfinite(ys).all() else 0.0)
        out["collapsed"].append(modes < cfg.min_modes)
        out["mode_counts"].append([int(x) for x in counts])
    return out


def _move(a: Tensor, b: Tensor, n: int) -> list[float]:
    """Per-seed mean Euclidean distance between rows of ``a`` and ``b`` (seed-major blocks of ``n``)."""
    return [float(v) for v in (a - b).norm(dim=-1).reshape(-1, n).mean(-1)]


def train_ign(
    cfg: RingConfig, seeds: list[int], *, variant: str, base_seed: int, steps: int | None = None
) -> dict[str, Any]:
    """Train one IGN arm (``ign``, ``no_tight``, ``copy_free`` or ``ulp_control``) for every seed at once.

    The data and noise streams depend on ``base_seed`` only, so IGN arms are paired seed by seed (same initial f,
    same batches); ``ulp_control`` starts every weight one float32 ulp away from ``ign``'s.
    """
    steps = cfg.steps if steps is None else steps
    f = StackedMLP((2, cfg.hidden, cfg.hidden, cfg.hidden, 2), seeds, salt=1)
    if variant == "ulp_control":
        with torch.no_grad():
            for p in f.parameters():
                p.copy_(torch.nextafter(p, torch.full_like(p, math.inf)))
    kw: dict[str, Any] = {}
    if variant == "no_tight":
        kw["lambda_tight"] = 0.0
    if variant == "copy_free":
        kw["form"] = "copy_free"
    ign = IGN.paper(f, **kw)
    opt = torch.optim.Adam(f.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(base_seed)
    n, b = len(seeds), cfg.batch_size
    eval_gen = torch.Generator().manual_seed(base_seed + 777)
    z_eval = torch.randn(n * cfg.n_eval, 2, generator=eval_gen)
    with torch.no_grad():
        init = ring_metrics(cfg, f(z_eval))
    hist: list[dict[str, float]] = []
    for t in range(steps):
        x = sample_ring(cfg, n * b, gen)
        z = torch.randn(n * b, 2, generator=gen)
        out = ign(x, z)
        opt.zero_grad(set_to_none=True)
        (out["loss"] * n).backward()
        opt.step()
        if t % max(1, steps // 10) == 0 or t == steps - 1:
            hist.append({"step": t, **{k: float(v.detach()) for k, v in out.items()}})
    f.eval()  # no normalisation layers: eval and train mode agree; eval is the generator a user gets
    with torch.no_grad():
        fz = f(z_eval)
        ffz = f(fz)
        x_eval = sample_ring(cfg, n * cfg.n_eval, eval_gen)
        fx = f(x_eval)
    m = ring_metrics(cfg, fz)
    return {
        "init": init,
        "final": m,
        "history": hist,
        "move_first": _move(fz, z_eval, cfg.n_eval),  # ||f(z) - z||
        "move_second": _move(ffz, fz, cfg.n_eval),  # ||f(f(z)) - f(z)||
        "rec": _move(fx, x_eval, cfg.n_eval),  # ||f(x) - x|| on fresh ring data
        "samples": fz.reshape(n, cfg.n_eval, 2)[:, :500].tolist() if n else [],
        "parameters": sum(p.numel() for p in f.parameters()) // n,
    }


def train_wgan_gp(cfg: RingConfig, seeds: list[int], *, base_seed: int, steps: int | None = None) -> dict[str, Any]:
    """Train a WGAN-GP (generator R^2 -> R^2 from the same N(0, I) noise, critic R^2 -> R) for every seed at once."""
    steps = cfg.steps if steps is None else steps
    g = StackedMLP((2, cfg.hidden, cfg.hidden, 2), seeds, salt=2)
    d = StackedMLP((2, cfg.hidden, cfg.hidden, 1), seeds, salt=3)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    gen = torch.Generator().manual_seed(base_seed)
    n, b = len(seeds), cfg.batch_size
    eval_gen = torch.Generator().manual_seed(base_seed + 777)
    z_eval = torch.randn(n * cfg.n_eval, 2, generator=eval_gen)
    with torch.no_grad():
        init = ring_metrics(cfg, g(z_eval))
    hist: list[dict[str, float]] = []
    for t in range(steps):
        for _ in range(cfg.n_critic):
            x = sample_ring(cfg, n * b, gen)
            with torch.no_grad():
                fake = g(torch.randn(n * b, 2, generator=gen))
            eps = torch.rand(n * b, 1, generator=gen)
            mid = (eps * x + (1 - eps) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(d(mid).sum(), mid, create_graph=True)
            gp = (grad.norm(dim=-1) - 1).square().mean()
            wdist = d(x).mean() - d(fake).mean()
            loss_d = -wdist + cfg.gp_weight * gp
            opt_d.zero_grad(set_to_none=True)
            (loss_d * n).backward()
            opt_d.step()
        loss_g = -d(g(torch.randn(n * b, 2, generator=gen))).mean()
        opt_g.zero_grad(set_to_none=True)
        (loss_g * n).backward()
        opt_g.step()
        if t % max(1, steps // 10) == 0 or t == steps - 1:
            hist.append(
                {
                    "step": t,
                    "loss_d": float(loss_d.detach()),
                    "loss_g": float(loss_g.detach()),
                    "wdist": float(wdist.detach()),
                }
            )
    with torch.no_grad():
        gz = g(z_eval)
    return {
        "init": init,
        "final": ring_metrics(cfg, gz),
        "history": hist,
        "move_first": _move(gz, z_eval, cfg.n_eval),
        "samples": gz.reshape(n, cfg.n_eval, 2)[:, :500].tolist() if n else [],
        "parameters": (sum(p.numel() for p in g.parameters()) + sum(p.numel() for p in d.parameters())) // n,
    }
