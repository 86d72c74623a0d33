"""Multi-task loss weighting on real MultiMNIST plus a large-scale regression task (kexue.fm/archives/8870).

Setting. Real MultiMNIST (:func:`kexue.data.load_multimnist`: two MNIST digits overlaid on a 36x36 canvas)
gives
two 10-way classification tasks (top-left digit A, bottom-right digit B). A third task regresses the image's
ink
mass (sum of pixel intensities, standardised with the training mean/std) with an MSE multiplied by
``reg_scale``: at ``reg_scale = 1000`` its loss is about 10^3 times the classification losses (the "different
dimensions" situation of the article); at ``reg_scale = 1`` the same task is on the classification scale. A
shared
convolutional trunk feeds three linear heads; every strategy of :mod:`kexue.losses.multitask` trains the same
network with Adam through :func:`kexue.train.fit` (``manual_backward=True``: the strategy writes ``.grad``).

Metrics (test set): accuracy of each digit, R^2 of the ink regression. Normalised per-task score:
classification
``(acc - 0.1) / 0.9`` (0 = chance, 1 = perfect), regression ``R^2`` (0 = predicting the mean, 1 = perfect);
the
worst-task score is their minimum and the mean-task score their mean.

Claims (the article has no experiments; these are its arguments turned into predicates, thresholds fixed
before
any run):

* ``equal_dominated``: adding raw losses of different scale lets the largest dominate. Predicate: with equal
  weighting the mean classification score at ``reg_scale = 1000`` is lower than at ``reg_scale = 1`` beyond
  seed
  noise (:func:`compare`, two standard errors). Within noise -> inconclusive; higher -> not reproduced.
* ``scale_invariance``: initial-loss, prior-loss, real-time and gradient-norm normalisation are invariant to
  the
  scale of a loss, so rescaling the regression loss by 1000 must leave their results unchanged. The theorem is
  exact, so same-seed runs at the two scales should differ only by floating-point rounding that chaotic
  training
  amplifies. Predicate: for every one of the four schemes and every task, the mean (over seeds) of the paired
  score difference between the two scales is at most ``invariance_tol = 0.02`` (2 points of normalised
  score, well
  under the differences the article's argument predicts for a non-invariant scheme; equal weighting is
  reported
  alongside as the control). Any exceedance -> not reproduced.
* ``gamma_tradeoff``: the power mean with larger gamma focuses on the worst task, trading mean-task for
  worst-task performance. The power mean is applied to prior-normalised (dimensionless) losses, since on raw
  losses every gamma > 0 would simply be dominated by the large-scale task. Predicate: the worst-task score
  at the
  largest gamma exceeds the one at gamma = 0 beyond seed noise, and the mean-task score does not rise beyond
  noise. Worst-task gap within noise -> inconclusive; worse worst task -> not reproduced.

Budget. ``quick`` trains 3,000 images for 3 epochs (about 140 Adam steps) per run, 3 seeds: this is a short
budget, so absolute accuracies are far from converged MultiMNIST numbers and only the comparisons above are
claimed. It runs every strategy at ``reg_scale = 1000`` and the invariant schemes plus equal weighting at
``reg_scale = 1``. DWA only changes its weights from the third epoch on (it needs two past epochs), so at this
budget it is nearly equal weighting. ``full`` uses the whole training set and more epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.data import load_multimnist
from kexue.losses import multitask as mt
from kexue.train import fit, seed_all

from ._base import Result, claim, compare, mean_std, new_figure, save_figure

NAME = "multitask"
ORDER = 50
TITLE = "Multi-task loss weighting (MultiMNIST + ink-mass regression)"
ARTICLE = "https://kexue.fm/archives/8870"
CLAIMS = {
    "equal_dominated": ("With an equal-weight sum, the task whose loss is ~10^3 larger dominates the shared trunk."),
    "scale_invariance": (
        "Initial-loss, prior-loss, real-time and gradient-norm normalisation are unaffected by rescaling a task's loss."
    ),
    "gamma_tradeoff": ("A larger power-mean gamma focuses on the worst task, trading mean-task for worst-task score."),
}
INVARIANT = ("initial", "prior", "realtime", "gradient_normalization")
TASKS = ("digit_a", "digit_b", "ink")


@dataclass(frozen=True)
class Config:
    """Settings of the multi-task experiment.

    Attributes:
        seed: base seed; run ``k`` uses ``seed + k``.
        seeds: number of seeds per (strategy, scale).
        strategies: strategies run at the large scale (names of :data:`kexue.losses.multitask.STRATEGIES`;
            ``power_mean`` is run through ``gammas`` instead).
        rescaled_strategies: strategies also run at ``reg_scale = small_scale``.
        gammas: power-mean exponents (on prior-normalised losses) for the gamma sweep.
        large_scale: multiplier of the regression MSE in the main setting.
        small_scale: multiplier in the rescaled setting.
        train_limit: training images.
        val_limit: validation images for the per-epoch curves.
        test_limit: test images for the final metrics.
        epochs: passes over the training images.
        batch_size: images per step.
        lr: Adam learning rate.
        width: channels of the first conv layer (the second has twice as many).
        feature_dim: width of the shared representation.
        invariance_tol: the ``scale_invariance`` tolerance on normalised scores.
    """

    seed: int = 0
    seeds: int = 3
    strategies: tuple[str, ...] = (
        "equal",
        "initial",
        "prior",
        "realtime",
        "uncertainty",
        "dwa",
        "gradient_normalization",
        "gradnorm",
        "mgda",
        "projection",
    )
    rescaled_strategies: tuple[str, ...] = ("equal", "initial", "prior", "realtime", "gradient_normalization")
    gammas: tuple[float, ...] = (-1.0, 0.0, 1.0, 2.0, 4.0)
    large_scale: float = 1000.0
    small_scale: float = 1.0
    train_limit: int | None = 3000
    val_limit: int = 1000
    test_limit: int | None = 2000
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 16
    feature_dim: int = 64
    invariance_tol: float = 0.02


PRESETS = {
    "smoke": Config(
        seeds=1,
        strategies=("equal", "realtime", "gradient_normalization", "mgda"),
        rescaled_strategies=("realtime",),
        gammas=(0.0, 4.0),
        train_limit=256,
        val_limit=128,
        test_limit=256,
        epochs=2,
        batch_size=64,
    ),
    "quick": Config(),
    "full": Config(
        seeds=5,
        strategies=(*Config.strategies, "log", "l2_auxiliary"),
        rescaled_strategies=(*Config.rescaled_strategies, "log", "uncertainty", "mgda"),
        train_limit=None,
        val_limit=5000,
        test_limit=None,
        epochs=10,
        width=32,
        feature_dim=128,
    ),
}


class MultiTaskNet(nn.Module):
    """Shared conv trunk, two 10-way heads and one regression head; owns the weighting strategy.

    The strategy is a sub-module so that its learnable parameters (uncertainty weighting) are optimised and
    its
    buffers (estimates, EMA, learned GradNorm weights) are checkpointed with the model.
    """

    def __init__(self, strategy: mt.MultiTaskStrategy, *, width: int, feature_dim: int) -> None:
        super().__init__()
        # stride-2 convolutions keep a CPU step cheap on 36x36 canvases: 36 -> 16 -> 7
        self.trunk = nn.Sequential(
            nn.Conv2d(1, width, 5, stride=2),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * width * 7 * 7, feature_dim),
            nn.ReLU(),
        )
        self.head_a = nn.Linear(feature_dim, 10)
        self.head_b = nn.Linear(feature_dim, 10)
        self.head_ink = nn.Linear(feature_dim, 1)
        self.strategy = strategy

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.trunk(x)
        return self.head_a(h), self.head_b(h), self.head_ink(h).squeeze(-1)


def _scores(model: MultiTaskNet, x: Tensor, y: Tensor, t: Tensor, batch: int = 1024) -> dict[str, float]:
    dev = next(model.parameters()).device
    outs: list[tuple[Tensor, Tensor, Tensor]] = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            a, b, r = model(x[i : i + batch].to(dev))
            outs.append((a.argmax(-1).cpu(), b.argmax(-1).cpu(), r.float().cpu()))
    pa = torch.cat([o[0] for o in outs])
    pb = torch.cat([o[1] for o in outs])
    pr = torch.cat([o[2] for o in outs])
    acc_a = float((pa == y[:, 0]).float().mean())
    acc_b = float((pb == y[:, 1]).float().mean())
    r2 = 1.0 - float(((pr - t) ** 2).mean() / ((t - t.mean()) ** 2).mean())
    return {"acc_a": acc_a, "acc_b": acc_b, "r2_ink": r2}


def normalised(s: dict[str, float]) -> dict[str, float]:
    """Per-task scores on a common scale (0 = chance / mean predictor, 1 = perfect) plus worst and mean."""
    per = {"digit_a": (s["acc_a"] - 0.1) / 0.9, "digit_b": (s["acc_b"] - 0.1) / 0.9, "ink": s["r2_ink"]}
    vals = list(per.values())
    return {**per, "worst": min(vals), "mean": sum(vals) / len(vals)}


def _variants(cfg: Config) -> list[tuple[str, str, float, float | None]]:
    """(variant id, strategy name, reg scale, gamma)."""
    out: list[tuple[str, str, float, float | None]] = []
    for s in cfg.strategies:
        out.append((f"{s}@{cfg.large_scale:g}", s, cfg.large_scale, None))
    for g in cfg.gammas:
        out.append((f"power_mean(g={g:g})@{cfg.large_scale:g}", "power_mean", cfg.large_scale, g))
    for s in cfg.rescaled_strategies:
        out.append((f"{s}@{cfg.small_scale:g}", s, cfg.small_scale, None))
    return out


def _make_strategy(name: str, scale: float, gamma: float | None, priors: list[float]) -> mt.MultiTaskStrategy:
    scaled = [priors[0], priors[1], priors[2] * scale]
    if name == "prior":
        return mt.PriorLossWeighting(3, prior=scaled)
    if name == "power_mean":
        return mt.PowerMean(3, gamma=0.0 if gamma is None else gamma, normalizers=scaled)
    if name == "projection":
        return mt.PrimaryAuxiliaryProjection(3, primary=0)
    return mt.make_strategy(name, 3)


def _make_step(scale: float) -> Callable[[nn.Module, Sequence[Tensor]], dict[str, Tensor]]:
    """The training step: three task losses, the strategy writes ``.grad`` (``fit(manual_backward=True)``)."""

    def step(m: nn.Module, batch: Sequence[Tensor]) -> dict[str, Tensor]:
        net = cast(MultiTaskNet, getattr(m, "module", m))  # gradient-level strategies need the unwrapped net
        x, ya, yb, t = batch
        a, b, r = net(x)
        losses = [F.cross_entropy(a, ya), F.cross_entropy(b, yb), scale * F.mse_loss(r, t)]
        logs = net.strategy.backward(losses, net.trunk.parameters())
        w = logs["weights"]
        return {
            "loss": sum(loss.detach() for loss in losses),  # type: ignore[dict-item]
            "loss_a": losses[0].detach(),
            "loss_b": losses[1].detach(),
            "loss_ink": losses[2].detach(),
            "w_a": w[0],
            "w_b": w[1],
            "w_ink": w[2],
        }

    return step


def run(cfg: Config, out_dir: Path, *, resume: bool = False) -> Result:
    """Train every (strategy, scale, seed), evaluate on the test set, evaluate the three claims."""
    out_dir = Path(out_dir)
    x_tr, y_tr = load_multimnist("train", limit=cfg.train_limit)
    x_val, y_val = load_multimnist("val", limit=cfg.val_limit)
    x_te, y_te = load_multimnist("test", limit=cfg.test_limit)
    ink_tr = x_tr.sum((1, 2, 3))
    mu, sd = float(ink_tr.mean()), float(ink_tr.std())
    t_tr, t_val, t_te = ((x.sum((1, 2, 3)) - mu) / sd for x in (x_tr, x_val, x_te))
    # prior losses (Su's "先验状态"): label entropies and the target variance, from the training data
    priors = [
        mt.classification_prior_loss(y_tr[:, 0], 10),
        mt.classification_prior_loss(y_tr[:, 1], 10),
        mt.regression_prior_loss(t_tr),
    ]
    steps_per_epoch = x_tr.shape[0] // cfg.batch_size

    runs: dict[str, list[dict[str, Any]]] = {}
    for variant, sname, scale, gamma in _variants(cfg):
        runs[variant] = []
        for k in range(cfg.seeds):
            seed = cfg.seed + k
            seed_all(seed)
            model = MultiTaskNet(
                _make_strategy(sname, scale, gamma, priors), width=cfg.width, feature_dim=cfg.feature_dim
            )

            step = _make_step(scale)

            def after_step(m: nn.Module, global_step: int) -> None:
                strat = getattr(m, "strategy", None)
                if isinstance(strat, mt.DynamicWeightAverage) and global_step % steps_per_epoch == 0:
                    strat.end_epoch()

            def evaluate(m: nn.Module) -> dict[str, float]:
                return normalised(_scores(m, x_val, y_val, t_val))  # type: ignore[arg-type]

            res = fit(
                model,
                [x_tr, y_tr[:, 0], y_tr[:, 1], t_tr],
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=cfg.lr),
                step=step,
                evaluate=evaluate,
                after_step=after_step,
                manual_backward=True,
                checkpoint=out_dir / "checkpoints" / f"{variant}-{seed}.pt",
                resume=resume,
                seed=seed,
                name=f"{NAME}:{variant}:{seed}",
            )
            model.eval()
            test = _scores(model, x_te, y_te, t_te)
            runs[variant].append({"seed": seed, "test": test, "norm": normalised(test), "history": res.history})

    # ------------------------------------------------------------------ aggregate
    def col(variant: str, key: str) -> list[float]:
        return [r["norm"][key] for r in runs[variant]]

    table: dict[str, dict[str, float]] = {}
    for variant, rs in runs.items():
        row: dict[str, float] = {}
        for key in (*TASKS, "worst", "mean"):
            m, s = mean_std(col(variant, key))
            row[key], row[key + "_std"] = m, s
        for key in ("acc_a", "acc_b", "r2_ink"):
            row[key] = mean_std([r["test"][key] for r in rs])[0]
        table[variant] = row

    L, S = f"@{cfg.large_scale:g}", f"@{cfg.small_scale:g}"
    claims = []

    # equal_dominated
    if "equal" in cfg.strategies and "equal" in cfg.rescaled_strategies:
        cls_large = [(a + b) / 2 for a, b in zip(col("equal" + L, "digit_a"), col("equal" + L, "digit_b"))]
        cls_small = [(a + b) / 2 for a, b in zip(col("equal" + S, "digit_a"), col("equal" + S, "digit_b"))]
        holds = compare(cls_small, cls_large)
        ml, mss = mean_std(cls_large)[0], mean_std(cls_small)[0]
        claims.append(
            claim(
                "equal_dominated",
                CLAIMS["equal_dominated"],
                ARTICLE + " (5.2, item 1)",
                holds=holds,
                evidence=(
                    f"equal weighting, mean classification score {ml:.3f} with the ink loss "
                    f"x{cfg.large_scale:g} vs "
                    f"{mss:.3f} at x{cfg.small_scale:g} ({cfg.seeds} seeds); ink R^2 "
                    f"{table['equal' + L]['ink']:.3f} vs {table['equal' + S]['ink']:.3f}"
                ),
                measured={"cls_score_large": ml, "cls_score_small": mss},
            )
        )

    # scale_invariance
    inv = [s for s in INVARIANT if s in cfg.strategies and s in cfg.rescaled_strategies]
    if inv:
        diffs: dict[str, float] = {}
        for sn in (*inv, "equal"):
            if sn not in cfg.strategies or sn not in cfg.rescaled_strategies:
                continue
            diffs[sn] = max(
                abs(sum(a - b for a, b in zip(col(sn + L, key), col(sn + S, key))) / cfg.seeds) for key in TASKS
            )
        worst = max(diffs[sn] for sn in inv)
        claims.append(
            claim(
                "scale_invariance",
                CLAIMS["scale_invariance"],
                ARTICLE + " (5.2, items 2-4 and 8)",
                holds=worst <= cfg.invariance_tol,
                evidence=(
                    "largest mean paired change of a task score when the ink loss goes from "
                    f"x{cfg.small_scale:g} to x{cfg.large_scale:g}: "
                    + ", ".join(f"{sn} {d:.4f}" for sn, d in diffs.items())
                    + f" (tolerance {cfg.invariance_tol}; equal weighting is the non-invariant control). "
                    "For scale: largest seed std of a task score at the large scale: "
                    + ", ".join(f"{sn} {max(table[sn + L][key + '_std'] for key in TASKS):.4f}" for sn in diffs)
                ),
                measured={f"max_change_{sn}": d for sn, d in diffs.items()},
            )
        )

    # gamma_tradeoff
    if len(cfg.gammas) >= 2 and 0.0 in cfg.gammas and max(cfg.gammas) > 0:
        g_hi = max(cfg.gammas)
        v0, vh = f"power_mean(g=0){L}", f"power_mean(g={g_hi:g}){L}"
        worse_worst = compare(col(vh, "worst"), col(v0, "worst"))
        mean_up = compare(col(vh, "mean"), col(v0, "mean"))
        holds_g: bool | None
        holds_g = None if worse_worst is None else bool(worse_worst) and mean_up is not True
        sweep = ", ".join(
            f"g={g:g}: worst {table[f'power_mean(g={g:g}){L}']['worst']:.3f} / mean "
            f"{table[f'power_mean(g={g:g}){L}']['mean']:.3f}"
            for g in cfg.gammas
        )
        claims.append(
            claim(
                "gamma_tradeoff",
                CLAIMS["gamma_tradeoff"],
                ARTICLE + " (5.2, item 6)",
                holds=holds_g,
                evidence=(
                    f"power mean of prior-normalised losses, {cfg.seeds} seeds: {sweep}. "
                    f"Worst task at g={g_hi:g} vs g=0: "
                    + {True: "higher beyond noise", False: "lower beyond noise", None: "within noise"}[worse_worst]
                    + "; mean task: "
                    + {True: "higher beyond noise", False: "lower beyond noise", None: "within noise"}[mean_up]
                ),
                measured={
                    "worst_g0": table[v0]["worst"],
                    "worst_gmax": table[vh]["worst"],
                    "mean_g0": table[v0]["mean"],
                    "mean_gmax": table[vh]["mean"],
                },
            )
        )

    plots = [_plot_curves(runs, cfg, out_dir), _plot_table(table, out_dir), _plot_gamma(table, cfg, out_dir)]
    metrics: dict[str, Any] = {
        "table": table,
        "runs": {v: [{k: r[k] for k in ("seed", "test", "norm")} for r in rs] for v, rs in runs.items()},
        "priors": priors,
        "ink_mean": mu,
        "ink_std": sd,
        "n_train": int(x_tr.shape[0]),
        "n_test": int(x_te.shape[0]),
        "first_loss": {v: rs[0]["history"][0]["loss"] for v, rs in runs.items()},
        "last_loss": {v: rs[0]["history"][-1]["loss"] for v, rs in runs.items()},
    }
    return Result(metrics=metrics, claims=claims, plots=plots)


def _plot_curves(runs: dict[str, list[dict[str, Any]]], cfg: Config, out_dir: Path) -> str:
    fig, ax = new_figure(3, 1, width=4.6)
    for variant, rs in runs.items():
        if not variant.endswith(f"@{cfg.large_scale:g}") or variant.startswith("power_mean"):
            continue
        epochs = [h["epoch"] for h in rs[0]["history"]]
        for j, task in enumerate(TASKS):
            vals = [sum(r["history"][e][task] for r in rs) / len(rs) for e in range(len(epochs))]
            ax[0, j].plot(epochs, vals, marker="o", label=variant.split("@")[0])
    for j, task in enumerate(TASKS):
        ax[0, j].set(xlabel="epoch", ylabel="validation score", title=f"{task} (ink loss x{cfg.large_scale:g})")
    ax[0, 2].legend(fontsize=7)
    return save_figure(fig, out_dir, "multitask_curves")


def _plot_table(table: dict[str, dict[str, float]], out_dir: Path) -> str:
    names = list(table)
    cols = [*TASKS, "worst", "mean"]
    data = [[table[n][c] for c in cols] for n in names]
    fig, ax = new_figure(1, 1, width=6.5, height=0.32 * len(names) + 1.2)
    a = ax[0, 0]
    im = a.imshow(data, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    a.set_xticks(range(len(cols)), cols)
    a.set_yticks(range(len(names)), names, fontsize=7)
    for i, rowv in enumerate(data):
        for j, v in enumerate(rowv):
            a.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    a.set_title("normalised test score (mean over seeds)")
    fig.colorbar(im, ax=a)
    return save_figure(fig, out_dir, "multitask_table")


def _plot_gamma(table: dict[str, dict[str, float]], cfg: Config, out_dir: Path) -> str:
    fig, ax = new_figure(1, 1)
    a = ax[0, 0]
    L = f"@{cfg.large_scale:g}"
    gs = [g for g in cfg.gammas if f"power_mean(g={g:g}){L}" in table]
    for key in ("worst", "mean"):
        m = [table[f"power_mean(g={g:g}){L}"][key] for g in gs]
        s = [table[f"power_mean(g={g:g}){L}"][key + "_std"] for g in gs]
        a.errorbar(gs, m, yerr=s, marker="o", capsize=3, label=f"{key}-task score")
    a.set(
        xlabel="gamma (power mean of prior-normalised losses)",
        ylabel="normalised test score",
        title="gamma sweep",
    )
    a.legend()
    if not gs or any(math.isnan(v) for v in gs):
        a.set_title("gamma sweep (no runs)")
    return save_figure(fig, out_dir, "multitask_gamma")
