"""Multi-task loss weighting on real MultiMNIST plus a large-scale regression task (kexue.fm/archives/8870).

Setting. Real MultiMNIST (:func:`kexue.data.load_multimnist`: two MNIST digits overlaid on a 36x36 canvas) gives
two 10-way classification tasks (top-left digit A, bottom-right digit B). A third task regresses the image's ink
mass (sum of pixel intensities, standardised with the training mean/std) with an MSE multiplied by
``reg_scale``: at ``reg_scale = 1000`` its loss is about 10^3 times the classification losses (the "different
dimensions" situation of the article); at ``reg_scale = 1`` the same task is on the classification scale. A
shared convolutional trunk feeds three linear heads; every strategy of :mod:`kexue.losses.multitask` trains the
same network with Adam through :func:`kexue.train.fit` (``manual_backward=True``: the strategy writes ``.grad``).
Initial-loss, prior-loss, real-time and gradient-norm normalisation use the article's formulas, without an
``eps`` in any denominator (``eps = 0``): an ``eps`` is not scale invariant.

Metrics (test set): accuracy of each digit, R^2 of the ink regression. Normalised per-task score:
classification ``(acc - 0.1) / 0.9`` (0 = chance, 1 = perfect), regression ``R^2`` (0 = predicting the mean,
1 = perfect); the worst-task score is their minimum and the mean-task score their mean.

Every arm of one seed starts from the same initialisation and sees the same batches, so arms are compared with
*paired* t tests on per-seed differences (Student critical values; df = seeds - 1), and every empirical claim
reports its minimum detectable effect (MDE). Claims (the article has no experiments; its arguments are turned
into predicates; thresholds and margins fixed before any run):

* ``equal_dominated`` (claim): adding raw losses of different scale lets the largest dominate. Predicate: with
  equal weighting the mean classification score at ``reg_scale = 1000`` is lower than at ``reg_scale = 1``
  (paired t). Undecided -> inconclusive; higher -> not reproduced.
* ``scale_invariance_exact`` (check): initial-loss, prior-loss, real-time and gradient-norm normalisation are
  invariant to the scale of a loss. At a power-of-two scale (``pow2_scale = 2^10``) every product and quotient
  in these schemes is exact in floating point, so from the same seed the shared-trunk gradient at ``2^10`` and
  at ``1`` must be *bit-identical* (checked on the first batch), and for the three loss-level schemes, which
  normalise the whole loss, so must the trained parameters. Gradient normalisation (Eq. 13) normalises only the
  shared parameters' gradient: the ink head keeps its raw gradient, exactly ``2^10`` times larger, and Adam's
  ``eps`` is not scale invariant, so its training is reported but not required to match (a development run
  showed this; the article claims the invariance for the shared update only). Negative control: equal weighting,
  which is not invariant, must differ in both. Every seed is checked.
* ``scale_invariance`` (claim): at a scale that is not a power of two (``reg_scale = 1000``) the same invariance
  holds only up to rounding, which training then amplifies chaotically (one ulp can move a final score a lot).
  Chaos control: the same runs at ``chaos_scale = 1 + 2^-20``, a mathematically identical rescaling whose only
  effect is rounding. Per scheme and seed, ``D_1000`` = the largest change of a task score between scale 1000
  and 1, ``D_chaos`` = the same between ``1 + 2^-20`` and 1. Predicate per scheme: ``D_1000`` and ``D_chaos``
  are equivalent within ``equivalence_margin = 0.05`` normalised-score points (paired TOST at 5 %): the 1000x
  rescaling moves the result no more than rounding does. Negative control: equal weighting must fail the same
  test (if it passes, the test cannot tell and the verdict is inconclusive). Reproduced when all four schemes
  pass; not reproduced when one is shown to differ by more than the margin; inconclusive otherwise.
* ``balance_<scheme>`` (claims, one per scheme: initial, prior, realtime, gradient_normalization): dividing by a
  loss estimate (or normalising each task gradient) restores balance between losses of different scale.
  Predicate: at ``reg_scale = 1000`` the scheme's worst-task score exceeds equal weighting's (paired t).
* ``realtime_good_baseline`` (claim): the article's only empirical statement, "many folk experiments" find
  real-time normalisation a good baseline. Predicate (non-inferiority, margin ``baseline_margin = 0.05``): at
  ``reg_scale = 1000`` its worst-task score is not worse than that of the equal-weight sum at ``reg_scale = 1``,
  i.e. than simply adding losses that are already on one scale; a good baseline recovers what choosing the
  scales by hand gives. The score at ``reg_scale = 1`` is reported alongside.
* ``gamma_worst_task`` (claim): the power mean with a larger gamma focuses on the worst task. The power mean is
  applied to prior-normalised (dimensionless) losses, since on raw losses every gamma > 0 would simply be
  dominated by the large-scale task. Predicate: the worst-task score at the largest gamma exceeds the one at
  gamma = 0 (paired t). The article does not claim a trade-off against the mean-task score; the mean is reported,
  not tested.

Budget. ``quick`` trains 3,000 images for 3 epochs (about 140 Adam steps) per run, 3 seeds (df = 2): a short
budget, so absolute accuracies are far from converged MultiMNIST numbers and only the comparisons above are
claimed. It runs every strategy at ``reg_scale = 1000``, the power-mean sweep at 1000, and equal weighting plus
the four invariant schemes at ``reg_scale`` = 1, ``2^10`` and ``1 + 2^-20``. DWA only changes its weights from
the third epoch on (it needs two past epochs), so at this budget it is nearly equal weighting. ``full`` uses the
whole training set, more epochs and 5 seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.data import load_multimnist
from kexue.losses import multitask as mt
from kexue.train import fit, seed_all

from . import stats
from ._base import Claim, Result, better, claim, mean_std, new_figure, not_run, not_worse, save_figure

NAME = "multitask"
ORDER = 50
TITLE = "Multi-task loss weighting (MultiMNIST + ink-mass regression)"
ARTICLE = "https://kexue.fm/archives/8870"
INVARIANT = ("initial", "prior", "realtime", "gradient_normalization")
GRADIENT_LEVEL = ("gradient_normalization",)  # normalises the shared-trunk gradient only
CLAIMS = {
    "equal_dominated": "With an equal-weight sum, the task whose loss is ~10^3 larger dominates the shared trunk.",
    "scale_invariance_exact": (
        "Initial-loss, prior-loss, real-time and gradient-norm normalisation are unaffected by rescaling a task's "
        "loss: at a power-of-two scale training is bit-identical."
    ),
    "scale_invariance": (
        "Initial-loss, prior-loss, real-time and gradient-norm normalisation are unaffected by rescaling a task's "
        "loss: rescaling by 1000 moves the trained result no more than a rounding-level rescaling does."
    ),
    **{
        f"balance_{s}": f"{s} normalisation balances losses of different scale (worst task beats the equal sum)."
        for s in INVARIANT
    },
    "realtime_good_baseline": "Real-time normalisation is a good baseline (as good as hand-scaled losses).",
    "gamma_worst_task": "A larger power-mean gamma focuses on the worst task (its score rises).",
}
# The article's sections (its headings) behind each claim.
_SECTIONS = {
    "equal_dominated": "the weighted-sum baseline: losses of different dimensions",
    "scale_invariance": "sections 初始状态, 先验状态, 实时状态 and 理想目标 (scale invariance)",
    "balance_initial": "section 初始状态 (initial state)",
    "balance_prior": "section 先验状态 (prior state)",
    "balance_realtime": "section 实时状态 (real-time state)",
    "balance_gradient_normalization": "section 理想目标 (ideal target, Eq. 13)",
    "realtime_good_baseline": "section 实时状态: 'many folk experiments' find it a good baseline",
    "gamma_worst_task": "section 广义平均 (generalised mean)",
}


def _src(key: str) -> str:
    return f"{ARTICLE} ({_SECTIONS[key]})"


TASKS = ("digit_a", "digit_b", "ink")


@dataclass(frozen=True)
class Config:
    """Settings of the multi-task experiment.

    Attributes:
        seed: base seed; run ``k`` uses ``seed + k``.
        seeds: number of seeds per (strategy, scale).
        strategies: strategies run at the large scale (names of :data:`kexue.losses.multitask.STRATEGIES`;
            ``power_mean`` is run through ``gammas`` instead).
        rescaled_strategies: strategies also run at ``reg_scale`` = ``small_scale``, ``pow2_scale`` and
            ``chaos_scale``.
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
        pow2_scale: power-of-two scale of the bitwise invariance check.
        chaos_scale: rounding-level rescaling of the chaos control (``1 + 2^-20``).
        equivalence_margin: ``scale_invariance`` equivalence margin on normalised scores.
        baseline_margin: ``realtime_good_baseline`` non-inferiority margin on the worst-task score.
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
    pow2_scale: float = 1024.0
    chaos_scale: float = 1.0 + 2.0**-20
    equivalence_margin: float = 0.05
    baseline_margin: float = 0.05


PRESETS = {
    "smoke": Config(
        seeds=2,
        strategies=("equal", "initial", "prior", "realtime", "gradient_normalization", "mgda"),
        rescaled_strategies=("equal", "realtime"),
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

    The strategy is a sub-module so that its learnable parameters (uncertainty weighting) are optimised and its buffers
    (estimates, EMA, learned GradNorm weights) are checkpointed with the model.
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


def at(scale: float) -> str:
    """The variant suffix of a scale: ``@1000``, ``@1024``, ``@1.000000954`` (ten significant digits)."""
    return f"@{scale:.10g}"


def _variants(cfg: Config) -> list[tuple[str, str, float, float | None]]:
    """(variant id, strategy name, reg scale, gamma)."""
    out: list[tuple[str, str, float, float | None]] = []
    for s in cfg.strategies:
        out.append((f"{s}{at(cfg.large_scale)}", s, cfg.large_scale, None))
    for g in cfg.gammas:
        out.append((f"power_mean(g={g:g}){at(cfg.large_scale)}", "power_mean", cfg.large_scale, g))
    for scale in dict.fromkeys((cfg.small_scale, cfg.pow2_scale, cfg.chaos_scale)):
        for s in cfg.rescaled_strategies:
            out.append((f"{s}{at(scale)}", s, scale, None))
    return out


def _make_strategy(name: str, scale: float, gamma: float | None, priors: list[float]) -> mt.MultiTaskStrategy:
    scaled = [priors[0], priors[1], priors[2] * scale]
    if name == "prior":
        return mt.PriorLossWeighting(3, prior=scaled, eps=0.0)
    if name == "power_mean":
        return mt.PowerMean(3, gamma=0.0 if gamma is None else gamma, normalizers=scaled)
    if name == "projection":
        return mt.PrimaryAuxiliaryProjection(3, primary=0)
    if name in ("initial", "realtime", "gradient_normalization"):
        # the article's formulas: an eps in a denominator is not scale invariant
        return mt.make_strategy(name, 3, eps=0.0)
    return mt.make_strategy(name, 3)


def _first_gradient(
    sname: str, scale: float, seed: int, priors: list[float], cfg: Config, batch: Sequence[Tensor]
) -> Tensor:
    """The shared-trunk gradient the strategy writes on one batch, from the seed's initialisation."""
    seed_all(seed)
    model = MultiTaskNet(_make_strategy(sname, scale, None, priors), width=cfg.width, feature_dim=cfg.feature_dim)
    _make_step(scale)(model, batch)
    return torch.cat([p.grad.detach().flatten().clone() for p in model.trunk.parameters() if p.grad is not None])


def _flat_parameters(model: MultiTaskNet) -> Tensor:
    """Trunk and head parameters as one vector (the strategy's own state differs by scale by design)."""
    return torch.cat(
        [p.detach().flatten().clone() for n, p in model.named_parameters() if not n.startswith("strategy.")]
    )


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
    params: dict[str, list[Tensor]] = {}  # final parameters of the bitwise-check runs
    grads: dict[str, list[Tensor]] = {}  # their first-batch trunk gradients
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
            if scale in (cfg.small_scale, cfg.pow2_scale) and sname in cfg.rescaled_strategies:
                params.setdefault(variant, []).append(_flat_parameters(model))
                first = [x_tr[: cfg.batch_size], y_tr[: cfg.batch_size, 0], y_tr[: cfg.batch_size, 1]]
                grads.setdefault(variant, []).append(
                    _first_gradient(sname, scale, seed, priors, cfg, [*first, t_tr[: cfg.batch_size]])
                )
            test = _scores(model, x_te, y_te, t_te)
            runs[variant].append({"seed": seed, "test": test, "norm": normalised(test), "history": res.history})

    # ------------------------------------------------------------------ aggregate
    table: dict[str, dict[str, float]] = {}
    for variant, rs in runs.items():
        row: dict[str, float] = {}
        for key in (*TASKS, "worst", "mean"):
            m, s = mean_std([r["norm"][key] for r in rs])
            row[key], row[key + "_std"] = m, s
        for key in ("acc_a", "acc_b", "r2_ink"):
            row[key] = mean_std([r["test"][key] for r in rs])[0]
        table[variant] = row
    claims, invariance = _claims(cfg, runs, table, params, grads)

    plots = [_plot_curves(runs, cfg, out_dir), _plot_table(table, out_dir), _plot_gamma(table, cfg, out_dir)]
    metrics: dict[str, Any] = {
        "table": table,
        "invariance": invariance,
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


def _claims(
    cfg: Config,
    runs: dict[str, list[dict[str, Any]]],
    table: dict[str, dict[str, float]],
    params: dict[str, list[Tensor]],
    grads: dict[str, list[Tensor]],
) -> tuple[list[Claim], dict[str, Any]]:
    """Evaluate every claim of the module docstring; claims whose runs this preset lacks are "not testable"."""

    def col(variant: str, key: str) -> list[float]:
        return [r["norm"][key] for r in runs[variant]]

    def has(*variants: str) -> bool:
        return all(v in runs for v in variants)

    L, S, P, C = at(cfg.large_scale), at(cfg.small_scale), at(cfg.pow2_scale), at(cfg.chaos_scale)
    n = cfg.seeds
    claims: list[Claim] = []
    info: dict[str, Any] = {}

    # equal_dominated
    if has("equal" + L, "equal" + S):
        cls_large = [(a + b) / 2 for a, b in zip(col("equal" + L, "digit_a"), col("equal" + L, "digit_b"))]
        cls_small = [(a + b) / 2 for a, b in zip(col("equal" + S, "digit_a"), col("equal" + S, "digit_b"))]
        claims.append(
            better(
                "equal_dominated",
                CLAIMS["equal_dominated"],
                _src("equal_dominated"),
                cls_small,
                cls_large,
                paired=True,
                names=(f"cls_score_x{cfg.small_scale:g}", f"cls_score_x{cfg.large_scale:g}"),
                evidence=(
                    f"equal weighting, mean classification score with the ink loss x{cfg.small_scale:g} vs "
                    f"x{cfg.large_scale:g} (ink R^2 {table['equal' + S]['ink']:.3f} vs "
                    f"{table['equal' + L]['ink']:.3f}):"
                ),
            )
        )
    else:
        claims.append(_missing("equal_dominated", f"needs equal weighting at {L} and {S}"))

    # scale_invariance_exact: bitwise at a power-of-two scale, with equal weighting as the negative control
    inv = [s for s in INVARIANT if has(s + S, s + P)]
    if inv and has("equal" + S, "equal" + P):
        arms = (*inv, "equal")
        train_same = {s: [bool(torch.equal(a, b)) for a, b in zip(params[s + P], params[s + S])] for s in arms}
        grad_same = {s: [bool(torch.equal(a, b)) for a, b in zip(grads[s + P], grads[s + S])] for s in arms}
        gap = {s: max(float((a - b).abs().max()) for a, b in zip(params[s + P], params[s + S])) for s in arms}
        control_differs = not any(train_same["equal"]) and not any(grad_same["equal"])
        # Loss-level schemes normalise the whole loss: all of training must be bit-identical. Eq. 13 normalises
        # the shared-trunk gradient only (heads get their raw, lambda-scaled gradients), so for it the trunk
        # gradient must be bit-identical; its training is not, because Adam's eps is not scale invariant.
        exact = all(all(grad_same[s]) for s in inv) and all(all(train_same[s]) for s in inv if s not in GRADIENT_LEVEL)
        text = "; ".join(
            f"{s}: trained parameters bit-identical in {sum(train_same[s])}/{len(train_same[s])} seeds (max |diff| "
            f"{gap[s]:.3g}), first-batch trunk gradient in {sum(grad_same[s])}/{len(grad_same[s])}"
            for s in arms
        )
        missing = [s for s in INVARIANT if s not in inv]
        claims.append(
            claim(
                "scale_invariance_exact",
                CLAIMS["scale_invariance_exact"],
                _src("scale_invariance"),
                holds=exact if control_differs else None,
                evidence=(
                    f"ink loss x{cfg.pow2_scale:g} vs x{cfg.small_scale:g}, same seed: "
                    + text
                    + (
                        " (equal weighting is the negative control and differs, as it must)"
                        if control_differs
                        else " (the negative control is bit-identical too: the check cannot tell)"
                    )
                    + ". Required: trunk gradients of all schemes and training of the loss-level schemes; gradient "
                    "normalisation leaves the heads' gradients raw, so its training is not required to match"
                    + (f"; not run: {', '.join(missing)}" if missing else "")
                ),
                measured={f"train_identical_{s}": float(sum(train_same[s])) for s in arms}
                | {f"grad_identical_{s}": float(sum(grad_same[s])) for s in arms}
                | {f"maxdiff_{s}": gap[s] for s in arms},
                kind="check",
                seeds=n,
                test="bitwise",
            )
        )
        info["bitwise"] = {"trained_identical": train_same, "trunk_grad_identical": grad_same, "max_param_diff": gap}
    else:
        claims.append(_missing("scale_invariance_exact", f"needs the invariant schemes and equal weighting at {P}"))

    # scale_invariance: a non-power-of-two scale against the chaos control, with equal weighting as negative control
    inv = [s for s in INVARIANT if has(s + L, s + S, s + C)]
    if inv and has("equal" + L, "equal" + S, "equal" + C) and n >= 2:

        def dist(va: str, vb: str) -> list[float]:
            return [max(abs(ra["norm"][t] - rb["norm"][t]) for t in TASKS) for ra, rb in zip(runs[va], runs[vb])]

        d_big = {s: dist(s + L, s + S) for s in (*inv, "equal")}
        d_chaos = {s: dist(s + C, s + S) for s in (*inv, "equal")}
        tost = {
            s: stats.equivalent(d_big[s], d_chaos[s], margin=cfg.equivalence_margin, paired=True)
            for s in (*inv, "equal")
        }
        control_passes = tost["equal"][0] is True
        decisions = [tost[s][0] for s in inv]
        holds: bool | None
        if control_passes:
            holds = None
        elif any(d is False for d in decisions):
            holds = False
        elif all(d is True for d in decisions) and len(inv) == len(INVARIANT):
            holds = True
        else:
            holds = None
        word = {True: "equivalent", False: "DIFFERENT", None: "undecided"}
        text = "; ".join(
            f"{s}: D_{cfg.large_scale:g} {mean_std(d_big[s])[0]:.4f} vs D_chaos {mean_std(d_chaos[s])[0]:.4f} -> "
            f"{word[tost[s][0]]} ({tost[s][1].describe()})"
            for s in (*inv, "equal")
        )
        mde = max(tost[s][1].mde for s in inv)
        claims.append(
            claim(
                "scale_invariance",
                CLAIMS["scale_invariance"],
                _src("scale_invariance"),
                holds=holds,
                evidence=(
                    f"largest change of a task score, x{cfg.large_scale:g} vs x{cfg.small_scale:g} (D_"
                    f"{cfg.large_scale:g}) and x{cfg.chaos_scale:.10g} vs x{cfg.small_scale:g} (D_chaos, rounding "
                    f"only), per seed; paired TOST, margin {cfg.equivalence_margin:g}, {n} seeds: "
                    + text
                    + (
                        ". Equal weighting (negative control) "
                        + ("passes the test too: the test cannot tell." if control_passes else "fails it, as it must.")
                    )
                ),
                measured={f"d_big_{s}": mean_std(d_big[s])[0] for s in d_big}
                | {f"d_chaos_{s}": mean_std(d_chaos[s])[0] for s in d_chaos},
                kind="claim",
                seeds=n,
                mde=mde,
                test=f"paired TOST (margin {cfg.equivalence_margin:g}) per scheme",
            )
        )
        info["chaos"] = {"d_big": d_big, "d_chaos": d_chaos}
    else:
        claims.append(_missing("scale_invariance", f"needs >= 2 seeds and runs at {L}, {S} and {C}"))

    # balance_<scheme>
    for s in INVARIANT:
        cid = f"balance_{s}"
        if has(s + L, "equal" + L):
            claims.append(
                better(
                    cid,
                    CLAIMS[cid],
                    _src(cid),
                    col(s + L, "worst"),
                    col("equal" + L, "worst"),
                    paired=True,
                    names=(s, "equal"),
                    evidence=f"worst-task score with the ink loss x{cfg.large_scale:g}:",
                )
            )
        else:
            claims.append(_missing(cid, f"needs {s} and equal weighting at {L}"))

    # realtime_good_baseline
    if has("realtime" + L, "equal" + S):
        small = (
            f" (at x{cfg.small_scale:g}: real-time {table['realtime' + S]['worst']:.3f}, equal "
            f"{table['equal' + S]['worst']:.3f})"
            if has("realtime" + S)
            else ""
        )
        claims.append(
            not_worse(
                "realtime_good_baseline",
                CLAIMS["realtime_good_baseline"],
                _src("realtime_good_baseline"),
                col("realtime" + L, "worst"),
                col("equal" + S, "worst"),
                margin=cfg.baseline_margin,
                paired=True,
                names=(f"realtime_x{cfg.large_scale:g}", f"equal_x{cfg.small_scale:g}"),
                evidence=(
                    f"worst-task score of real-time normalisation with the ink loss x{cfg.large_scale:g} vs the "
                    f"equal sum of losses on one scale (x{cfg.small_scale:g}){small}; non-inferiority margin "
                    f"{cfg.baseline_margin:g}:"
                ),
            )
        )
    else:
        claims.append(_missing("realtime_good_baseline", f"needs real-time at {L} and equal weighting at {S}"))

    # gamma_worst_task
    if len(cfg.gammas) >= 2 and 0.0 in cfg.gammas and max(cfg.gammas) > 0:
        g_hi = max(cfg.gammas)
        v0, vh = f"power_mean(g=0){L}", f"power_mean(g={g_hi:g}){L}"
        sweep = ", ".join(
            f"g={g:g}: worst {table[f'power_mean(g={g:g}){L}']['worst']:.3f} / mean "
            f"{table[f'power_mean(g={g:g}){L}']['mean']:.3f}"
            for g in cfg.gammas
        )
        claims.append(
            better(
                "gamma_worst_task",
                CLAIMS["gamma_worst_task"],
                _src("gamma_worst_task"),
                col(vh, "worst"),
                col(v0, "worst"),
                paired=True,
                names=(f"worst_g{g_hi:g}", "worst_g0"),
                evidence=f"power mean of prior-normalised losses (worst / mean task score: {sweep}); worst task:",
                measured={"mean_g0": table[v0]["mean"], "mean_gmax": table[vh]["mean"]},
            )
        )
    else:
        claims.append(_missing("gamma_worst_task", "needs gamma = 0 and a gamma > 0"))
    return claims, info


def _missing(cid: str, why: str) -> Claim:
    kind: Literal["check", "claim"] = "check" if cid == "scale_invariance_exact" else "claim"
    src = _src(cid if cid in _SECTIONS else "scale_invariance")
    return not_run(cid, CLAIMS[cid], src, reason=f"this preset {why}", kind=kind)


def _plot_curves(runs: dict[str, list[dict[str, Any]]], cfg: Config, out_dir: Path) -> str:
    fig, ax = new_figure(3, 1, width=4.6)
    for variant, rs in runs.items():
        if not variant.endswith(at(cfg.large_scale)) or variant.startswith("power_mean"):
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
    L = at(cfg.large_scale)
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
