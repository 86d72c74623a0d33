"""FlatNCE: is small-batch contrastive learning held back by floating-point error? (kexue.fm/archives/8586)

Su Jianlin's article explains Chen et al. 2021 (FlatNCE, arXiv 2107.01152): once the positive dominates, the
InfoNCE loss ``log(1 + xi)`` and its gradient are computed from ``1 + xi`` with ``xi`` below float32
precision, so the update direction becomes rounding noise that Adam then turns into full-size steps; FlatNCE
(gradient of ``log xi``, computed by a stable log-sum-exp) keeps the direction exact. Per anchor FlatNCE's
gradient is InfoNCE's times ``(1 + xi) / xi``, so FlatNCE also *re-weights* anchors. The stable InfoNCE
control ``softplus(log xi)`` has InfoNCE's exact value and gradient without the float error, which separates
the two explanations.

Part 1, float error (synthetic): a unit anchor, a positive at cosine 0.98 and K-1
random unit negatives in 128 dimensions, scores cos / tau, for tau in {0.05, 0.1, 0.5} and K in {16, 256},
many draws. For plain InfoNCE (``F.cross_entropy``), stable InfoNCE and FlatNCE we compare float32 with
float64 (stable InfoNCE in float64 is the reference of both InfoNCE forms): relative loss error and the cosine
between the float32 and float64 gradients w.r.t. the anchor. A second sweep varies the temperature from 0.02
to 1 to plot the gradient cosine against ``xi``.

Part 2, training (real Fashion-MNIST): SimCLR (two augmented views, NT-Xent with 2B-2 negatives per anchor,
tau = 0.1 as in FlatCLR, Adam) with :class:`kexue.modules.SmallCNN` as encoder and a 2-layer projection head,
for every batch size in the grid and each loss (plain InfoNCE, stable InfoNCE, FlatNCE), with the same seeds,
data order, augmentations and number of epochs (so small batches take more steps: equal examples seen). Frozen
encoder features are scored by a linear probe and weighted kNN on the test set. Every step logs the fraction of
anchors whose ``xi`` is below 1e-6, where float32 InfoNCE is corrupted; **saturation** is that fraction over all
anchors and steps of the plain-InfoNCE runs at the smallest batch.

Claims and thresholds (fixed before the first run). Part 1 is deterministic arithmetic on fixed draws: its three
claims are ``check``s. Part 2 compares arms that share seeds (same initialisation, data order and augmentations),
so every comparison is **paired** over seeds (:mod:`kexue.experiments.stats`: paired t, Student critical values,
two-sided 5 %; "≈" is two one-sided tests, TOST). The margin for "better" and "≈" is ``margin`` = 1 point of
linear-probe accuracy; the article and paper give no small-batch effect size we could retrieve.

* ``float32_infonce_fails`` [article] (check): at tau = 0.05, K = 16 float32 InfoNCE loses the loss and the
  gradient direction. Holds when the worst draw's float32-vs-float64 gradient cosine for plain InfoNCE is
  below 0.9 (a direction error above 25 degrees; a single numpy draw gave 0.46) while FlatNCE's is above
  0.9999 in every cell (float32 rounding of a well-conditioned 128-dim gradient is ~1e-6 relative, so 0.9999
  leaves a wide margin).
* ``stable_control_exact`` [derived] (check): stable InfoNCE in float32 matches float64 InfoNCE in every
  cell: loss relative error below 1e-4 and gradient cosine above 0.9999 (same margins).
* ``large_tau_unaffected`` [derived] (check): at tau = 0.5 float32 InfoNCE is exact too (cosine > 0.9999).
* ``flatnce_small_batch`` [article]: at the smallest batch size FlatNCE gives better linear-probe accuracy than
  plain InfoNCE (paired t).
* ``float_error_explains`` [article, the paper's hypothesis]: the small-batch gap is float error. Float error
  can only act where anchors saturate, so the claim is **not testable** when saturation is at most 1 %
  (float32 InfoNCE is then exact and plain and stable InfoNCE are the same computation up to rounding; their
  gap is a free measure of run-to-run noise). Otherwise reproduced when stable > plain by more than the margin
  (paired t) and FlatNCE ≈ stable (TOST); not reproduced when stable ≈ plain (TOST) or stable < plain
  (paired t); inconclusive otherwise.
* ``reweighting_explains`` [derived]: FlatNCE's effect is its per-anchor re-weighting ``(1 + xi) / xi``.
  Reproduced when stable ≈ plain (TOST) and FlatNCE > stable by more than the margin (paired t); not
  reproduced when FlatNCE ≈ stable (TOST), FlatNCE < stable (paired t), or stable > plain by more than the
  margin (float precision matters); inconclusive otherwise. The two explanations are mutually exclusive: one
  needs stable > plain beyond the margin, the other stable ≈ plain within it.

The ``quick`` preset (about 1.5 minutes of CPU time) trains on 2,048 images for 2 epochs at batch sizes 16
and 256 only, 3 seeds; that small budget may leave the training claims inconclusive, and the verdicts say so.
``full`` is the faithful grid {16, 32, 64, 256} on all 55,000 training images for 20 epochs (a GPU run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.data import ContrastiveAugment, load_fashion_mnist
from kexue.losses import flat_nce, info_nce
from kexue.modules import SmallCNN
from kexue.train import fit, knn_accuracy, linear_probe_accuracy, seed_all

from . import stats
from ._base import Claim, Result, better, check, claim, mean_std, new_figure, not_run, save_figure

NAME = "flatnce"
ORDER = 20
TITLE = "FlatNCE: float error in small-batch contrastive learning"
ARTICLE = "https://kexue.fm/archives/8586"
CLAIMS = {
    "float32_infonce_fails": (
        "In float32, InfoNCE's loss and anchor gradient turn into rounding noise when xi is tiny "
        "(tau=0.05, K=16), while FlatNCE stays exact."
    ),
    "stable_control_exact": (
        "softplus(logsumexp_{i!=t}(s_i - s_t)) computes InfoNCE in float32 as accurately as float64."
    ),
    "large_tau_unaffected": "At tau=0.5 the float error does not appear.",
    "flatnce_small_batch": "At small batch sizes FlatNCE learns better representations than InfoNCE.",
    "float_error_explains": ("Small-batch InfoNCE is held back by floating-point error (the paper's explanation)."),
    "reweighting_explains": (
        "FlatNCE's effect comes from its per-anchor re-weighting (1+xi)/xi, not from float precision."
    ),
}
LOSSES = ("infonce", "stable", "flatnce")
SATURATION_MIN = 0.01  # pre-registered: float error is testable only if > 1 % of anchors reach xi < 1e-6


@dataclass(frozen=True)
class FloatConfig:
    """Part 1 (synthetic float-error table).

    Attributes:
        temperatures: tau values of the table.
        ks: candidate counts K (1 positive + K-1 negatives).
        dim: embedding dimension.
        cos_pos: cosine of the positive with the anchor.
        draws: random draws per cell.
        sweep_points: positive cosines in the xi sweep (plot).
    """

    temperatures: tuple[float, ...] = (0.05, 0.1, 0.5)
    ks: tuple[int, ...] = (16, 256)
    dim: int = 128
    cos_pos: float = 0.98
    draws: int = 50
    sweep_points: int = 40


@dataclass(frozen=True)
class Config:
    """Settings of the FlatNCE experiment.

    Attributes:
        seed: first seed; ``seeds`` runs use ``seed, seed+1, ...``.
        seeds: seeds per (loss, batch size).
        batch_sizes: SimCLR batch sizes (views per side).
        epochs: passes over the training images (equal for every batch size).
        train_limit: self-supervised training images (``None`` = all 55,000).
        probe_train: labelled training images for the linear probe / kNN.
        probe_test: test images scored.
        temperature: tau (FlatCLR default 0.1).
        lr: Adam learning rate, constant over batch sizes (cosine decay to 0 within a run).
        width: SmallCNN width.
        feature_dim: encoder output (probed) dimension.
        proj_dim: projection head output.
        knn_k: neighbours of the kNN evaluator.
        margin: linear-probe accuracy margin of "better" and "≈" in the training claims (pre-registered).
        float_cfg: part 1 settings.
    """

    seed: int = 0
    seeds: int = 3
    batch_sizes: tuple[int, ...] = (16, 256)
    epochs: int = 2
    train_limit: int | None = 2048
    probe_train: int = 2000
    probe_test: int = 2000
    temperature: float = 0.1
    lr: float = 1e-3
    width: int = 8
    feature_dim: int = 128
    proj_dim: int = 64
    knn_k: int = 20
    margin: float = 0.01
    float_cfg: FloatConfig = field(default_factory=FloatConfig)


PRESETS = {
    "smoke": Config(
        seeds=2,
        batch_sizes=(16,),
        epochs=2,
        train_limit=64,
        probe_train=200,
        probe_test=200,
        knn_k=5,
        float_cfg=FloatConfig(draws=3, sweep_points=4),
    ),
    "quick": Config(),
    "full": Config(
        batch_sizes=(16, 32, 64, 256),
        epochs=20,
        train_limit=None,
        probe_train=10000,
        probe_test=10000,
        width=32,
        float_cfg=FloatConfig(draws=200, sweep_points=80),
    ),
}


# ---------------------------------------------------------------------------------- part 1: float error


def _draw(k: int, dim: int, cos_pos: float, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Unit anchor, positive at cosine ``cos_pos``, ``k - 1`` random unit negatives (float64)."""
    x = F.normalize(torch.randn(dim, generator=g, dtype=torch.float64), dim=0)
    u = torch.randn(dim, generator=g, dtype=torch.float64)
    u = F.normalize(u - (u @ x) * x, dim=0)
    pos = cos_pos * x + math.sqrt(max(1 - cos_pos**2, 0.0)) * u
    negs = F.normalize(torch.randn(k - 1, dim, generator=g, dtype=torch.float64), dim=1)
    return x, pos, negs


def _loss_and_grad(kind: str, x: Tensor, pos: Tensor, negs: Tensor, tau: float) -> tuple[float, Tensor]:
    q = x[None].clone().requires_grad_()
    kw: dict[str, Any] = {"temperature": tau, "negatives": negs, "normalize": False}
    loss = flat_nce(q, pos[None], **kw) if kind == "flatnce" else info_nce(q, pos[None], stable=kind == "stable", **kw)
    (g,) = torch.autograd.grad(loss, q)
    return float(loss.detach()), g[0].double()


def _compare_precisions(kind: str, x: Tensor, pos: Tensor, negs: Tensor, tau: float) -> tuple[float, float, float]:
    """(float64 loss, float32 loss, cosine of float32 vs float64 anchor gradients).

    The float64 reference of both InfoNCE forms is the stable one: plain InfoNCE rounds ``1 + xi`` in float64
    too once ``xi`` < 1e-16 (tau = 0.02 in the sweep), which would make a broken float32 gradient look exact.
    """
    l64, g64 = _loss_and_grad("flatnce" if kind == "flatnce" else "stable", x, pos, negs, tau)
    l32, g32 = _loss_and_grad(kind, x.float(), pos.float(), negs.float(), tau)
    return l64, l32, _cosine(g32, g64)


def _cosine(a: Tensor, b: Tensor) -> float:
    """Cosine in float64, no eps floor: gradients can be ~1e-18 (F.cosine_similarity floors at 1e-8)."""
    a, b = a.double(), b.double()
    a, b = (
        a / a.abs().max().clamp_min(1e-300),
        b / b.abs().max().clamp_min(1e-300),
    )  # rescale before the norms
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))


def _float_table(fc: FloatConfig, seed: int) -> list[dict[str, float | str]]:
    rows: list[dict[str, float | str]] = []
    for tau in fc.temperatures:
        for k in fc.ks:
            g = torch.Generator().manual_seed(seed * 7919 + k)
            draws = [_draw(k, fc.dim, fc.cos_pos, g) for _ in range(fc.draws)]
            xi = [
                float(flat_nce(d[0][None], d[1][None], temperature=tau, negatives=d[2], normalize=False).exp())
                for d in draws
            ]
            for kind in LOSSES:
                res = [_compare_precisions(kind, *d, tau) for d in draws]
                rel = [abs(l32 - l64) / max(abs(l64), 1e-300) for l64, l32, _ in res]
                cos = [c for _, _, c in res]
                rows.append(
                    {
                        "loss": kind,
                        "tau": tau,
                        "K": k,
                        "xi_median": float(torch.tensor(xi).median()),
                        "rel_err_median": float(torch.tensor(rel).median()),
                        "rel_err_max": max(rel),
                        "cos_median": float(torch.tensor(cos).median()),
                        "cos_min": min(cos),
                        "zero_loss_fraction": sum(1 for _, l32, _ in res if l32 == 0.0) / len(res),
                    }
                )
    return rows


def _xi_sweep(fc: FloatConfig, seed: int, k: int) -> dict[str, list[float]]:
    """Gradient cosine (float32 vs float64) against xi: temperatures 0.02..1 on fresh draws."""
    g = torch.Generator().manual_seed(seed + 17)
    out: dict[str, list[float]] = {"xi": [], "tau": [], **{kind: [] for kind in LOSSES}}
    for tau in torch.logspace(math.log10(0.02), 0.0, fc.sweep_points, dtype=torch.float64).tolist():
        x, pos, negs = _draw(k, fc.dim, fc.cos_pos, g)
        out["tau"].append(tau)
        out["xi"].append(float(flat_nce(x[None], pos[None], temperature=tau, negatives=negs, normalize=False).exp()))
        for kind in LOSSES:
            out[kind].append(_compare_precisions(kind, x, pos, negs, tau)[2])
    return out


# ---------------------------------------------------------------------------------- part 2: training


class _SimCLRNet(nn.Module):
    """Encoder + 2-layer projection head (SimCLR); ``forward`` gives projections, ``features`` the encoder."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.encoder = SmallCNN(num_classes=0, width=cfg.width, feature_dim=cfg.feature_dim)
        self.head = nn.Sequential(
            nn.Linear(cfg.feature_dim, cfg.feature_dim), nn.ReLU(), nn.Linear(cfg.feature_dim, cfg.proj_dim)
        )

    def features(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


def _make_step(kind: str, tau: float, aug: ContrastiveAugment):  # type: ignore[no-untyped-def]
    log_tiny = math.log(1e-6)

    def step(model: nn.Module, batch: list[Tensor]) -> dict[str, Tensor]:
        x = batch[0]
        b = x.shape[0]
        z = model(torch.cat([aug(x), aug(x)]))  # both views in one forward
        q, k = z[:b], z[b:]
        if kind == "flatnce":
            loss, infonce_value = flat_nce(q, k, temperature=tau, symmetric=True, return_info_nce=True)
        else:
            loss = info_nce(q, k, temperature=tau, symmetric=True, stable=kind == "stable")
            infonce_value = info_nce(q.detach(), k.detach(), temperature=tau, symmetric=True, stable=True)
        with torch.no_grad():  # log xi per anchor, stable in float32
            log_xi = flat_nce(q.detach(), k.detach(), temperature=tau, symmetric=True, reduction="none")
        return {
            "loss": loss,
            "infonce": infonce_value,
            "log_xi_mean": log_xi.mean(),
            "frac_xi_below_1e-6": (log_xi < log_tiny).float().mean(),
        }

    return step


@torch.no_grad()
def _features(model: _SimCLRNet, x: Tensor, chunk: int = 1024) -> Tensor:
    dev = next(model.parameters()).device
    return torch.cat([model.features(x[i : i + chunk].to(dev)).cpu() for i in range(0, x.shape[0], chunk)])


def _train_one(
    cfg: Config,
    kind: str,
    batch_size: int,
    seed: int,
    data: dict[str, Tensor],
    out_dir: Path,
    resume: bool,
) -> dict[str, Any]:
    seed_all(seed)  # identical initialisation for every loss at this seed
    model = _SimCLRNet(cfg)
    aug = ContrastiveAugment()
    steps_per_epoch = data["x_train"].shape[0] // batch_size
    res = fit(
        model,
        [data["x_train"]],
        epochs=cfg.epochs,
        batch_size=batch_size,
        optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=cfg.lr),
        scheduler=lambda o, total: torch.optim.lr_scheduler.CosineAnnealingLR(o, max(total, 1)),
        step=_make_step(kind, cfg.temperature, aug),
        checkpoint=out_dir / "checkpoints" / f"{kind}-b{batch_size}-{seed}.pt",
        resume=resume,
        seed=seed,
        name=f"{NAME}-{kind}-b{batch_size}-s{seed}",
    )
    model.eval()
    tr = _features(model, data["x_probe"])
    te = _features(model, data["x_test"])
    return {
        "loss": kind,
        "batch_size": batch_size,
        "seed": seed,
        "steps": steps_per_epoch * cfg.epochs,
        "linear_probe": linear_probe_accuracy(tr, data["y_probe"], te, data["y_test"], seed=seed),
        "knn": knn_accuracy(tr, data["y_probe"], te, data["y_test"], k=cfg.knn_k),
        "history": res.history,
        "first_loss": res.history[0]["loss"],
        "last_loss": res.history[-1]["loss"],
        "frac_xi_below_1e-6": max(h["frac_xi_below_1e-6"] for h in res.history),
        # every epoch has the same number of steps and anchors: the mean of the epoch means is the overall fraction
        "saturation": sum(h["frac_xi_below_1e-6"] for h in res.history) / len(res.history),
        "log_xi_mean_last": res.history[-1]["log_xi_mean"],
    }


# ---------------------------------------------------------------------------------- run


def _cell(rows: list[dict[str, Any]], kind: str, tau: float, k: int) -> dict[str, Any]:
    return next(r for r in rows if r["loss"] == kind and r["tau"] == tau and r["K"] == k)


def _fmt(vals: list[float]) -> str:
    m, s = mean_std(vals)
    return f"{m:.4f}±{s:.4f}"


def run(cfg: Config, out_dir: Path, *, resume: bool = False) -> Result:
    """Float-error table, xi sweep, and SimCLR training on Fashion-MNIST for each loss and batch size."""
    out_dir = Path(out_dir)
    fc = cfg.float_cfg
    table = _float_table(fc, cfg.seed)
    tau_s, k_s = min(fc.temperatures), min(fc.ks)
    sweeps = {k: _xi_sweep(fc, cfg.seed, k) for k in fc.ks}

    x_tr, _ = load_fashion_mnist("train", limit=cfg.train_limit)
    x_pr, y_pr = load_fashion_mnist("train", limit=cfg.probe_train)
    x_te, y_te = load_fashion_mnist("test", limit=cfg.probe_test)
    data = {"x_train": x_tr, "x_probe": x_pr, "y_probe": y_pr, "x_test": x_te, "y_test": y_te}
    runs = [
        _train_one(cfg, kind, bs, cfg.seed + s, data, out_dir, resume)
        for bs in cfg.batch_sizes
        for s in range(cfg.seeds)
        for kind in LOSSES
    ]

    baseline = []  # the untrained encoder at each seed: how much did contrastive training add?
    for s in range(cfg.seeds):
        seed_all(cfg.seed + s)
        net = _SimCLRNet(cfg).eval()
        tr, te = _features(net, x_pr), _features(net, x_te)
        baseline.append(
            {
                "linear_probe": linear_probe_accuracy(tr, y_pr, te, y_te, seed=cfg.seed + s),
                "knn": knn_accuracy(tr, y_pr, te, y_te, k=cfg.knn_k),
            }
        )

    def acc(kind: str, bs: int, metric: str = "linear_probe") -> list[float]:
        return [r[metric] for r in runs if r["loss"] == kind and r["batch_size"] == bs]

    # ---- plots
    fig, ax = new_figure(3, 1, width=5.0)
    for j, k in enumerate(fc.ks[:2]):
        sw = sweeps[k]
        for kind in LOSSES:
            ax[0, j].semilogx(sw["xi"], sw[kind], marker=".", label=kind)
        ax[0, j].axvline(torch.finfo(torch.float32).eps, color="grey", ls=":", label="float32 eps")
        ax[0, j].set(
            xlabel="xi (float64)",
            ylabel="cos(grad f32, grad f64)",
            title=f"anchor gradient, K={k}, tau 0.02..1",
            ylim=(-0.05, 1.05),
        )
        ax[0, j].legend(fontsize=7)
    labels = [f"t{r['tau']}/K{r['K']}" for r in table if r["loss"] == "infonce"]
    for i, kind in enumerate(LOSSES):
        cos_min = [r["cos_min"] for r in table if r["loss"] == kind]
        ax[0, 2].bar([p + 0.27 * (i - 1) for p in range(len(labels))], cos_min, width=0.27, label=kind)
    ax[0, 2].set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
    ax[0, 2].set(ylabel="worst-draw gradient cosine", title="float32 vs float64", ylim=(0, 1.05))
    ax[0, 2].legend(fontsize=7)
    plots = [save_figure(fig, out_dir, "flatnce_float_error")]

    fig, ax = new_figure(3, 1, width=4.6)
    bss = list(cfg.batch_sizes)
    for kind in LOSSES:
        for j, metric in enumerate(("linear_probe", "knn")):
            ms = [mean_std(acc(kind, b, metric)) for b in bss]
            ax[0, j].errorbar(bss, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", capsize=3, label=kind)
        hist = [r["history"] for r in runs if r["loss"] == kind and r["batch_size"] == bss[0]]
        ep = [h["epoch"] for h in hist[0]]
        ax[0, 2].plot(
            ep, [mean_std([h[i]["infonce"] for h in hist])[0] for i in range(len(ep))], marker="o", label=kind
        )
    for j, metric in enumerate(("linear-probe accuracy", "kNN accuracy")):
        ax[0, j].set_xscale("log", base=2)
        ax[0, j].set(xlabel="batch size", ylabel=metric, title=f"Fashion-MNIST, {metric}")
        ax[0, j].legend(fontsize=7)
    ax[0, 2].set(xlabel="epoch", ylabel="InfoNCE value (stable)", title=f"training InfoNCE, batch {bss[0]}")
    ax[0, 2].legend(fontsize=7)
    plots.append(save_figure(fig, out_dir, "flatnce_training"))

    # ---- claims
    claims = []
    plain = _cell(table, "infonce", tau_s, k_s)
    flat_min = min(float(r["cos_min"]) for r in table if r["loss"] == "flatnce")
    claims.append(
        check(
            "float32_infonce_fails",
            CLAIMS["float32_infonce_fails"],
            ARTICLE,
            holds=float(plain["cos_min"]) < 0.9 and flat_min > 0.9999,
            evidence=(
                f"tau={tau_s}, K={k_s}, {fc.draws} draws (median xi {plain['xi_median']:.2g}): float32 "
                f"InfoNCE gradient cosine vs float64 median {plain['cos_median']:.4f}, "
                f"worst {plain['cos_min']:.4f}; "
                f"loss exactly 0 in {plain['zero_loss_fraction']:.0%} of draws, median loss rel. error "
                f"{plain['rel_err_median']:.2g}. FlatNCE worst cosine over all cells {flat_min:.8f} "
                "(thresholds: InfoNCE worst < 0.9, FlatNCE > 0.9999)"
            ),
            measured={"infonce_cos_min": plain["cos_min"], "flatnce_cos_min": flat_min},
            test=f"worst of {fc.draws} draws",
        )
    )
    stable_rows = [r for r in table if r["loss"] == "stable"]
    st_cos = min(float(r["cos_min"]) for r in stable_rows)
    st_rel = max(float(r["rel_err_max"]) for r in stable_rows)
    claims.append(
        check(
            "stable_control_exact",
            CLAIMS["stable_control_exact"],
            ARTICLE + " (our derivation)",
            holds=st_cos > 0.9999 and st_rel < 1e-4,
            evidence=(
                f"stable InfoNCE float32 vs float64 over all {len(stable_rows)} cells: worst gradient cosine "
                f"{st_cos:.8f}, worst loss relative error {st_rel:.2g} (thresholds 0.9999, 1e-4)"
            ),
            measured={"cos_min": st_cos, "rel_err_max": st_rel},
            test=f"worst of {fc.draws} draws",
        )
    )
    big = max(fc.temperatures)
    big_cos = min(float(r["cos_min"]) for r in table if r["loss"] == "infonce" and r["tau"] == big)
    claims.append(
        check(
            "large_tau_unaffected",
            CLAIMS["large_tau_unaffected"],
            ARTICLE + " (our derivation)",
            holds=big_cos > 0.9999,
            evidence=f"float32 InfoNCE at tau={big}: worst gradient cosine {big_cos:.8f} (threshold 0.9999)",
            measured={"cos_min": big_cos},
            test=f"worst of {fc.draws} draws",
        )
    )

    b0 = min(cfg.batch_sizes)
    # runs are ordered by seed within each (batch size, loss): the lists below are aligned for pairing
    lp = {kind: acc(kind, b0) for kind in LOSSES}
    knn = {kind: acc(kind, b0, "knn") for kind in LOSSES}
    sat_runs = [r["saturation"] for r in runs if r["loss"] == "infonce" and r["batch_size"] == b0]
    saturation = sum(sat_runs) / len(sat_runs)
    tiny = max(r["frac_xi_below_1e-6"] for r in runs)
    acc_text = "; ".join(f"{kind} {_fmt(lp[kind])} (kNN {_fmt(knn[kind])})" for kind in LOSSES)
    rand_lp = _fmt([r["linear_probe"] for r in baseline])
    base_evidence = (
        f"batch {b0}, {cfg.seeds} seeds, linear probe: {acc_text}; untrained encoder {rand_lp}; saturation "
        f"(plain-InfoNCE anchors with xi < 1e-6, all steps) {saturation:.2%}"
    )
    claims.append(
        better(
            "flatnce_small_batch",
            CLAIMS["flatnce_small_batch"],
            ARTICLE,
            lp["flatnce"],
            lp["infonce"],
            paired=True,
            names=("FlatNCE", "InfoNCE"),
            evidence=base_evidence + ";",
        )
    )
    claims += _explanation_claims(lp, cfg.margin, saturation, base_evidence)

    summary = {
        f"{kind}_b{bs}": {
            "linear_probe": mean_std(acc(kind, bs))[0],
            "linear_probe_std": mean_std(acc(kind, bs))[1],
            "knn": mean_std(acc(kind, bs, "knn"))[0],
            "knn_std": mean_std(acc(kind, bs, "knn"))[1],
        }
        for kind in LOSSES
        for bs in cfg.batch_sizes
    }
    metrics: dict[str, Any] = {
        "float_error_table": table,
        "xi_sweep": {str(k): v for k, v in sweeps.items()},
        "training_summary": summary,
        "untrained_encoder": {
            "linear_probe": mean_std([r["linear_probe"] for r in baseline])[0],
            "knn": mean_std([r["knn"] for r in baseline])[0],
        },
        "runs": runs,
        "saturation": saturation,
        "saturation_per_seed": sat_runs,
        "frac_xi_below_1e-6_max_any_run": tiny,
        "n_train": int(x_tr.shape[0]),
    }
    return Result(metrics=metrics, claims=claims, plots=plots)


def _explanation_claims(lp: dict[str, list[float]], margin: float, saturation: float, context: str) -> list[Claim]:
    """``float_error_explains`` and ``reweighting_explains`` from paired tests at the smallest batch.

    ``lp[kind]`` holds one linear-probe accuracy per seed, aligned across losses. The two predicates are mutually
    exclusive by construction: float error needs stable > plain beyond ``margin``, re-weighting needs stable ≈
    plain within it.
    """
    st, pl, fl = lp["stable"], lp["infonce"], lp["flatnce"]
    s_gt_p = stats.t_test(st, pl, margin=margin, paired=True)  # stable > plain + margin ?
    s_vs_p = stats.t_test(st, pl, paired=True)
    s_eq_p = stats.equivalent(st, pl, margin=margin, paired=True)[0]
    f_gt_s = stats.t_test(fl, st, margin=margin, paired=True)
    f_vs_s = stats.t_test(fl, st, paired=True)
    f_eq_s = stats.equivalent(fl, st, margin=margin, paired=True)[0]
    tests = (
        f"stable − plain {s_vs_p.describe()} [> +{margin:g}: {_word(s_gt_p.decision)}; ≈ within ±{margin:g} "
        f"(TOST): {_word(s_eq_p)}]; FlatNCE − stable {f_vs_s.describe()} [> +{margin:g}: {_word(f_gt_s.decision)}; "
        f"≈ (TOST): {_word(f_eq_s)}]"
    )
    measured = {
        "saturation": saturation,
        "stable_minus_plain": s_vs_p.diff,
        "flatnce_minus_stable": f_vs_s.diff,
        "margin": margin,
    }
    test = f"paired t (margin {margin:g}) and TOST (margin {margin:g})"
    out = []
    if saturation <= SATURATION_MIN:
        out.append(
            not_run(
                "float_error_explains",
                CLAIMS["float_error_explains"],
                ARTICLE,
                reason=(
                    f"not testable at this budget: only {saturation:.2%} of plain-InfoNCE training anchors had "
                    f"xi < 1e-6 (precondition > {SATURATION_MIN:.0%}), so float32 InfoNCE is exact and there is "
                    f"no float error to explain a gap; plain and stable InfoNCE then differ only by rounding, and "
                    f"their gap measures run-to-run noise. {context}; {tests}"
                ),
            )
        )
    else:
        fe: bool | None = None
        if s_gt_p.decision is True and f_eq_s is True:
            fe = True
        elif s_eq_p is True or s_vs_p.decision is False:
            fe = False
        out.append(
            claim(
                "float_error_explains",
                CLAIMS["float_error_explains"],
                ARTICLE,
                holds=fe,
                evidence=f"{context}; {tests}",
                measured=measured,
                seeds=s_vs_p.n,
                mde=s_vs_p.mde,
                test=test,
            )
        )
    rw: bool | None = None
    if s_eq_p is True and f_gt_s.decision is True:
        rw = True
    elif f_eq_s is True or f_vs_s.decision is False or s_gt_p.decision is True:
        rw = False
    out.append(
        claim(
            "reweighting_explains",
            CLAIMS["reweighting_explains"],
            ARTICLE + " (our derivation)",
            holds=rw,
            evidence=f"{context}; {tests}",
            measured=measured,
            seeds=f_vs_s.n,
            mde=f_vs_s.mde,
            test=test,
        )
    )
    return out


def _word(v: bool | None) -> str:
    return {True: "yes", False: "no", None: "undecided"}[v]
