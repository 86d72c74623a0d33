"""Idempotent Generative Network: a 2-D ring of 8 Gaussians (the evidence) and 14x14 MNIST (the sample grid).

Article: Su Jianlin, "幂等生成网络IGN：试图将判别和生成合二为一的GAN", https://kexue.fm/archives/9969; paper:
Shocher et al., "Idempotent Generative Network", ICLR 2024, arXiv 2311.01462. The paper's results are qualitative
only (no FID to reproduce); Su's central point is that IGN *is* a GAN (its critic is the reconstruction energy
``delta(y) = D(f(y), y)`` with every parameter shared with the generator) and trains no more stably than one.

**Ring (the evidence).** Data: 8 equal Gaussians (sigma 0.05) on a circle of radius 2; noise z ~ N(0, I) in 2-D.
f is a ReLU MLP 2 -> 64 -> 64 -> 64 -> 2 (8,642 parameters). Arms, each trained for every seed at once
(:mod:`kexue.experiments._ign_ring`), 3,000 steps of batch 128, Adam lr 1e-3:

* ``ign``: the paper's configuration (L1, 20/20/2.5, tanh clamp a = 1.5 over the paired reconstruction loss,
  frozen copy through detached parameters), betas (0.5, 0.999);
* ``no_tight``: the same with lambda_tight = 0;
* ``copy_free``: Su's single loss with stop-gradients instead of a copy (identical gradients);
* ``ulp_control``: ``ign`` with every initial weight one float32 ulp away (the spread rounding alone produces);
* ``wgan_gp``: a WGAN-GP of the same size (generator 2 -> 64 -> 64 -> 2 from the same noise, critic
  2 -> 64 -> 64 -> 1, 8,899 parameters together), 5 critic steps per generator step, gradient penalty 0.1 (the
  WGAN-GP paper's toy setting), betas (0.5, 0.9); 3,000 generator steps.

IGN arms share seeds (initial f, data and noise batches), so they are compared *paired*; ``wgan_gp`` is a different
model, compared as independent. Metrics on 2,000 samples per seed, eval mode (f has no normalisation, so eval and
train mode agree): a sample is *high quality* within 3 sigma of a mode centre; a mode is *covered* when it gets at
least 2 % of the samples as high-quality samples (12.5 % is a perfect share); a run *covers the ring* when it
covers at least 6 of the 8 modes, and has *collapsed* otherwise. Each arm's activity is recorded: the same
metrics at initialisation next to the final ones.

Claims and thresholds (written before the first run of this design; two-sided 5 %; every claim states its MDE):

* ``single_loss_gradients`` (check, Su): at initialisation, on one batch, the copy-free single loss and the
  three-loss form give the same gradient (max abs difference <= 1e-5 times the gradient's max abs value), and the
  no-tightness loss does not (the negative control that shows the check can fail).
* ``ring_coverage`` (paper): IGN covers the ring in more than half of the seeds: exact binomial test of the
  number of covering seeds against 0.5; reproduced when above beyond noise, not reproduced when below.
* ``tightness_needed`` (paper's ablation): without tightness the ring is covered less often: exact McNemar test
  on the paired per-seed outcomes (``ign`` covers, ``no_tight`` covers); reproduced when ``ign`` covers more often
  beyond noise, not reproduced when ``no_tight`` does, inconclusive otherwise.
* ``single_loss_same`` (Su): the copy-free single loss trains like the three-loss form: the per-seed high-quality
  share agrees within 0.10 and the modes covered within 1 (TOST, paired); reproduced only when the ulp-perturbed
  ``ign`` passes the same tests (positive control: otherwise chaos alone exceeds the margin) and ``no_tight`` does
  not (negative control); not reproduced when either difference exceeds its margin beyond noise.
* ``gan_no_more_stable`` (Su: IGN is a GAN and trains no more stably than one): IGN's collapse rate over seeds is
  not lower than the WGAN-GP's. Precondition: the WGAN-GP is active (its mean high-quality share rose by at least
  0.05 over its initial value), else inconclusive. Not reproduced when IGN collapses less often beyond noise
  (Fisher exact, two-sided) or covers more modes beyond noise (Welch t) without collapsing more often beyond
  noise; reproduced when IGN collapses more often beyond noise or covers fewer modes beyond noise; inconclusive
  otherwise (a tie cannot show "not lower" at 10 seeds: the MDE is reported).
* ``idempotent`` (paper, Su: only approximately): on the seeds where ``ign`` did not collapse (at least 2 needed,
  else inconclusive), ``||f(f(z)) - f(z)|| < 0.25 ||f(z) - z||`` (one-sample t of the per-seed ratio against 0.25,
  eval mode). Exactness is not claimed; the nonzero error is reported (Su's point 3).

**MNIST (the sample grid).** 14x14 MNIST (2x2 average pooling) on [-1, 1], an MLP autoencoder
196 -> 256 -> 32 -> 256 -> 196 with GroupNorm (batch-independent, so IGN's separate calls on x, z and f(z) do not
mix batch statistics) and a tanh output, the paper's loss and frequency-statistics noise, 1,500 steps of batch 128
(15 epochs over 12,800 digits), lr 5e-4, 2 seeds. A small classifier (:class:`kexue.modules.SmallCNN`) trained on
the same digits (upsampled to 28x28) judges 2,000 samples per seed, eval mode:

* ``one_step_samples`` (paper): (a) the classifier's mean confidence on f(z) above 0.8 times its confidence on
  real test digits and (b) every class above 0.25 times its real share; reproduced when both are above their bars
  beyond noise (one-sample t over seeds), not reproduced when either is below beyond noise.
* ``mode_collapse`` (Su's critique): in each seed the most frequent predicted class of f(z) holds more than 2 times
  its real share (exact binomial per seed; all seeds must agree, at least 2 seeds).

Budget. ``quick`` is the design above (10 ring seeds); ``smoke`` shrinks everything to seconds; ``full`` uses 20
ring seeds and 10,000 ring steps, and 3 MNIST seeds over all 55,000 digits for 10 epochs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.data import load_fashion_mnist, load_mnist
from kexue.methods import IGN, FrequencyNoise, ign_iterate, ign_loss
from kexue.modules import SmallCNN
from kexue.train import accuracy, fit, predict_logits, seed_all

from . import stats
from ._base import Result, check, claim, mean_std, new_figure, save_figure
from ._ign_ring import RingConfig, StackedMLP, sample_ring, train_ign, train_wgan_gp

NAME = "ign"
ORDER = 70
TITLE = "Idempotent Generative Network: a GAN in disguise? Ring of 8 Gaussians against a WGAN-GP, MNIST samples"
ARTICLE = "https://kexue.fm/archives/9969"
CLAIMS = {
    "single_loss_gradients": "The copy-free single loss has the three-loss form's gradient.",
    "ring_coverage": "IGN's one-step samples cover the modes of the data (ring of 8 Gaussians).",
    "tightness_needed": "Without the tightness loss the data's modes are covered less often.",
    "single_loss_same": "The copy-free single-loss (GAN) form trains the same as the three-loss form.",
    "gan_no_more_stable": "IGN is a GAN and trains no more stably than one: its collapse rate is not lower than a "
    "WGAN-GP's of the same size.",
    "idempotent": "Generated samples are (approximately) fixed points: f(f(z)) ~ f(z).",
    "one_step_samples": "One-step MNIST samples f(z) are recognisable digits covering all classes.",
    "mode_collapse": "IGN samples on MNIST collapse onto few modes (Su's critique).",
}
PAPER = "https://arxiv.org/abs/2311.01462"
RING_ARMS = ("ign", "no_tight", "copy_free", "ulp_control", "wgan_gp")


@dataclass(frozen=True)
class Config:
    """Settings of the IGN experiment.

    Attributes:
        seed: first seed; ring arms use ``ring.seeds`` consecutive seeds, MNIST ``seeds``.
        ring: the ring runs (:class:`kexue.experiments._ign_ring.RingConfig`).
        seeds: MNIST seeds.
        dataset: ``"mnist"`` or ``"fashion_mnist"`` (pooled to 14x14).
        train_limit: training images used (``None`` = all 55,000).
        epochs: passes over them.
        batch_size: images (and noise samples) per step.
        lr: Adam learning rate; betas are the paper's (0.5, 0.999).
        hidden: hidden width of the MLP autoencoder.
        latent_dim: its bottleneck.
        noise_stats: training images used to estimate the frequency statistics of the noise.
        classifier_epochs: epochs of the judging classifier (trained once per run).
        n_eval: generated and real images per metric.
        confidence_ratio: claim ``one_step_samples`` (a).
        min_class_share: claim ``one_step_samples`` (b), as a fraction of the real share.
        collapse_factor: claim ``mode_collapse``: the top class's share relative to its real share.
        hq_margin: claim ``single_loss_same``: margin on the high-quality share.
        modes_margin: claim ``single_loss_same``: margin on the modes covered.
        idem_bar: claim ``idempotent``: bar on ``||f(f(z)) - f(z)|| / ||f(z) - z||``.
        active_gain: claim ``gan_no_more_stable``: the WGAN-GP's activity precondition (rise of the high-quality
            share over its initial value).
    """

    seed: int = 0
    ring: RingConfig = field(default_factory=RingConfig)
    seeds: int = 2
    dataset: Literal["mnist", "fashion_mnist"] = "mnist"
    train_limit: int | None = 12800
    epochs: int = 15
    batch_size: int = 128
    lr: float = 5e-4
    hidden: int = 256
    latent_dim: int = 32
    noise_stats: int = 1000
    classifier_epochs: int = 1
    n_eval: int = 2000
    confidence_ratio: float = 0.8
    min_class_share: float = 0.25
    collapse_factor: float = 2.0
    hq_margin: float = 0.10
    modes_margin: float = 1.0
    idem_bar: float = 0.25
    active_gain: float = 0.05


PRESETS = {
    "smoke": Config(
        ring=RingConfig(seeds=2, steps=60, batch_size=32, hidden=16, n_eval=200, n_critic=2),
        train_limit=256,
        epochs=2,
        batch_size=64,
        hidden=64,
        latent_dim=16,
        n_eval=200,
        noise_stats=256,
    ),
    "quick": Config(),
    "full": Config(
        ring=RingConfig(seeds=20, steps=10000),
        seeds=3,
        train_limit=None,
        epochs=10,
        classifier_epochs=3,
        n_eval=10000,
    ),
}


class MLPAutoencoder(nn.Module):
    """f for 14x14 images: flatten -> 256 -> GroupNorm -> LeakyReLU -> latent -> 256 -> GroupNorm -> ReLU -> tanh."""

    def __init__(self, side: int = 14, hidden: int = 256, latent_dim: int = 32) -> None:
        super().__init__()
        d = side * side
        self.side = side
        self.net = nn.Sequential(
            nn.Linear(d, hidden),
            nn.GroupNorm(8, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, latent_dim),
            nn.Linear(latent_dim, hidden),
            nn.GroupNorm(8, hidden),
            nn.ReLU(),
            nn.Linear(hidden, d),
            nn.Tanh(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).reshape(x.shape)


# --- metrics -----------------------------------------------------------------------------------------------


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Frechet distance between Gaussian fits of features ``a (N, D)`` and ``b (M, D)`` (the FID formula)."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    # tr sqrt(ca cb) = sum sqrt(eig(sqrt(ca) cb sqrt(ca))), all symmetric PSD
    ev, vec = torch.linalg.eigh(ca)
    sqrt_ca = (vec * ev.clamp_min(0).sqrt()) @ vec.T
    mid = torch.linalg.eigvalsh(sqrt_ca @ cb @ sqrt_ca).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + ca.trace() + cb.trace() - 2 * mid)


def _to_unit(x: Tensor) -> Tensor:
    """[-1, 1] model scale (14x14) -> the classifier's [0, 1] scale at 28x28 (bilinear upsampling)."""
    if x.shape[-1] != 28:
        x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    return ((x + 1) / 2).clamp(0, 1)


@torch.no_grad()
def _features(clf: SmallCNN, x: Tensor) -> tuple[Tensor, Tensor]:
    """Penultimate features and softmax probabilities of ``x`` in [-1, 1]."""
    clf.eval()
    feats = torch.cat([clf.features(_to_unit(x[i : i + 1000])) for i in range(0, x.shape[0], 1000)])
    probs = clf.head(feats).softmax(-1)
    return feats, probs


@torch.no_grad()
def _apply(model: nn.Module, x: Tensor, steps: int, *, train_mode: bool = False) -> list[Tensor]:
    """``[f(x), ..., f^steps(x)]`` in batches of 500.

    Eval mode by default (BatchNorm running statistics: the generator a user gets). With ``train_mode=True``
    BatchNorm uses each batch's statistics, as every IGN forward pass does during training; the running
    statistics are restored afterwards. The model's mode is restored too.
    """
    was_training = model.training
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    model.train(train_mode)
    outs: list[list[Tensor]] = [[] for _ in range(steps)]
    for i in range(0, x.shape[0], 500):
        for s, y in enumerate(ign_iterate(model, x[i : i + 500], steps=steps)):
            outs[s].append(y)
    model.load_state_dict(saved)
    model.train(was_training)
    return [torch.cat(o) for o in outs]


def _pairwise_l1(x: Tensor, n: int = 500) -> float:
    """Mean absolute per-pixel difference between distinct pairs among the first ``n`` images."""
    a = x[:n].flatten(1).double()
    d = torch.cdist(a, a, p=1) / a.shape[1]
    k = a.shape[0]
    return float(d.sum() / max(k * (k - 1), 1))


def _l1(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().mean())


def _sample_stats(clf: SmallCNN, x: Tensor, real_feats: Tensor, real_spread: float | None = None) -> dict[str, Any]:
    feats, probs = _features(clf, x)
    counts = torch.bincount(probs.argmax(-1), minlength=probs.shape[1])
    hist = counts.double() / x.shape[0]
    entropy = float(-(hist * hist.clamp_min(1e-12).log()).sum())
    out: dict[str, Any] = {
        "fd": frechet_distance(feats, real_feats),
        "confidence": float(probs.max(-1).values.mean()),
        "class_share": [float(h) for h in hist],
        "class_counts": [int(c) for c in counts],
        "class_entropy": entropy,
    }
    if real_spread is not None:
        out["diversity"] = _pairwise_l1(x) / max(real_spread, 1e-12)
    return out


# --- MNIST -------------------------------------------------------------------------------------------------


def _pool(x01: Tensor) -> Tensor:
    """28x28 [0, 1] digits -> 14x14 [-1, 1] (2x2 average pooling)."""
    return F.avg_pool2d(x01, 2) * 2 - 1


def _ign_step(model: nn.Module, batch: Sequence[Tensor]) -> Mapping[str, Tensor]:
    out: Mapping[str, Tensor] = model(batch[0])
    return out


def _train_classifier(cfg: Config, x: Tensor, y: Tensor, out_dir: Path, resume: bool) -> SmallCNN:
    """The judging classifier, on the 14x14 digits upsampled to 28x28 (the domain of every sample it scores)."""
    seed_all(cfg.seed)
    clf = SmallCNN(width=16)

    def step(m: nn.Module, batch: Sequence[Tensor]) -> Mapping[str, Tensor]:
        return {"loss": F.cross_entropy(m(batch[0]), batch[1])}

    fit(
        clf,
        [_to_unit(x), y],
        epochs=cfg.classifier_epochs,
        batch_size=128,
        optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=2e-3),
        step=step,
        checkpoint=out_dir / "checkpoints" / f"classifier-{cfg.seed}.pt",
        resume=resume,
        seed=cfg.seed,
        name="ign-classifier",
    )
    clf.cpu().eval()
    return clf


def _grid(ax: Any, rows: list[Tensor], labels: list[str], title: str) -> None:
    """Rows of images in [-1, 1] as one picture."""
    side = rows[0].shape[-1]
    tiles = [torch.cat([im[0] for im in row], dim=1) for row in rows]
    pic = torch.cat(tiles, dim=0)
    ax.imshow(((pic + 1) / 2).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([side * i + side // 2 for i in range(len(rows))], labels)
    ax.set_xticks([])
    ax.set_title(title)


def _mnist(cfg: Config, out_dir: Path, resume: bool) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Tensor]]:
    load = load_mnist if cfg.dataset == "mnist" else load_fashion_mnist
    x_tr01, y_tr = load("train", limit=cfg.train_limit)
    x_te01, y_te = load("test", limit=cfg.n_eval)
    x_tr, x_te = _pool(x_tr01), _pool(x_te01)
    clf = _train_classifier(cfg, x_tr, y_tr, out_dir, resume)
    real_feats, real_probs = _features(clf, x_te)
    train_feats, _ = _features(clf, x_tr[: cfg.n_eval])
    real_share = torch.bincount(y_te, minlength=10).double() / y_te.shape[0]
    anchors: dict[str, Any] = {
        "classifier_test_accuracy": accuracy(predict_logits(clf, _to_unit(x_te)), y_te),
        "real_confidence": float(real_probs.max(-1).values.mean()),
        "real_class_share": [float(s) for s in real_share],
        "fd_real_train_vs_test": frechet_distance(train_feats, real_feats),
        "real_spread": _pairwise_l1(x_te),
    }
    gen = torch.Generator().manual_seed(cfg.seed + 12345)
    noise = FrequencyNoise(x_tr[: cfg.noise_stats])
    z = noise.sample(cfg.n_eval, generator=gen)
    zs = _sample_stats(clf, z, real_feats)
    anchors["fd_noise"], anchors["noise_confidence"] = zs["fd"], zs["confidence"]
    runs: list[dict[str, Any]] = []
    keep: dict[str, Tensor] = {}
    for s in range(cfg.seeds):
        seed = cfg.seed + s
        seed_all(seed)
        ign = IGN.paper(MLPAutoencoder(14, cfg.hidden, cfg.latent_dim), noise=noise)
        res = fit(
            ign,
            [x_tr],
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            optimizer=lambda m: torch.optim.Adam(m.get_submodule("model").parameters(), lr=cfg.lr, betas=(0.5, 0.999)),
            step=_ign_step,
            checkpoint=out_dir / "checkpoints" / f"mnist-ign-{seed}.pt",
            resume=resume,
            seed=seed,
            name="ign-mnist",
        )
        ign.cpu()
        f = ign.model
        fz, ffz, fffz = _apply(f, z, 3)
        (fx,) = _apply(f, x_te, 1)
        runs.append(
            {
                "seed": seed,
                "history": res.history,
                "final_rec": res.history[-1]["rec"],
                "test_rec_l1": _l1(fx, x_te),
                "move_first": _l1(fz, z),
                "move_second": _l1(ffz, fz),
                "one_step": _sample_stats(clf, fz, real_feats, anchors["real_spread"]),
            }
        )
        if s == 0:
            keep = {"z": z[:12], "fz": fz[:12], "ffz": ffz[:12], "fffz": fffz[:12], "x": x_te[:12]}
    return anchors, runs, keep


# --- the run -----------------------------------------------------------------------------------------------


def _gradient_check(cfg: Config) -> dict[str, float]:
    """Max abs gradient difference, copy-free vs three-loss (and no-tightness vs three-loss), at initialisation."""
    rc = cfg.ring
    gen = torch.Generator().manual_seed(cfg.seed + 99)
    x = sample_ring(rc, 2 * rc.batch_size, gen)
    z = torch.randn(x.shape, generator=gen)
    f = StackedMLP((2, rc.hidden, rc.hidden, rc.hidden, 2), [cfg.seed, cfg.seed + 1], salt=1)

    def grads(**kw: Any) -> Tensor:
        f.zero_grad(set_to_none=True)
        ign_loss(f, x, z, **kw)["loss"].backward()
        return torch.cat([p.grad.flatten() for p in f.parameters() if p.grad is not None])

    g_ref = grads()
    scale = float(g_ref.abs().max())
    return {
        "copy_free_diff": float((grads(form="copy_free") - g_ref).abs().max()),
        "no_tight_diff": float((grads(lambda_tight=0.0) - g_ref).abs().max()),
        "grad_scale": scale,
    }


def run(cfg: Config, out_dir: Path, *, resume: bool = False) -> Result:
    """Train the ring arms (all seeds at once per arm) and the MNIST IGN; measure, decide, plot."""
    out_dir = Path(out_dir)
    rc = cfg.ring
    seeds = [cfg.seed + s for s in range(rc.seeds)]
    ring: dict[str, dict[str, Any]] = {}
    for arm in RING_ARMS:
        if arm == "wgan_gp":
            ring[arm] = train_wgan_gp(rc, seeds, base_seed=cfg.seed + 1)
        else:
            ring[arm] = train_ign(rc, seeds, variant=arm, base_seed=cfg.seed)
    grad = _gradient_check(cfg)
    anchors, mnist, keep = _mnist(cfg, out_dir, resume)
    claims = _ring_claims(cfg, ring, grad) + _mnist_claims(cfg, anchors, mnist)
    plots = _plots(cfg, out_dir, ring, keep)
    for r in ring.values():
        r.pop("samples")
    metrics: dict[str, Any] = {
        "ring": ring,
        "ring_seeds": seeds,
        "gradient_check": grad,
        "anchors": anchors,
        "mnist": mnist,
        "mnist_parameters": sum(p.numel() for p in MLPAutoencoder(14, cfg.hidden, cfg.latent_dim).parameters()),
    }
    return Result(metrics=metrics, claims=claims, plots=plots)


# --- claims ------------------------------------------------------------------------------------------------


def _vals(runs: list[dict[str, Any]], *path: str) -> list[float]:
    out = []
    for r in runs:
        v: Any = r
        for p in path:
            v = v[p]
        out.append(float(v))
    return out


def _all_of(results: list[bool | None]) -> bool | None:
    if any(r is False for r in results):
        return False
    if results and all(r is True for r in results):
        return True
    return None


def _covers(arm: dict[str, Any]) -> list[bool]:
    return [not c for c in arm["final"]["collapsed"]]


def _activity(name: str, arm: dict[str, Any]) -> str:
    i, f = arm["init"], arm["final"]
    return (
        f"{name}: modes {mean_std(i['modes'])[0]:.1f} -> {mean_std(f['modes'])[0]:.1f}, high-quality share "
        f"{mean_std(i['hq'])[0]:.3f} -> {mean_std(f['hq'])[0]:.3f}, covers the ring in "
        f"{sum(_covers(arm))}/{len(f['modes'])} seeds (modes per seed {f['modes']})"
    )


def _fisher(a_bad: int, n_a: int, b_bad: int, n_b: int) -> float:
    return float(stats._scipy_stats().fisher_exact([[a_bad, n_a - a_bad], [b_bad, n_b - b_bad]]).pvalue)


def _ring_claims(cfg: Config, ring: dict[str, dict[str, Any]], grad: dict[str, float]) -> list[Any]:
    out: list[Any] = []
    rc = cfg.ring
    n = rc.seeds
    tol = 1e-5 * grad["grad_scale"]
    out.append(
        check(
            "single_loss_gradients",
            CLAIMS["single_loss_gradients"],
            ARTICLE,
            holds=grad["copy_free_diff"] <= tol < grad["no_tight_diff"],
            evidence=(
                f"ring MLP at initialisation, one batch of {2 * rc.batch_size}: max |grad difference| copy-free vs "
                f"three-loss {grad['copy_free_diff']:.2e} (tolerance {tol:.2e} = 1e-5 x max |grad| "
                f"{grad['grad_scale']:.3g}); negative control no-tightness vs three-loss {grad['no_tight_diff']:.2e} "
                "(must exceed the tolerance)"
            ),
            measured=grad,
        )
    )
    ign = ring["ign"]
    # coverage: number of covering seeds against one half
    k = sum(_covers(ign))
    c = stats.binomial_test(k, n, 0.5)
    out.append(
        claim(
            "ring_coverage",
            CLAIMS["ring_coverage"],
            PAPER,
            holds=c.decision,
            evidence=(
                f"{n} seeds, {rc.steps} steps: IGN covers >= {rc.min_modes}/8 modes in {k}/{n} seeds vs 0.5: "
                f"{c.describe()}; activity {_activity('ign', ign)}"
            ),
            measured={
                "cover_rate": k / n,
                "modes": mean_std(ign["final"]["modes"])[0],
                "hq": mean_std(ign["final"]["hq"])[0],
            },
            seeds=n,
            mde=c.mde,
            test="binomial exact over seeds vs 0.5",
        )
    )
    # tightness: paired McNemar over seeds on "covers the ring"
    nt = ring["no_tight"]
    mc = stats.mcnemar(_covers(ign), _covers(nt))
    mt = stats.t_test(ign["final"]["modes"], nt["final"]["modes"], paired=True)
    out.append(
        claim(
            "tightness_needed",
            CLAIMS["tightness_needed"],
            PAPER,
            holds=mc.decision,
            evidence=(
                f"{n} paired seeds: covers the ring ign {sum(_covers(ign))}/{n} vs no_tight {sum(_covers(nt))}/{n}: "
                f"{mc.describe()}; modes covered ign - no_tight {mt.describe()}; ||f(z)-z|| no_tight "
                f"{mean_std(nt['move_first'])[0]:.3f} vs ign {mean_std(ign['move_first'])[0]:.3f}; activity "
                f"{_activity('no_tight', nt)}"
            ),
            measured={
                "cover_ign": sum(_covers(ign)) / n,
                "cover_no_tight": sum(_covers(nt)) / n,
                "modes_ign": mean_std(ign["final"]["modes"])[0],
                "modes_no_tight": mean_std(nt["final"]["modes"])[0],
            },
            seeds=n,
            mde=mc.mde,
            test="McNemar exact over paired seeds",
        )
    )

    # single-loss equivalence with chaos (ulp) and no-tightness controls
    def same(arm: dict[str, Any]) -> tuple[bool | None, str, float]:
        hq, c_hq = stats.equivalent(arm["final"]["hq"], ign["final"]["hq"], margin=cfg.hq_margin, paired=True)
        md, c_md = stats.equivalent(arm["final"]["modes"], ign["final"]["modes"], margin=cfg.modes_margin, paired=True)
        text = f"high-quality share {c_hq.describe()}, same: {hq}; modes {c_md.describe()}, same: {md}"
        return _all_of([hq, md]), text, max(c_hq.mde, c_md.mde)

    s_cf, t_cf, mde_cf = same(ring["copy_free"])
    s_pos, t_pos, _ = same(ring["ulp_control"])
    s_neg, t_neg, _ = same(nt)
    holds_s: bool | None = (True if (s_pos is True and s_neg is not True) else None) if s_cf is True else s_cf
    out.append(
        claim(
            "single_loss_same",
            CLAIMS["single_loss_same"],
            ARTICLE,
            holds=holds_s,
            evidence=(
                f"{n} paired seeds, margins {cfg.hq_margin} (share) and {cfg.modes_margin:g} (modes): copy-free vs "
                f"three-loss: {t_cf}; positive control (ulp-perturbed three-loss): {t_pos}; negative control "
                f"(no tightness): {t_neg}; activity {_activity('copy_free', ring['copy_free'])}"
            ),
            measured={
                "hq_copy_free": mean_std(ring["copy_free"]["final"]["hq"])[0],
                "hq_ign": mean_std(ign["final"]["hq"])[0],
                "hq_ulp": mean_std(ring["ulp_control"]["final"]["hq"])[0],
            },
            seeds=n,
            mde=mde_cf,
            test="TOST (paired) on share and modes, ulp-perturbation and no-tightness controls",
        )
    )
    # Su: IGN is no more stable than a WGAN-GP of the same size
    wg = ring["wgan_gp"]
    bad_i, bad_w = n - sum(_covers(ign)), n - sum(_covers(wg))
    p_f = _fisher(bad_i, n, bad_w, n)
    se = math.sqrt(2 * 0.25 / n)
    mde_f = stats.minimum_detectable_effect(se, 2 * n - 2)
    w_modes = stats.t_test(ign["final"]["modes"], wg["final"]["modes"])
    gain = mean_std(wg["final"]["hq"])[0] - mean_std(wg["init"]["hq"])[0]
    active = gain >= cfg.active_gain
    ign_less_collapse = p_f < 0.05 and bad_i < bad_w
    ign_more_collapse = p_f < 0.05 and bad_i > bad_w
    holds_g: bool | None
    if not active:
        holds_g = None
    elif ign_more_collapse or w_modes.decision is False:
        holds_g = True
    elif ign_less_collapse or w_modes.decision is True:
        holds_g = False
    else:
        holds_g = None
    out.append(
        claim(
            "gan_no_more_stable",
            CLAIMS["gan_no_more_stable"],
            ARTICLE,
            holds=holds_g,
            evidence=(
                f"{n} seeds each, {rc.steps} steps, parameters IGN f {ign['parameters']} vs WGAN-GP G+D "
                f"{wg['parameters']}: collapse rate IGN {bad_i}/{n} vs WGAN-GP {bad_w}/{n} (Fisher exact p={p_f:.3g}; "
                f"MDE {mde_f:.2f} in rate); modes covered IGN - WGAN-GP {w_modes.describe()}; WGAN-GP activity "
                f"precondition (share gain {gain:+.3f} >= {cfg.active_gain}): {active}; {_activity('wgan_gp', wg)}; "
                f"{_activity('ign', ign)}"
            ),
            measured={
                "collapse_ign": bad_i / n,
                "collapse_wgan_gp": bad_w / n,
                "fisher_p": p_f,
                "modes_ign": mean_std(ign["final"]["modes"])[0],
                "modes_wgan_gp": mean_std(wg["final"]["modes"])[0],
                "hq_wgan_gp": mean_std(wg["final"]["hq"])[0],
            },
            seeds=n,
            mde=mde_f,
            test="Fisher exact on collapse over seeds + Welch t on modes covered, WGAN-GP activity precondition",
        )
    )
    # idempotence on non-collapsed IGN seeds
    keep_i = [i for i, ok in enumerate(_covers(ign)) if ok]
    ratio = [ign["move_second"][i] / max(ign["move_first"][i], 1e-12) for i in keep_i]
    all_ratio = [a / max(b, 1e-12) for a, b in zip(ign["move_second"], ign["move_first"])]
    if len(ratio) >= 2:
        ci = stats.t_test(ratio, [cfg.idem_bar] * len(ratio), paired=True)
        holds_i: bool | None = None if ci.decision is None else not ci.decision
        text = ci.describe()
        mde_i = ci.mde
    else:
        holds_i, text, mde_i = None, "fewer than 2 non-collapsed seeds: inconclusive", math.inf
    out.append(
        claim(
            "idempotent",
            CLAIMS["idempotent"],
            ARTICLE,
            holds=holds_i,
            evidence=(
                f"eval mode, {len(ratio)}/{n} non-collapsed seeds: ||f(f(z))-f(z)|| / ||f(z)-z|| "
                f"{', '.join(f'{r:.3g}' for r in ratio)} vs bar {cfg.idem_bar}: {text}; all seeds "
                f"{', '.join(f'{r:.3g}' for r in all_ratio)}; ||f(f(z))-f(z)|| {mean_std(ign['move_second'])[0]:.4f} "
                f"(nonzero: not exact), ||f(x)-x|| on ring data {mean_std(ign['rec'])[0]:.4f} (sigma {rc.sigma})"
            ),
            measured={
                "ratio": mean_std(ratio)[0] if ratio else math.nan,
                "move_second": mean_std(ign["move_second"])[0],
                "rec": mean_std(ign["rec"])[0],
            },
            seeds=len(ratio),
            mde=mde_i,
            test="one-sample t across non-collapsed seeds",
        )
    )
    return out


def _below(name: str, xs: list[float], bar: float) -> tuple[bool | None, str, float]:
    """One-sample t test of per-seed values against a bar: True = below beyond noise, False = above."""
    c = stats.t_test(xs, [bar] * len(xs), paired=True)
    holds = None if c.decision is None else not c.decision
    vals = ", ".join(f"{x:.3g}" for x in xs)
    return holds, f"{name} {vals} vs bar {bar:.3g}: {c.describe()}", c.mde


def _mnist_claims(cfg: Config, anchors: dict[str, Any], ign: list[dict[str, Any]]) -> list[Any]:
    out = []
    n = len(ign)
    real_share = torch.tensor(anchors["real_class_share"])
    conf_ratio = [c / anchors["real_confidence"] for c in _vals(ign, "one_step", "confidence")]
    min_ratio = [float((torch.tensor(r["one_step"]["class_share"]) / real_share).min()) for r in ign]
    below_a, text_a, mde_a = _below("confidence / real confidence", conf_ratio, cfg.confidence_ratio)
    below_b, text_b, mde_b = _below("rarest class / its real share", min_ratio, cfg.min_class_share)
    fd = mean_std(_vals(ign, "one_step", "fd"))[0]
    div = ", ".join(f"{x:.2f}" for x in _vals(ign, "one_step", "diversity"))
    out.append(
        claim(
            "one_step_samples",
            CLAIMS["one_step_samples"],
            PAPER,
            holds=_all_of([None if b is None else not b for b in (below_a, below_b)]),
            evidence=(
                f"14x14 MNIST, {n} seeds, eval mode: {text_a}; {text_b}; real-digit confidence "
                f"{anchors['real_confidence']:.3f}, noise z {anchors['noise_confidence']:.3f}; FD {fd:.2f} (real "
                f"train vs test {anchors['fd_real_train_vs_test']:.2f}, noise {anchors['fd_noise']:.2f}); diversity "
                f"{div}"
            ),
            measured={
                "confidence_ratio": mean_std(conf_ratio)[0],
                "min_share_ratio": mean_std(min_ratio)[0],
                "fd": fd,
                "fd_real": anchors["fd_real_train_vs_test"],
                "fd_noise": anchors["fd_noise"],
            },
            seeds=n,
            mde=max(mde_a, mde_b),
            test="one-sample t across seeds (2 bars)",
        )
    )
    per_seed, texts, mdes = [], [], []
    for rr in ign:
        counts = rr["one_step"]["class_counts"]
        top = max(range(len(counts)), key=lambda i: counts[i])
        p0 = min(1.0, cfg.collapse_factor * float(real_share[top]))
        c = stats.binomial_test(counts[top], sum(counts), p0)
        per_seed.append(c.decision)
        mdes.append(c.mde)
        texts.append(
            f"seed {rr['seed']}: class {top} holds {counts[top] / sum(counts):.1%} (real {float(real_share[top]):.1%}, "
            f"bar {p0:.1%}; p={c.p:.2g})"
        )
    holds_m = _all_of(per_seed) if n >= 2 and all(d is not None for d in per_seed) else None
    out.append(
        claim(
            "mode_collapse",
            CLAIMS["mode_collapse"],
            ARTICLE,
            holds=holds_m,
            evidence=(
                f"14x14 MNIST, {n} seeds, eval mode, {cfg.n_eval} samples each: "
                + "; ".join(texts)
                + f"; diversity {div}; class entropy "
                f"{', '.join(f'{x:.2f}' for x in _vals(ign, 'one_step', 'class_entropy'))} nats (uniform 2.30)"
            ),
            measured={
                "top_share": mean_std([max(rr["one_step"]["class_share"]) for rr in ign])[0],
                "diversity": mean_std(_vals(ign, "one_step", "diversity"))[0],
            },
            seeds=n,
            mde=max(mdes),
            test=f"binomial exact per seed against {cfg.collapse_factor:g} x the real share, all seeds must agree",
        )
    )
    return out


# --- plots -------------------------------------------------------------------------------------------------


def _plots(cfg: Config, out_dir: Path, ring: dict[str, dict[str, Any]], keep: dict[str, Tensor]) -> list[str]:
    plots = []
    fig, ax = new_figure(1, 1, width=6.5, height=3.2)
    rows = [keep["x"], keep["z"], keep["fz"], keep["ffz"], keep["fffz"]]
    _grid(ax[0, 0], rows, ["real x", "z", "f(z)", "f(f(z))", "f(f(f(z)))"],
          f"IGN on 14x14 {cfg.dataset}, {cfg.epochs} epochs, first seed")  # fmt: skip
    plots.append(save_figure(fig, out_dir, "ign_samples"))
    from ._ign_ring import ring_centers

    show = min(3, cfg.ring.seeds)
    fig, ax = new_figure(len(RING_ARMS), show, width=2.4, height=2.4)
    c = ring_centers(cfg.ring)
    for j, arm in enumerate(RING_ARMS):
        for i in range(show):
            pts = torch.tensor(ring[arm]["samples"][i])
            a = ax[i, j]
            a.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
            a.scatter(c[:, 0], c[:, 1], s=12, marker="x", color="red")
            a.set(xlim=(-3, 3), ylim=(-3, 3), xticks=[], yticks=[])
            a.set_title(f"{arm}, seed {i}: {ring[arm]['final']['modes'][i]}/8", fontsize=8)
    plots.append(save_figure(fig, out_dir, "ign_ring"))
    return plots
