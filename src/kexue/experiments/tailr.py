"""TaiLr (https://kexue.fm/archives/9526; Ji et al., ICLR 2023, arXiv 2302.13344): does cross entropy that stops
trusting low-probability labels memorise less noise, calibrate better and overestimate corrupted sequences less?

Three parts, all trained with :func:`kexue.train.fit`. Everything below (grids, thresholds, margins, budgets) was
fixed before the first run of this design; no number was tuned on a TaiLr-vs-CE outcome.

**(1) Synthetic label noise on real MNIST and Fashion-MNIST.** A fraction ``r`` of the training labels is replaced
by a uniformly drawn *different* class (symmetric noise, ``r`` in {0, 0.2, 0.4}); test labels stay clean. Methods:
cross entropy (CE), TaiLr (weighted form, the released criterion) with γ in {0.1, 0.5, 0.8} and floor b in
{0, 0.2}, TaiLr γ=1 (the pure "smoothed accuracy" 1-p), label smoothing ε=0.1, and focal loss (γ_f=2, Lin et
al. 2017), each over several seeds. The learners are trained for a fixed number of epochs, long enough that cross
entropy *memorises* (training loss near 0, most flipped labels fitted): over-confidence is a property of a
converged cross-entropy learner, and an under-trained one is under-confident. Metrics: clean test accuracy, ECE
(15 bins, Guo et al. 2017) with reliability diagrams, memorisation = mean probability the final model gives to
the *noisy* label on the training examples whose label was flipped, and **calibration against the noisy-label
distribution**: under symmetric noise ``r`` the label a model is trained to predict is right with probability
``(1-r)`` when the prediction is the clean class and ``r/(K-1)`` otherwise, so the expected noisy accuracy of each
test prediction is known exactly; ``ECE_noisy`` bins confidences as usual against that expected accuracy and
``overconfidence_noisy`` = mean confidence − mean expected noisy accuracy. At ``r = 0`` both equal the clean ones.

Every comparison below is between arms that share seeds (same initialisation, same flipped labels, same data
order), so it is a **paired t test** on per-seed differences (Student critical values, two-sided 5 %; see
:mod:`kexue.experiments.stats`); fewer than two seeds decide nothing, and each verdict states its minimum
detectable effect (MDE, power 0.8). A claim over both datasets (or over sub-tests) is reproduced when every test
says so, not reproduced when any says the opposite beyond noise, inconclusive otherwise. The article gives no
effect sizes for these settings except Su's "about 1 %" for γ=1, so the only bar is seed noise. Every claim
reports the mean TaiLr weight ``clamp(p / (γ + (1-γ) p), b, 1)`` of each TaiLr arm on its training labels under
its final model (the activity of the arm: a mean near 1 is cross entropy).

* ``memorises_less`` (Su: CE "pays special attention to low-probability samples, even dirty data"): at the
  highest noise level, the headline TaiLr setting (γ=0.5, b=0, fixed before any run as the middle of the
  grid) gives lower memorisation than CE on both datasets.
* ``better_calibrated`` (the article's mechanism under noise): at the highest noise level, measured against the
  noisy-label distribution the models were trained on, (a) CE is over-confident (mean confidence above expected
  noisy accuracy) and (b) TaiLr's ``ECE_noisy`` is lower than CE's, on both datasets (four paired tests). The
  clean-label ECE and the direction of each arm's clean miscalibration are reported alongside.
* ``ce_overconfident`` (the article's mechanism: CE's over-confidence makes its probabilities poor uncertainty
  indicators), measured **without** noise: CE is over-confident (mean max-softmax confidence on the test set
  above test accuracy, paired per seed) and TaiLr's over-confidence (confidence − accuracy) is smaller than
  CE's, on both datasets (four paired tests, all must hold).
* ``gamma1_lower_accuracy`` (Su, comments: fine-tuning with γ=1 on CLUE was "mostly about 1% worse"): without
  noise, γ=1 has lower clean test accuracy than CE on both datasets. Su's 1 point is the article's effect: a
  test that stays undecided although its MDE is below 1 point counts as not reproduced.
* ``gamma1_trains_slower`` (our reading of the same remark: γ=1 converges more slowly): validation accuracy
  after the first epoch, noise 0, is lower for γ=1 than for CE on both datasets.

**(2) Real label noise: tweets** with CrowdFlower annotator confidence. Train on all training tweets (labels of
low-confidence items are often wrong) long enough for cross entropy to start memorising (its validation accuracy
peaks before the last epoch), with **validation early stopping for every arm**: each arm keeps the epoch with the
best accuracy on the (equally noisy) validation tweets. Evaluate on test tweets whose confidence is 1 (all
annotators agreed). The evidence reports each arm's best epoch and final training accuracy.

* ``tweets_high_conf``: TaiLr (γ=0.5, b=0) has higher accuracy than CE on the high-confidence test tweets
  (paired t over seeds). This is our extrapolation of the noisy-label claim to real noise, not a statement of the
  article; its ECE is reported alongside.

**(3) The paper's synthetic-oracle language model at tiny scale.** The oracle is a random first-order Markov
chain over V tokens (rows Dirichlet(α) mixed with 0.1% uniform so every transition has a finite log-probability;
the paper uses a random LSTM, the issue allows a Markov chain). Learners are one-layer LSTMs trained by MLE and
by TaiLr with b=0.2 on sequences sampled from the oracle, with enough data and epochs that MLE's held-out
perplexity comes close to the oracle's own, and with the paper's model selection (the epoch with the best
validation NLL on separate oracle samples). **Pre-registered γ grid: {1e-3, 1e-2, 0.1}** (the paper's synthetic
γ=1e-7 gives weights >= 0.990 on every oracle transition at this scale and trains as MLE; it stays in ``full``).
Measured: PPL_oracle (oracle perplexity of model samples: quality), PPL_test (model perplexity of held-out oracle
samples: coverage), and the perturbation test of the paper's ``perturb_degen.py``: apply k = 0..K successive
random perturbations (repeat a token, delete the last token, substitute a random token) to held-out sequences and
track ``overestimation(k) = [log q(x_k) - log q(x_0)] - [log p_oracle(x_k) - log p_oracle(x_0)]`` — how much less
the model's log-probability falls than the oracle's.

**Activity precondition (LM).** A TaiLr arm whose weights are all close to 1 *is* MLE. The verdict arm of the
MLE-vs-TaiLr claims is the TaiLr method with the **smallest γ whose mean weight on the training tokens, under its
own final model, is below 0.95 in every seed** (pre-registered). Without such an arm those claims are "not
testable"; the trend claims need the grid's largest γ to act.

* ``lm_less_overestimation`` (paper: MLE "overestimates the probability of corrupted sequences"; TaiLr reduces
  it): mean overestimation at k = K is larger for MLE than for the verdict arm (paired t).
* ``lm_overestimation_trend`` (the same claim as a dose-response): over the γ grid, the per-seed least-squares
  slope of overestimation(K) on log10 γ is negative (one-sample t on the seeds' slopes, nats per decade of γ).
* ``lm_better_quality`` (paper: better generation quality): the verdict arm's PPL_oracle is below MLE's
  (paired t on log PPL_oracle).
* ``lm_keeps_coverage`` (paper: "no loss of diversity"): the verdict arm's PPL_test is not above MLE's by more
  than 5 % (non-inferiority, paired t on log PPL_test with margin log 1.05).
* ``lm_quality_coverage_tradeoff`` (ours: down-weighting low-probability tokens trades coverage for quality):
  over the γ grid, the per-seed slope of log PPL_oracle on log10 γ is negative **and** that of log PPL_test is
  positive (two one-sample t tests, both must hold).

The ``quick`` preset fits a CPU budget of about four minutes on two cores: part 1 with three methods (CE; TaiLr
γ=0.5 b=0; γ=1), noise levels 0 and 0.4, 1,000-image training subsets, a 784-256-10 MLP, batch 50 and 30 epochs
(600 Adam steps: cross entropy reaches training loss ~0 without noise and fits most flipped labels at 40 %),
5,000 test images, **5 seeds**; tweets with CE and TaiLr γ=0.5, 12 epochs with early stopping, a 5,000-word
vocabulary, 3 seeds; an LM with V=50, 4,000 training sequences of 20 tokens, a 64-unit LSTM, lr 3e-3, 15 epochs
with early stopping, K=10 perturbations, MLE + the γ grid, 3 seeds. ``full`` runs the whole grid (ten methods,
noise 0/0.2/0.4, all 55,000 images, :class:`SmallCNN`, 30 epochs; the LM at the paper's 10K sequences and
128-unit LSTM, γ in {1e-7, 1e-3, 1e-2, 0.1}).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.data import Vocab, load_fashion_mnist, load_mnist, load_tweets
from kexue.losses import tailr_loss, tailr_weight
from kexue.modules import EmbeddingBagClassifier, SmallCNN
from kexue.train import (
    accuracy,
    fit,
    load_checkpoint,
    predict_logits,
    reliability_diagram,
    seed_all,
)

from ._base import Claim, Result, better, claim, mean_std, new_figure, not_run, not_worse, save_figure

NAME = "tailr"
ORDER = 60
TITLE = "TaiLr: cross entropy that stops trusting low-probability labels"
ARTICLE = "https://kexue.fm/archives/9526"
CLAIMS = {
    "memorises_less": "Under label noise TaiLr memorises the noisy training labels less than cross entropy.",
    "better_calibrated": "Under 40% symmetric label noise, against the noisy-label distribution trained on, cross "
    "entropy is over-confident and TaiLr has a lower calibration error.",
    "ce_overconfident": "Without label noise cross entropy is over-confident (confidence above accuracy) and "
    "TaiLr is less so.",
    "gamma1_lower_accuracy": "With gamma=1 (pure smoothed accuracy) the accuracy is a bit lower than CE's.",
    "gamma1_trains_slower": "With gamma=1 training converges more slowly than with CE.",
    "tweets_high_conf": "Trained on real noisy labels (tweets), TaiLr is more accurate than CE on "
    "high-confidence test items.",
    "lm_less_overestimation": "MLE overestimates the probability of perturbed sequences more than TaiLr.",
    "lm_overestimation_trend": "The overestimation of perturbed sequences falls as TaiLr's gamma grows.",
    "lm_better_quality": "TaiLr's samples are of higher quality than MLE's (lower oracle perplexity).",
    "lm_keeps_coverage": "TaiLr keeps MLE's coverage of the data (perplexity on held-out oracle text not worse "
    "by more than 5%).",
    "lm_quality_coverage_tradeoff": "A larger TaiLr gamma trades coverage for quality: oracle perplexity of "
    "samples falls and perplexity on held-out oracle text rises.",
}

ALL_METHODS = (
    "ce",
    "tailr:0.1:0",
    "tailr:0.1:0.2",
    "tailr:0.5:0",
    "tailr:0.5:0.2",
    "tailr:0.8:0",
    "tailr:0.8:0.2",
    "tailr:1:0",
    "ls:0.1",
    "focal:2",
)
HEADLINE = "tailr:0.5:0"


@dataclass(frozen=True)
class NoisyConfig:
    """Part 1: symmetric label noise on MNIST / Fashion-MNIST.

    Attributes:
        datasets: subset of ("mnist", "fashion_mnist").
        noise_levels: fractions of flipped training labels.
        methods: "ce", "tailr:<gamma>:<b>", "ls:<eps>", "focal:<gamma_f>".
        seeds: number of seeds (seed, seed+1, ...).
        train_limit: training images (None = all 55,000).
        test_limit: clean test images (None = all 10,000).
        val_limit: clean validation images for the per-epoch curve.
        model: "mlp" (784-hidden-10) or "cnn" (:class:`SmallCNN`).
        hidden: MLP hidden width / CNN width.
        epochs: passes over the training set.
        batch_size: examples per step.
        lr: Adam learning rate (constant, so late epochs keep fitting the noise as in the paper's setting).
    """

    datasets: tuple[str, ...] = ("mnist", "fashion_mnist")
    noise_levels: tuple[float, ...] = (0.0, 0.2, 0.4)
    methods: tuple[str, ...] = ALL_METHODS
    seeds: int = 3
    train_limit: int | None = None
    test_limit: int | None = None
    val_limit: int = 2000
    model: Literal["mlp", "cnn"] = "cnn"
    hidden: int = 32
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3


@dataclass(frozen=True)
class TweetsConfig:
    """Part 2: real label noise (tweets with annotator confidence).

    Attributes:
        methods: as in :class:`NoisyConfig`.
        seeds: number of seeds.
        epochs: passes over the training tweets.
        max_len: tokens per tweet.
        dim: embedding (and hidden) width of :class:`EmbeddingBagClassifier`.
        vocab_size: most frequent training words kept.
        high_conf: test items with confidence >= this are "clean".
        lr: Adam learning rate.
        train_limit: training tweets (None = all).
        val_limit: validation tweets for early stopping (None = all).
    """

    methods: tuple[str, ...] = ("ce", "tailr:0.5:0", "tailr:0.1:0.2", "ls:0.1", "focal:2")
    seeds: int = 3
    epochs: int = 10
    max_len: int = 40
    dim: int = 64
    vocab_size: int = 20000
    high_conf: float = 0.999
    lr: float = 2e-3
    train_limit: int | None = None
    val_limit: int | None = None


@dataclass(frozen=True)
class LMConfig:
    """Part 3: synthetic Markov-chain oracle, LSTM learners, MLE vs TaiLr.

    Attributes:
        vocab: oracle vocabulary size.
        length: tokens per sequence.
        alpha: Dirichlet concentration of the oracle's transition rows (small = peaked).
        n_train: oracle training sequences (the paper uses 10K).
        n_eval: held-out oracle sequences and model samples for the metrics.
        n_valid: oracle sequences for model selection (the epoch with the best validation NLL, as in the paper).
        methods: "mle" or "tailr:<gamma>:<b>" (paper synthetic setting: γ=1e-7, b=0.2).
        seeds: number of learner seeds (the oracle is fixed by ``seed``).
        embed: learner embedding width.
        hidden: learner LSTM width (the paper: 128).
        epochs: passes over the training sequences.
        lr: Adam learning rate (paper: 1e-3).
        batch_size: sequences per step.
        perturbations: K, the number of successive perturbations.
    """

    vocab: int = 100
    length: int = 20
    alpha: float = 0.05
    n_train: int = 10000
    n_eval: int = 2000
    n_valid: int = 1000
    methods: tuple[str, ...] = ("mle", "tailr:1e-07:0.2", "tailr:0.001:0.2", "tailr:0.01:0.2", "tailr:0.1:0.2")
    seeds: int = 3
    embed: int = 64
    hidden: int = 128
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 64
    perturbations: int = 20


@dataclass(frozen=True)
class Config:
    """Settings of the TaiLr experiment (three parts; ``run_*`` flags switch parts off)."""

    seed: int = 0
    noisy: NoisyConfig = field(default_factory=NoisyConfig)
    tweets: TweetsConfig = field(default_factory=TweetsConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    run_noisy: bool = True
    run_tweets: bool = True
    run_lm: bool = True


QUICK_METHODS = ("ce", "tailr:0.5:0", "tailr:1:0")
LM_GRID = ("tailr:0.001:0.2", "tailr:0.01:0.2", "tailr:0.1:0.2")  # pre-registered γ grid of the quick LM

PRESETS = {
    "smoke": Config(
        noisy=NoisyConfig(
            datasets=("mnist",),
            noise_levels=(0.0, 0.4),
            methods=("ce", "tailr:0.5:0", "tailr:1:0", "focal:2"),
            seeds=2,
            train_limit=300,
            test_limit=300,
            val_limit=200,
            model="mlp",
            hidden=64,
            epochs=2,
        ),
        tweets=TweetsConfig(
            methods=("ce", "tailr:0.5:0"), seeds=2, epochs=2, train_limit=1000, val_limit=300, vocab_size=2000
        ),
        lm=LMConfig(
            vocab=20,
            length=8,
            n_train=200,
            n_eval=100,
            n_valid=100,
            methods=("mle", "tailr:1e-07:0.2", "tailr:0.01:0.2", "tailr:0.1:0.2"),
            seeds=2,
            embed=16,
            hidden=16,
            epochs=2,
            perturbations=4,
        ),
    ),
    "quick": Config(
        noisy=NoisyConfig(
            noise_levels=(0.0, 0.4),
            methods=QUICK_METHODS,
            seeds=5,
            train_limit=1000,
            test_limit=5000,
            val_limit=500,
            model="mlp",
            hidden=256,
            epochs=30,
            batch_size=50,
        ),
        tweets=TweetsConfig(methods=("ce", "tailr:0.5:0"), seeds=3, epochs=12, dim=32, vocab_size=5000),
        lm=LMConfig(
            vocab=50,
            n_train=4000,
            n_eval=500,
            n_valid=500,
            methods=("mle", *LM_GRID),
            seeds=3,
            embed=32,
            hidden=64,
            epochs=15,
            lr=3e-3,
            perturbations=10,
        ),
    ),
    "full": Config(),
}


# ---------------------------------------------------------------------------------------------------------------
# losses


def focal_loss(logits: Tensor, target: Tensor, *, gamma: float = 2.0) -> Tensor:
    """Focal loss (Lin et al., ICCV 2017, Eq. 4 without α): mean of ``-(1-p)^γ log p``. Comparison only."""
    logp = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
    return (-((1 - logp.exp()) ** gamma) * logp).mean()


def _loss_fn(method: str) -> Any:
    kind, *args = method.split(":")
    if kind in ("ce", "mle"):
        return lambda logits, y: F.cross_entropy(logits, y)
    if kind == "tailr":
        g, b = float(args[0]), float(args[1])
        return lambda logits, y: tailr_loss(logits, y, gamma=g, min_weight=b)
    if kind == "ls":
        eps = float(args[0])
        return lambda logits, y: F.cross_entropy(logits, y, label_smoothing=eps)
    if kind == "focal":
        gf = float(args[0])
        return lambda logits, y: focal_loss(logits, y, gamma=gf)
    raise ValueError(f"unknown method {method!r}; expected ce, mle, tailr:<g>:<b>, ls:<eps> or focal:<g>")


def _mean_weight(method: str, logits: Tensor, target: Tensor) -> float:
    """Mean TaiLr weight ``clamp(p / (γ + (1-γ) p), b, 1)`` of the targets (NaN for methods that are not TaiLr).

    ``logits`` are ``(N, C)`` or ``(N, C, L)`` with ``target`` ``(N,)`` or ``(N, L)``. A mean close to 1 means the arm
    trains as cross entropy does: the activity precondition of every TaiLr-vs-MLE verdict.
    """
    kind, *args = method.split(":")
    if kind != "tailr":
        return math.nan
    logp = F.log_softmax(logits.double(), dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    return float(tailr_weight(logp, gamma=float(args[0]), min_weight=float(args[1])).mean())


def _label(method: str) -> str:
    kind, *args = method.split(":")
    if kind == "tailr":
        return f"TaiLr γ={args[0]} b={args[1]}"
    return {"ce": "CE", "mle": "MLE", "ls": f"LS ε={args[0] if args else ''}", "focal": "focal γ=2"}.get(kind, method)


def _slug(s: str) -> str:
    return s.replace(":", "_").replace(".", "p")


class _BestEpoch:
    """Validation early stopping: keeps the weights of the epoch with the highest validation score.

    Call :meth:`update` once per epoch (from ``fit``'s ``evaluate``). The best weights go to a file next to the
    training checkpoint, so a resumed run restores them too.
    """

    def __init__(self, checkpoint: Path, resume: bool) -> None:
        self.path = checkpoint.with_suffix(".best.pt")
        self.score = -math.inf
        self.epoch = 0
        self.seen = 0  # epochs scored so far (a resumed run continues the count of its checkpoint)
        if resume and self.path.is_file() and checkpoint.is_file():
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            self.score, self.epoch = float(state["score"]), int(state["epoch"])
            self.seen = int(load_checkpoint(checkpoint, map_location="cpu")["epoch"])
        elif self.path.is_file():
            self.path.unlink()

    def update(self, model: nn.Module, score: float) -> None:
        self.seen += 1
        if score > self.score:
            self.score, self.epoch = score, self.seen
            self.path.parent.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            torch.save({"model": state, "score": score, "epoch": self.seen}, self.path)

    def restore(self, model: nn.Module) -> int:
        """Load the best weights into ``model``; return the best epoch (1-based; 0 when no epoch was scored)."""
        if self.path.is_file():
            model.load_state_dict(torch.load(self.path, map_location="cpu", weights_only=True)["model"])
        return self.epoch


def _noisy_calibration(logits: Tensor, target: Tensor, rate: float, n_bins: int = 15) -> tuple[float, float]:
    """ECE and over-confidence against the symmetric-noise label distribution of rate ``rate``.

    A prediction of the clean class matches a noisy label with probability ``1 - rate``, any other class with
    ``rate / (K - 1)`` (the noise moves a label to a uniformly drawn different class), so each prediction's
    expected noisy accuracy is exact; the ECE bins confidences as :func:`reliability_diagram` does (15 equal-width
    bins, weighted by count). ``rate = 0`` gives the clean ECE and confidence − accuracy.

    Returns:
        ``(ece_noisy, mean confidence - mean expected noisy accuracy)``.
    """
    probs = torch.softmax(logits.detach().double().cpu(), dim=1)
    conf, pred = probs.max(dim=1)
    k = probs.shape[1]
    hit = (pred == target.cpu()).double()
    expected = hit * (1 - rate) + (1 - hit) * rate / (k - 1)
    idx = (conf * n_bins).ceil().long().clamp(1, n_bins) - 1
    ece = 0.0
    for i in range(n_bins):
        sel = idx == i
        if sel.any():
            ece += float(sel.double().mean() * (conf[sel].mean() - expected[sel].mean()).abs())
    return ece, float(conf.mean() - expected.mean())


# ---------------------------------------------------------------------------------------------------------------
# part 1: synthetic label noise


def _flip(y: Tensor, rate: float, n_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """Symmetric noise: exactly round(rate*N) labels moved to a uniformly drawn different class."""
    g = torch.Generator().manual_seed(seed)
    n = y.shape[0]
    idx = torch.randperm(n, generator=g)[: round(rate * n)]
    noisy = y.clone()
    shift = torch.randint(1, n_classes, (idx.numel(),), generator=g)
    noisy[idx] = (y[idx] + shift) % n_classes
    flipped = torch.zeros(n, dtype=torch.bool)
    flipped[idx] = True
    return noisy, flipped


def _image_model(cfg: NoisyConfig) -> nn.Module:
    if cfg.model == "cnn":
        return SmallCNN(width=cfg.hidden)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 10))


def _run_noisy(cfg: NoisyConfig, seed0: int, out_dir: Path, resume: bool) -> dict[str, Any]:
    loaders = {"mnist": load_mnist, "fashion_mnist": load_fashion_mnist}
    runs: list[dict[str, Any]] = []
    pooled: dict[tuple[str, float, str], list[Tensor]] = {}
    for ds in cfg.datasets:
        load = loaders[ds]
        x_tr, y_tr = load("train", limit=cfg.train_limit)
        x_val, y_val = load("val", limit=cfg.val_limit)
        x_te, y_te = load("test", limit=cfg.test_limit)
        for rate in cfg.noise_levels:
            for s in range(cfg.seeds):
                seed = seed0 + s
                y_noisy, flipped = _flip(y_tr, rate, 10, seed=10_000 + seed)
                for method in cfg.methods:
                    loss_fn = _loss_fn(method)
                    seed_all(seed)
                    model = _image_model(cfg)

                    def step(m: nn.Module, batch: list[Tensor], loss_fn: Any = loss_fn) -> dict[str, Tensor]:
                        x, y = batch
                        logits = m(x)
                        # the TaiLr value is not comparable across steps (its weight moves); track the NLL too
                        return {"loss": loss_fn(logits, y), "nll": F.cross_entropy(logits.detach(), y)}

                    def evaluate(m: nn.Module, xv: Tensor = x_val, yv: Tensor = y_val) -> dict[str, float]:
                        return {"val_acc": accuracy(predict_logits(m, xv), yv)}

                    res = fit(
                        model,
                        [x_tr, y_noisy],
                        epochs=cfg.epochs,
                        batch_size=cfg.batch_size,
                        optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=cfg.lr),
                        step=step,
                        evaluate=evaluate,
                        checkpoint=out_dir / "checkpoints" / f"noisy-{ds}-{rate}-{_slug(method)}-{seed}.pt",
                        resume=resume,
                        seed=seed,
                        name=f"{NAME}:{ds}:{rate}:{method}:{seed}",
                    )
                    te_logits = predict_logits(model, x_te)
                    diag = reliability_diagram(te_logits, y_te)
                    row: dict[str, Any] = {
                        "dataset": ds,
                        "noise": rate,
                        "method": method,
                        "seed": seed,
                        "test_acc": accuracy(te_logits, y_te),
                        "ece": diag.ece,
                        "mean_conf": float(torch.softmax(te_logits, 1).max(1).values.mean()),
                        # activity of the TaiLr weights on the (noisy) training labels under the final model
                        "mean_weight": _mean_weight(method, predict_logits(model, x_tr), y_noisy),
                        "val_acc_epoch1": res.history[0]["val_acc"] if res.history else math.nan,
                        "val_acc_curve": [h["val_acc"] for h in res.history],
                        "loss_curve": [h["loss"] for h in res.history],
                        "nll_curve": [h["nll"] for h in res.history],
                    }
                    row["overconfidence"] = row["mean_conf"] - row["test_acc"]
                    row["ece_noisy"], row["overconfidence_noisy"] = _noisy_calibration(te_logits, y_te, rate)
                    row["train_acc_noisy_labels"] = accuracy(predict_logits(model, x_tr), y_noisy)
                    if flipped.any():
                        tr_logits = predict_logits(model, x_tr[flipped])
                        p = torch.softmax(tr_logits, 1)
                        row["memorisation"] = float(p.gather(1, y_noisy[flipped][:, None]).mean())
                        row["noisy_fit_rate"] = accuracy(tr_logits, y_noisy[flipped])
                        row["clean_label_prob"] = float(p.gather(1, y_tr[flipped][:, None]).mean())
                    else:
                        row["memorisation"] = math.nan
                        row["noisy_fit_rate"] = math.nan
                        row["clean_label_prob"] = math.nan
                    runs.append(row)
                    pooled.setdefault((ds, rate, method), []).append(te_logits)
    # pooled (over seeds) reliability diagrams, kept for the plot
    rel: dict[str, Any] = {}
    for (ds, rate, method), logits in pooled.items():
        loaders_y = loaders[ds]("test", limit=cfg.test_limit)[1]
        d = reliability_diagram(torch.cat(logits), loaders_y.repeat(len(logits)))
        rel[f"{ds}|{rate}|{method}"] = {
            "confidence": d.confidence.tolist(),
            "accuracy": d.accuracy.tolist(),
            "count": d.count.tolist(),
            "ece": d.ece,
        }
    return {"runs": runs, "reliability": rel}


def _values(runs: list[dict[str, Any]], key: str, **where: Any) -> list[float]:
    return [r[key] for r in runs if all(r[k] == v for k, v in where.items())]


_HOLDS = {"reproduced": True, "not reproduced": False}


def _all_of(results: list[bool | None]) -> bool | None:
    if not results:
        return None
    if any(r is False for r in results):
        return False
    if all(r is True for r in results):
        return True
    return None


def _joint(cid: str, parts: list[tuple[str, Claim]], *, prefix: str = "") -> Claim:
    """One claim from several tests (datasets, or sub-claims): reproduced when every part is, not reproduced when
    any part is not, inconclusive otherwise. The MDE is the largest of the parts' (all in the same units)."""
    holds = _all_of([_HOLDS.get(c.verdict) for _, c in parts])
    measured: dict[str, float] = {}
    for name, c in parts:
        measured.update({f"{name}_{k}": v for k, v in c.measured.items()})
    mdes = [c.mde for _, c in parts if c.mde is not None]
    seeds = [c.seeds for _, c in parts if c.seeds is not None]
    tests = sorted({c.test for _, c in parts if c.test})
    return claim(
        cid,
        CLAIMS[cid],
        ARTICLE,
        holds=holds,
        evidence=prefix + "; ".join(f"{name}: {c.evidence} [{c.verdict}]" for name, c in parts),
        measured=measured,
        seeds=min(seeds) if seeds else None,
        mde=max(mdes) if mdes else None,
        test=(f"{' + '.join(tests)}, {len(parts)} tests, all must agree" if len(parts) > 1 else tests[0])
        if tests
        else None,
    )


def _not_run(cid: str, why: str) -> Claim:
    return not_run(cid, CLAIMS[cid], ARTICLE, reason=why)


def _noisy_claims(cfg: NoisyConfig, runs: list[dict[str, Any]]) -> list[Claim]:
    out: list[Claim] = []
    top = max(cfg.noise_levels)
    methods = cfg.methods

    def v(key: str, ds: str, rate: float, method: str) -> list[float]:
        return _values(runs, key, dataset=ds, noise=rate, method=method)

    def conf_acc(ds: str, rate: float, method: str) -> str:
        conf = mean_std(v("mean_conf", ds, rate, method))[0]
        acc = mean_std(v("test_acc", ds, rate, method))[0]
        return f"{_label(method)} confidence {conf:.3f} vs accuracy {acc:.3f}"

    def weights(rate: float, *ms: str) -> str:
        """Activity: mean TaiLr weight of each TaiLr arm on its (noisy) training labels, per dataset."""
        parts = []
        for m in ms:
            if m.startswith("tailr"):
                w = ", ".join(f"{ds} {mean_std(v('mean_weight', ds, rate, m))[0]:.3f}" for ds in cfg.datasets)
                parts.append(f"{_label(m)} mean weight {w}")
        return "; ".join(parts)

    def train_fit(rate: float, *ms: str) -> str:
        return "; ".join(
            f"{_label(m)} train accuracy on its labels "
            + ", ".join(f"{ds} {mean_std(v('train_acc_noisy_labels', ds, rate, m))[0]:.3f}" for ds in cfg.datasets)
            for m in ms
        )

    cid = "memorises_less"
    if top <= 0 or "ce" not in methods or HEADLINE not in methods:
        out.append(_not_run(cid, "not run in this preset"))
    else:
        parts = []
        for ds in cfg.datasets:
            ce, tl = v("memorisation", ds, top, "ce"), v("memorisation", ds, top, HEADLINE)
            # "TaiLr lower" = CE minus TaiLr > 0
            parts.append((ds, better(cid, "", ARTICLE, ce, tl, paired=True, names=("CE", "TaiLr"))))
        out.append(
            _joint(
                cid,
                parts,
                prefix=f"memorisation (mean p of the flipped label) at {top:.0%} noise, CE vs TaiLr γ=0.5 b=0, "
                f"{cfg.seeds} seeds ({weights(top, HEADLINE)}; {train_fit(top, 'ce', HEADLINE)}): ",
            )
        )

    cid = "better_calibrated"
    if top <= 0 or "ce" not in methods or HEADLINE not in methods:
        out.append(_not_run(cid, "not run in this preset"))
    else:
        parts = []
        for ds in cfg.datasets:
            ce_over = v("overconfidence_noisy", ds, top, "ce")
            clean = f"clean labels: {conf_acc(ds, top, 'ce')}, ECE {mean_std(v('ece', ds, top, 'ce'))[0]:.3f}; "
            clean += f"{conf_acc(ds, top, HEADLINE)}, ECE {mean_std(v('ece', ds, top, HEADLINE))[0]:.3f};"
            parts.append(
                (f"{ds} CE over-confident vs noisy labels",
                 better(cid, "", ARTICLE, ce_over, [0.0] * len(ce_over),
                        paired=True, names=("CE confidence - expected noisy accuracy", "0"), evidence=clean))
            )  # fmt: skip
            parts.append(
                (f"{ds} TaiLr lower ECE_noisy",
                 better(cid, "", ARTICLE, v("ece_noisy", ds, top, "ce"), v("ece_noisy", ds, top, HEADLINE),
                        paired=True, names=("CE ECE_noisy", "TaiLr ECE_noisy"),
                        evidence=f"TaiLr confidence - expected noisy accuracy "
                        f"{mean_std(v('overconfidence_noisy', ds, top, HEADLINE))[0]:+.3f};"))
            )  # fmt: skip
        out.append(
            _joint(
                cid,
                parts,
                prefix=f"calibration against the {top:.0%}-symmetric-noise label distribution, CE vs TaiLr γ=0.5 "
                f"b=0, {cfg.seeds} seeds ({weights(top, HEADLINE)}): ",
            )
        )

    cid = "ce_overconfident"
    if 0.0 not in cfg.noise_levels or "ce" not in methods or HEADLINE not in methods:
        out.append(_not_run(cid, "not run in this preset"))
    else:
        parts = []
        for ds in cfg.datasets:
            ce_conf, ce_acc = v("mean_conf", ds, 0.0, "ce"), v("test_acc", ds, 0.0, "ce")
            ce_gap, tl_gap = v("overconfidence", ds, 0.0, "ce"), v("overconfidence", ds, 0.0, HEADLINE)
            parts.append(
                (f"{ds} CE over-confident", better(cid, "", ARTICLE, ce_conf, ce_acc, paired=True,
                                                    names=("confidence", "accuracy")))
            )  # fmt: skip
            parts.append(
                (f"{ds} TaiLr less", better(cid, "", ARTICLE, ce_gap, tl_gap, paired=True,
                                            names=("CE conf-acc", "TaiLr conf-acc")))
            )  # fmt: skip
        out.append(
            _joint(
                cid,
                parts,
                prefix=f"no label noise, test set, TaiLr γ=0.5 b=0, {cfg.seeds} seeds ({weights(0.0, HEADLINE)}; "
                f"{train_fit(0.0, 'ce', HEADLINE)}): ",
            )
        )

    g1 = "tailr:1:0"
    for cid, key, effect in (
        ("gamma1_lower_accuracy", "test_acc", 0.01),
        ("gamma1_trains_slower", "val_acc_epoch1", None),
    ):
        if 0.0 not in cfg.noise_levels or "ce" not in methods or g1 not in methods:
            out.append(_not_run(cid, "not run in this preset"))
            continue
        parts = [
            (ds, better(cid, "", ARTICLE, v(key, ds, 0.0, "ce"), v(key, ds, 0.0, g1), paired=True, effect=effect,
                        names=("CE", "γ=1")))
            for ds in cfg.datasets
        ]  # fmt: skip
        why = " (article effect: about 1 point; undecided with a smaller MDE = not reproduced)" if effect else ""
        out.append(_joint(cid, parts, prefix=f"{key}, no label noise, {cfg.seeds} seeds ({weights(0.0, g1)}){why}: "))
    return out


# ---------------------------------------------------------------------------------------------------------------
# part 2: tweets


def _run_tweets(cfg: TweetsConfig, seed0: int, out_dir: Path, resume: bool) -> dict[str, Any]:
    tr_texts, y_tr, _ = load_tweets("train", limit=cfg.train_limit)
    va_texts, y_va, _ = load_tweets("val", limit=cfg.val_limit)
    te_texts, y_te, c_te = load_tweets("test")
    vocab = Vocab.build(tr_texts, max_size=cfg.vocab_size, min_freq=2)
    ids_tr = vocab.encode(tr_texts, max_len=cfg.max_len)
    ids_va = vocab.encode(va_texts, max_len=cfg.max_len)
    ids_te = vocab.encode(te_texts, max_len=cfg.max_len)
    hi = c_te >= cfg.high_conf  # NaN compares False: unknown confidence is not "clean"
    runs: list[dict[str, Any]] = []
    for s in range(cfg.seeds):
        seed = seed0 + s
        for method in cfg.methods:
            loss_fn = _loss_fn(method)
            seed_all(seed)
            model = EmbeddingBagClassifier(len(vocab), 3, dim=cfg.dim, hidden=cfg.dim)

            ckpt = out_dir / "checkpoints" / f"tweets-{_slug(method)}-{seed}.pt"
            best = _BestEpoch(ckpt, resume)

            def step(m: nn.Module, batch: list[Tensor], loss_fn: Any = loss_fn) -> dict[str, Tensor]:
                x, y = batch
                return {"loss": loss_fn(m(x), y)}

            def evaluate(m: nn.Module, best: _BestEpoch = best) -> dict[str, float]:
                acc = accuracy(predict_logits(m, ids_va), y_va)
                best.update(m, acc)
                return {"val_acc": acc}

            res = fit(
                model,
                [ids_tr, y_tr],
                epochs=cfg.epochs,
                batch_size=128,
                optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=cfg.lr),
                step=step,
                evaluate=evaluate,
                checkpoint=ckpt,
                resume=resume,
                seed=seed,
                name=f"{NAME}:tweets:{method}:{seed}",
            )
            final_train_acc = accuracy(predict_logits(model, ids_tr), y_tr)
            best_epoch = best.restore(model)  # validation early stopping: evaluate the best epoch's weights
            logits = predict_logits(model, ids_te)
            tr_logits = predict_logits(model, ids_tr)
            runs.append(
                {
                    "method": method,
                    "seed": seed,
                    "best_epoch": best_epoch,
                    "val_acc_curve": [h["val_acc"] for h in res.history],
                    "final_train_acc": final_train_acc,
                    "train_acc": accuracy(tr_logits, y_tr),
                    "mean_weight": _mean_weight(method, tr_logits, y_tr),
                    "acc_high_conf": accuracy(logits[hi], y_te[hi]),
                    "acc_all": accuracy(logits, y_te),
                    "ece_high_conf": reliability_diagram(logits[hi], y_te[hi]).ece,
                    "ece_all": reliability_diagram(logits, y_te).ece,
                    "loss_curve": [h["loss"] for h in res.history],
                }
            )
    return {"runs": runs, "n_train": len(tr_texts), "n_test_high_conf": int(hi.sum()), "n_test": len(te_texts)}


def _tweets_claim(cfg: TweetsConfig, runs: list[dict[str, Any]]) -> Claim:
    cid = "tweets_high_conf"
    if "ce" not in cfg.methods or HEADLINE not in cfg.methods:
        return _not_run(cid, "not run in this preset")
    ce = _values(runs, "acc_high_conf", method="ce")
    tl = _values(runs, "acc_high_conf", method=HEADLINE)
    parts = []
    for m in cfg.methods:
        a = mean_std(_values(runs, "acc_high_conf", method=m))
        e = mean_std(_values(runs, "ece_high_conf", method=m))
        ep = _values(runs, "best_epoch", method=m)
        fin = mean_std(_values(runs, "final_train_acc", method=m))[0]
        w = mean_std(_values(runs, "mean_weight", method=m))[0] if m.startswith("tailr") else math.nan
        parts.append(
            f"{_label(m)} acc {a[0]:.4f}±{a[1]:.4f}, ECE {e[0]:.4f}±{e[1]:.4f}, best epoch {ep} of {cfg.epochs}, "
            f"train accuracy at the last epoch {fin:.3f}" + ("" if math.isnan(w) else f", mean weight {w:.3f}")
        )
    return better(
        cid,
        CLAIMS[cid],
        ARTICLE,
        tl,
        ce,
        paired=True,
        names=("TaiLr", "CE"),
        evidence=f"high-confidence test tweets, {cfg.seeds} seeds, each arm at its best validation epoch: "
        + "; ".join(parts)
        + ";",
    )


# ---------------------------------------------------------------------------------------------------------------
# part 3: synthetic oracle language model


class _Oracle:
    """First-order Markov chain: start distribution ``(V,)`` and transitions ``(V, V)`` (log-probabilities)."""

    def __init__(self, vocab: int, alpha: float, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        conc = torch.full((vocab + 1, vocab), alpha, dtype=torch.float64)
        gam = torch._standard_gamma(conc, generator=g)
        rows = gam / gam.sum(1, keepdim=True)
        rows = 0.999 * rows + 0.001 / vocab  # every transition finite: log-probabilities of perturbed text exist
        self.log_start = rows[vocab].log()  # (V,)
        self.log_trans = rows[:vocab].log()  # (V, V)
        self.vocab = vocab

    def sample(self, n: int, length: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        out = torch.empty(n, length, dtype=torch.long)
        out[:, 0] = torch.multinomial(self.log_start.exp(), n, replacement=True, generator=g)
        probs = self.log_trans.exp()
        for t in range(1, length):
            out[:, t] = torch.multinomial(probs[out[:, t - 1]], 1, generator=g).squeeze(1)
        return out

    def log_prob(self, seqs: list[Tensor]) -> Tensor:
        out = []
        for s in seqs:
            lp = self.log_start[s[0]] + (self.log_trans[s[:-1], s[1:]].sum() if s.numel() > 1 else 0.0)
            out.append(lp)
        return torch.stack(out).float()


class _LSTMLM(nn.Module):
    """Token LM: BOS + tokens -> embedding -> one-layer LSTM -> logits over V (BOS id = V)."""

    def __init__(self, vocab: int, embed: int, hidden: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.emb = nn.Embedding(vocab + 1, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, inp: Tensor) -> Tensor:
        h, _ = self.lstm(self.emb(inp))
        return self.out(h)  # (B, L, V)

    @torch.no_grad()
    def sample(self, n: int, length: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        tok = torch.full((n, 1), self.vocab, dtype=torch.long)
        state = None
        out = []
        for _ in range(length):
            h, state = self.lstm(self.emb(tok), state)
            p = torch.softmax(self.out(h[:, -1]).double(), -1)
            tok = torch.multinomial(p, 1, generator=g)
            out.append(tok)
        return torch.cat(out, 1)

    @torch.no_grad()
    def log_prob(self, seqs: list[Tensor]) -> Tensor:
        """Sum of token log-probabilities of variable-length sequences (padded with ignore_index)."""
        n, lmax = len(seqs), max(s.numel() for s in seqs)
        inp = torch.full((n, lmax), self.vocab, dtype=torch.long)
        tgt = torch.full((n, lmax), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            tgt[i, : s.numel()] = s
            inp[i, 1 : s.numel()] = s[:-1]
        logp = torch.log_softmax(self(inp).float(), -1)  # (n, L, V)
        keep = tgt != -100
        tok = logp.gather(2, tgt.clamp(min=0)[..., None]).squeeze(-1)
        return (tok * keep).sum(1)


def _perturb(seq: Tensor, vocab: int, g: torch.Generator) -> Tensor:
    """One random perturbation of perturb_degen.py: repeat a token, delete the last token, or substitute one."""
    op = int(torch.randint(0, 3, (1,), generator=g))
    if op == 1 and seq.numel() > 2:
        return seq[:-1]
    pos = int(torch.randint(0, seq.numel(), (1,), generator=g))
    if op == 0:
        return torch.cat([seq[: pos + 1], seq[pos : pos + 1], seq[pos + 1 :]])
    new = seq.clone()
    new[pos] = int(torch.randint(0, vocab, (1,), generator=g))
    return new


def _run_lm(cfg: LMConfig, seed0: int, out_dir: Path, resume: bool) -> dict[str, Any]:
    oracle = _Oracle(cfg.vocab, cfg.alpha, seed=seed0 + 777)
    train = oracle.sample(cfg.n_train, cfg.length, seed=seed0 + 1)
    held = oracle.sample(cfg.n_eval, cfg.length, seed=seed0 + 2)
    valid = oracle.sample(cfg.n_valid, cfg.length, seed=seed0 + 4)

    def shift(x: Tensor) -> Tensor:  # BOS + tokens[:-1]: the inputs predicting each token
        return torch.cat([torch.full((x.shape[0], 1), cfg.vocab, dtype=torch.long), x[:, :-1]], 1)

    inp, inp_valid = shift(train), shift(valid)
    # perturbation chains (shared by every learner): chains[k][i] = held[i] after k perturbations
    g = torch.Generator().manual_seed(seed0 + 3)
    chains: list[list[Tensor]] = [[s for s in held]]
    for _ in range(cfg.perturbations):
        chains.append([_perturb(s, cfg.vocab, g) for s in chains[-1]])
    oracle_lp = torch.stack([oracle.log_prob(c) for c in chains])  # (K+1, n)
    oracle_ent = float(-oracle.log_prob(list(held)).mean() / cfg.length)
    runs: list[dict[str, Any]] = []
    for s in range(cfg.seeds):
        seed = seed0 + s
        for method in cfg.methods:
            loss_fn = _loss_fn(method)
            seed_all(seed)
            model = _LSTMLM(cfg.vocab, cfg.embed, cfg.hidden)

            ckpt = out_dir / "checkpoints" / f"lm-{_slug(method)}-{seed}.pt"
            best = _BestEpoch(ckpt, resume)

            def step(m: nn.Module, batch: list[Tensor], loss_fn: Any = loss_fn) -> dict[str, Tensor]:
                x, y = batch
                logits = m(x).transpose(1, 2)  # (B, V, L) vs target (B, L)
                return {"loss": loss_fn(logits, y), "nll": F.cross_entropy(logits.detach(), y)}

            def evaluate(m: nn.Module, best: _BestEpoch = best) -> dict[str, float]:
                # the paper's model selection: the epoch with the lowest validation NLL
                with torch.no_grad():
                    nll = float(F.cross_entropy(m(inp_valid).transpose(1, 2), valid))
                best.update(m, -nll)
                return {"valid_nll": nll}

            res = fit(
                model,
                [inp, train],
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=cfg.lr),
                step=step,
                evaluate=evaluate,
                grad_clip=1.0,
                checkpoint=ckpt,
                resume=resume,
                seed=seed,
                device="cpu",
                name=f"{NAME}:lm:{method}:{seed}",
            )
            best_epoch = best.restore(model)
            model.eval()
            with torch.no_grad():
                mean_weight = _mean_weight(method, model(inp).transpose(1, 2), train)
            samples = model.sample(cfg.n_eval, cfg.length, seed=seed + 99)
            ppl_oracle = math.exp(float(-oracle.log_prob(list(samples)).mean() / cfg.length))
            model_lp = torch.stack([model.log_prob(c) for c in chains])  # (K+1, n)
            ppl_test = math.exp(float(-model_lp[0].mean() / cfg.length))
            over = (model_lp - model_lp[0]) - (oracle_lp - oracle_lp[0])  # (K+1, n)
            runs.append(
                {
                    "method": method,
                    "seed": seed,
                    "ppl_oracle": ppl_oracle,
                    "ppl_test": ppl_test,
                    "mean_weight": mean_weight,
                    "best_epoch": best_epoch,
                    "valid_nll_curve": [h["valid_nll"] for h in res.history],
                    "overestimation": over.mean(1).tolist(),
                    "loss_curve": [h["loss"] for h in res.history],
                    "nll_curve": [h["nll"] for h in res.history],
                }
            )
    return {"runs": runs, "oracle_entropy_per_token": oracle_ent, "oracle_ppl": math.exp(oracle_ent)}


LM_ACTIVE_WEIGHT = 0.95  # pre-registered: a TaiLr arm whose mean weight is >= this trains as MLE does


def _lm_verdict_arm(cfg: LMConfig, runs: list[dict[str, Any]]) -> tuple[str | None, str]:
    """The TaiLr method with the smallest γ whose mean training-token weight is below 0.95 in every seed."""
    notes = []
    chosen = None
    for m in sorted((m for m in cfg.methods if m.startswith("tailr")), key=lambda m: float(m.split(":")[1])):
        w = [r["mean_weight"] for r in runs if r["method"] == m]
        notes.append(f"{_label(m)} mean weight {min(w):.4f}–{max(w):.4f}")
        if chosen is None and w and max(w) < LM_ACTIVE_WEIGHT:
            chosen = m
    return chosen, "; ".join(notes)


def _slopes(cfg: LMConfig, runs: list[dict[str, Any]], metric: Any) -> list[float]:
    """Per seed, the least-squares slope of ``metric(run)`` on log10 γ over the TaiLr arms of the grid."""
    grid = [m for m in cfg.methods if m.startswith("tailr")]
    xs = [math.log10(float(m.split(":")[1])) for m in grid]
    xbar = sum(xs) / len(xs)
    sxx = sum((x - xbar) ** 2 for x in xs)
    out = []
    for seed in sorted({r["seed"] for r in runs}):
        ys = [metric(next(r for r in runs if r["method"] == m and r["seed"] == seed)) for m in grid]
        ybar = sum(ys) / len(ys)
        out.append(sum((x - xbar) * (y - ybar) for x, y in zip(xs, ys)) / sxx)
    return out


def _lm_claims(cfg: LMConfig, runs: list[dict[str, Any]]) -> list[Claim]:
    ids = ("lm_less_overestimation", "lm_better_quality", "lm_keeps_coverage")
    trend_ids = ("lm_overestimation_trend", "lm_quality_coverage_tradeoff")
    grid = sorted((m for m in cfg.methods if m.startswith("tailr")), key=lambda m: float(m.split(":")[1]))
    if "mle" not in cfg.methods or not grid:
        return [_not_run(cid, "not run in this preset") for cid in (*ids, *trend_ids)]
    k = cfg.perturbations
    arm, weights = _lm_verdict_arm(cfg, runs)

    def of(m: str, key: str) -> list[float]:
        if key == "over":
            return [r["overestimation"][k] for r in runs if r["method"] == m]
        return [math.log(r[key]) for r in runs if r["method"] == m]

    table = []
    for m in cfg.methods:
        ov = mean_std(of(m, "over"))
        po = mean_std([r["ppl_oracle"] for r in runs if r["method"] == m])
        pt = mean_std([r["ppl_test"] for r in runs if r["method"] == m])
        ep = [r["best_epoch"] for r in runs if r["method"] == m]
        table.append(
            f"{_label(m)}: overestimation {ov[0]:.2f}±{ov[1]:.2f} nats, PPL_oracle {po[0]:.2f}, PPL_test {pt[0]:.2f}, "
            f"best epoch {ep}"
        )
    context = (
        f"after {k} perturbations, {cfg.seeds} seeds; {'; '.join(table)}. Activity (mean TaiLr weight on the "
        f"training tokens, precondition < {LM_ACTIVE_WEIGHT}): {weights}"
    )
    out: list[Claim] = []
    if arm is None:
        out += [_not_run(cid, f"no TaiLr arm acts at this budget (every arm trains as MLE): {context}") for cid in ids]
    else:
        name = _label(arm)
        ev = f"verdict arm {name}, the smallest γ that acts; {context};"
        out += [
            better(ids[0], CLAIMS[ids[0]], ARTICLE, of("mle", "over"), of(arm, "over"), paired=True,
                   names=("MLE", name), evidence=ev),
            # lower log PPL_oracle is better: MLE minus TaiLr > 0
            better(ids[1], CLAIMS[ids[1]], ARTICLE, of("mle", "ppl_oracle"), of(arm, "ppl_oracle"), paired=True,
                   names=("MLE log PPL_oracle", f"{name} log PPL_oracle"), evidence=ev),
            # non-inferiority on coverage: -log PPL_test of TaiLr not below MLE's by more than log 1.05
            not_worse(ids[2], CLAIMS[ids[2]], ARTICLE, [-x for x in of(arm, "ppl_test")],
                      [-x for x in of("mle", "ppl_test")], margin=math.log(1.05), paired=True,
                      names=(f"-log PPL_test {name}", "-log PPL_test MLE"), evidence=ev),
        ]  # fmt: skip
    top_w = [r["mean_weight"] for r in runs if r["method"] == grid[-1]]
    if len(grid) < 2 or not top_w or max(top_w) >= LM_ACTIVE_WEIGHT:
        why = "fewer than two γ in the grid" if len(grid) < 2 else f"the largest γ ({_label(grid[-1])}) does not act"
        return out + [_not_run(cid, f"{why}: {context}") for cid in trend_ids]
    gx = ", ".join(g.split(":")[1] for g in grid)
    ev = f"slope over log10 γ, grid γ ∈ {{{gx}}} (b=0.2), one-sample t on per-seed slopes; {context};"
    over = _slopes(cfg, runs, lambda r: r["overestimation"][k])
    zero = [0.0] * len(over)
    out.append(
        better(trend_ids[0], CLAIMS[trend_ids[0]], ARTICLE, zero, over, paired=True,
               names=("0", "overestimation slope (nats/decade)"), evidence=ev)
    )  # fmt: skip
    po_s = _slopes(cfg, runs, lambda r: math.log(r["ppl_oracle"]))
    pt_s = _slopes(cfg, runs, lambda r: math.log(r["ppl_test"]))
    parts = [
        ("quality: log PPL_oracle falls", better(trend_ids[1], "", ARTICLE, zero, po_s, paired=True,
                                                  names=("0", "log PPL_oracle slope"))),
        ("coverage: log PPL_test rises", better(trend_ids[1], "", ARTICLE, pt_s, zero, paired=True,
                                                 names=("log PPL_test slope", "0"))),
    ]  # fmt: skip
    out.append(_joint(trend_ids[1], parts, prefix=ev + " "))
    return out


# ---------------------------------------------------------------------------------------------------------------
# plots


def _plot_noisy(cfg: NoisyConfig, part: dict[str, Any], out_dir: Path) -> list[str]:
    runs = part["runs"]
    plots = []
    fig, ax = new_figure(len(cfg.datasets), 3, width=5.0, height=3.2)
    for j, ds in enumerate(cfg.datasets):
        for i, (key, name) in enumerate(
            (("test_acc", "clean test accuracy"), ("ece", "test ECE"), ("memorisation", "p(noisy label)"))
        ):
            a = ax[i, j]
            for m in cfg.methods:
                levels = [r for r in cfg.noise_levels if not (key == "memorisation" and r == 0)]
                ys = [mean_std(_values(runs, key, dataset=ds, noise=r, method=m)) for r in levels]
                a.errorbar(levels, [y[0] for y in ys], yerr=[y[1] for y in ys], marker="o", label=_label(m))
            a.set(xlabel="label noise rate", ylabel=name, title=f"{ds}: {name}")
        ax[0, j].legend(fontsize=7)
    plots.append(save_figure(fig, out_dir, "tailr_noisy_summary"))

    top = max(cfg.noise_levels)
    shown = [m for m in ("ce", HEADLINE, "tailr:0.8:0.2", "ls:0.1", "focal:2") if m in cfg.methods]
    fig, ax = new_figure(len(cfg.datasets), 1)
    for j, ds in enumerate(cfg.datasets):
        a = ax[0, j]
        a.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
        for m in shown:
            d = part["reliability"].get(f"{ds}|{top}|{m}")
            if d is None:
                continue
            pts = [(c, acc) for c, acc, n in zip(d["confidence"], d["accuracy"], d["count"]) if n > 0]
            a.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{_label(m)} (ECE {d['ece']:.3f})")
        a.set(xlabel="confidence", ylabel="accuracy", title=f"{ds}, {top:.0%} noise: reliability (pooled seeds)")
        a.legend(fontsize=7)
    plots.append(save_figure(fig, out_dir, "tailr_reliability"))

    if 0.0 in cfg.noise_levels and "tailr:1:0" in cfg.methods:
        fig, ax = new_figure(len(cfg.datasets), 1)
        for j, ds in enumerate(cfg.datasets):
            for m in ("ce", HEADLINE, "tailr:1:0"):
                curves = [
                    r["val_acc_curve"] for r in runs if r["dataset"] == ds and r["noise"] == 0 and r["method"] == m
                ]
                if not curves:
                    continue
                mean = torch.tensor(curves).mean(0)
                ax[0, j].plot(range(1, len(mean) + 1), mean.tolist(), marker=".", label=_label(m))
            ax[0, j].set(xlabel="epoch", ylabel="val accuracy", title=f"{ds}, no noise: convergence")
            ax[0, j].legend(fontsize=7)
        plots.append(save_figure(fig, out_dir, "tailr_gamma1_curves"))
    return plots


def _plot_tweets(cfg: TweetsConfig, part: dict[str, Any], out_dir: Path) -> str:
    runs = part["runs"]
    fig, ax = new_figure(2, 1)
    for i, (key, name) in enumerate((("acc_high_conf", "accuracy"), ("ece_high_conf", "ECE"))):
        stats = [mean_std(_values(runs, key, method=m)) for m in cfg.methods]
        ax[0, i].bar(range(len(stats)), [s[0] for s in stats], yerr=[s[1] for s in stats])
        ax[0, i].set_xticks(range(len(stats)), [_label(m) for m in cfg.methods], rotation=20, fontsize=7)
        ax[0, i].set(ylabel=name, title=f"tweets, confidence-1 test items: {name}")
        if key.startswith("acc"):
            lo = min(s[0] for s in stats)
            ax[0, i].set_ylim(lo - 0.03, min(1.0, max(s[0] for s in stats) + 0.02))
    return save_figure(fig, out_dir, "tailr_tweets")


def _plot_lm(cfg: LMConfig, part: dict[str, Any], out_dir: Path) -> str:
    runs = part["runs"]
    fig, ax = new_figure(2, 1)
    for m in cfg.methods:
        curves = torch.tensor([r["overestimation"] for r in runs if r["method"] == m])
        ax[0, 0].plot(range(curves.shape[1]), curves.mean(0).tolist(), marker=".", label=_label(m))
    ax[0, 0].axhline(0, color="grey", lw=1)
    ax[0, 0].set(
        xlabel="number of perturbations k",
        ylabel="Δlog q − Δlog p_oracle (nats)",
        title="overestimation of perturbed sequences",
    )
    ax[0, 0].legend(fontsize=7)
    po = [mean_std([r["ppl_oracle"] for r in runs if r["method"] == m]) for m in cfg.methods]
    ax[0, 1].bar(range(len(po)), [p[0] for p in po], yerr=[p[1] for p in po])
    ax[0, 1].axhline(part["oracle_ppl"], color="grey", ls="--", label="oracle's own perplexity")
    ax[0, 1].set_xticks(range(len(po)), [_label(m) for m in cfg.methods], rotation=15, fontsize=7)
    ax[0, 1].set(ylabel="PPL_oracle of model samples", title="sample quality (lower is better)")
    ax[0, 1].legend(fontsize=7)
    return save_figure(fig, out_dir, "tailr_lm")


# ---------------------------------------------------------------------------------------------------------------


def run(cfg: Config, out_dir: Path, *, resume: bool = False) -> Result:
    """Run the enabled parts and evaluate their claims."""
    out_dir = Path(out_dir)
    for m in (*cfg.noisy.methods, *cfg.tweets.methods, *cfg.lm.methods):
        _loss_fn(m)  # reject unknown methods before any training
    metrics: dict[str, Any] = {}
    claims: list[Claim] = []
    plots: list[str] = []
    if cfg.run_noisy:
        part = _run_noisy(cfg.noisy, cfg.seed, out_dir, resume)
        metrics["noisy"] = part
        claims += _noisy_claims(cfg.noisy, part["runs"])
        plots += _plot_noisy(cfg.noisy, part, out_dir)
    if cfg.run_tweets:
        tw = _run_tweets(cfg.tweets, cfg.seed, out_dir, resume)
        metrics["tweets"] = tw
        claims.append(_tweets_claim(cfg.tweets, tw["runs"]))
        plots.append(_plot_tweets(cfg.tweets, tw, out_dir))
    if cfg.run_lm:
        lm = _run_lm(cfg.lm, cfg.seed, out_dir, resume)
        metrics["lm"] = lm
        lm["verdict_arm"] = _lm_verdict_arm(cfg.lm, lm["runs"])[0]
        claims += _lm_claims(cfg.lm, lm["runs"])
        plots.append(_plot_lm(cfg.lm, lm, out_dir))
    return Result(metrics=metrics, claims=claims, plots=plots)
