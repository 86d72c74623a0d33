"""P-tuning started from a hand-written template on a real pretrained causal LM (SmolLM2-135M), few-shot IMDB.

Article: Su Jianlin, "P-tuning：自动构建模版，释放语言模型潜能", https://kexue.fm/archives/8295 (P-tuning paper:
arXiv 2103.10385). Su's table (Chinese sentiment, ~200 labels, test accuracy): PET zero-shot 84.27, PET few-shot
(best hand-written template, LM fine-tuned) 89.18, BERT + P-tuning 89.75, GPT + P-tuning 88.51.

**Model.** The "GPT" is SmolLM2-135M-Instruct (``LlamaForCausalLM``, dequantised from GGUF Q4_1), the only
pretrained LM with its output head available offline. **No BERT side:** no pretrained masked LM with its MLM head
ships in any package reachable offline (the only encoder, all-MiniLM-L6-v2, has no ``cls.predictions`` weights; a
head fitted on top of the frozen encoder is not a cloze model), so the two BERT claims are "not testable offline"
and no budget is spent on BERT arms.

**Design.** Every P-tuning arm *starts from the hand-written template* ``t0`` = ``"Review:{text} All in all, it
was{label}"`` with verbalizer ``" terrible"`` / ``" great"``: its prompt vectors are initialised from the LM's
embeddings of the template's words (``PTuning(init_text=...)``), so at step 0 every arm *is* the template (a check
below verifies equal logits); the MLP / BiLSTM+MLP reparameterisations use the residual form ``init + MLP(...)``
with a zero-initialised last layer (:class:`~kexue.modules.PromptEncoder`). Arms:

* ``zeroshot_t0`` (the starting template) and ``zeroshot_t1`` (``"Review:{text} In short, this film is{label}"``):
  PET zero-shot, deterministic.
* ``pt_none`` / ``pt_mlp`` / ``pt_lstm``: **suffix layout** ``"Review:{text}{p6}{label}"``, the 6 vectors started
  at ``" All in all, it was"``; LM frozen. Nothing trainable precedes the review, so the frozen review's keys and
  values are computed **once per example** (a ``past_key_values`` cache) and a training step runs the LM on the 6
  prompt positions only (the label word is read at the last one). All runs of this layout train *together* in one
  batched forward per step, each with its own prompt, data order and loss (Adam is per-parameter and the losses
  are summed, so this equals separate runs; it shares the reading of the LM weights, which dominates on a CPU).
* ``pt_su`` / ``pt_su_aux`` (``full`` only): Su's **prefix + suffix layout** ``"{p2}{text}{p6}{label}"`` started
  at ``"Review:"`` / ``" All in all, it was"``; ``pt_su_aux`` adds Su's auxiliary next-token loss on the review
  (weight ``aux_weight``). The prefix changes the review's states, so each step is a full forward of the review.
* ``probe``: logistic regression on mean-pooled frozen features of ``"Review:" + review`` (from the cache pass).

Few-shot samples: a balanced pool of ``max(n_train)`` training reviews; seed ``i`` draws its ``n``-sample from the
pool (the largest size uses the whole pool, so its seeds differ in batch order only). Every review (train and
test) is cut to exactly ``text_tokens`` tokens, and only reviews at least that long are used, so no sequence is
padded and the cache is exact. The test set is ``n_test`` such reviews of the seeded test split, **shared by every
arm**; each arm's per-review correctness is stored.

**Claims, tests and thresholds (fixed before any run of this design).** Per-review comparisons: ``d_i`` = the
seed-averaged correctness of arm A on review ``i`` minus that of arm B; a paired t test over the reviews (df =
reviews - 1, two-sided, alpha 0.05; with one seed it is the t form of McNemar's paired comparison), with exact
McNemar tests per seed (:func:`~kexue.experiments.stats.mcnemar`) reported alongside. It carries the test set's
sampling error; the seeds are treated as fixed. Every claim states its MDE.

* ``ptuning_vs_handwritten_gpt``: "GPT + P-tuning beats the hand-written template": ``pt_none`` at the largest
  few-shot size vs ``zeroshot_t0``. Su's GPT P-tuning vs PET zero-shot gap is 88.51 - 84.27 = 4.24 points; his
  P-tuning vs *fine-tuned* PET gap is about 0.6 points, below any CPU-budget MDE (PET fine-tuning is not run).
  Reproduced when P-tuning is above the template beyond noise; not reproduced when below beyond noise, or when
  undecided although the MDE is below 4.24 points; inconclusive otherwise.
* ``reparam_mlp`` / ``reparam_lstm``: the paper's reparameterisation (Su relays "faster convergence and better
  results"; the authors: same result for small models): ``pt_mlp`` / ``pt_lstm`` vs ``pt_none`` at the smallest
  size, same seeds, samples and batch order. No effect size is given, so: reproduced when better beyond noise,
  not reproduced when worse beyond noise, inconclusive otherwise (with the MDE). The last-8-step training loss of
  each arm is reported as the convergence measure.
* ``prefix_matters`` (Su: "for the LM a prefix is very important; suffix-only is clearly worse"): ``pt_su`` vs
  ``pt_none``, reproduced when ``pt_su`` is better beyond noise. ``aux_lm_helps`` (Su's auxiliary LM loss
  improves results): ``pt_su_aux`` vs ``pt_su``, same rule. Both need the prefix layout and run in ``full`` only;
  elsewhere "not testable" with the cost as the reason. (In the suffix layout nothing real follows the prompts,
  so the auxiliary loss cannot reach them: it is not a test there.)
* ``ptuning_vs_handwritten_bert``, ``gpt_close_to_bert``: not testable offline (no pretrained MLM head).

Checks (deterministic, ``kind="check"``): ``init_equals_template`` (every P-tuning arm's step-0 class scores equal
the template's on the first test reviews, max difference exactly 0); ``cached_suffix_exact`` (the cached-review
scores equal the full-sequence :class:`~kexue.methods.PTuning` forward within 1e-3 on log-probabilities).

Budget: ``quick`` = 32 and 128 labels, 3 seeds, 32-token reviews, 64 Adam steps at lr 2e-3, batch 4, 400 test
reviews; ``pt_mlp`` / ``pt_lstm`` at 32 labels only. On a CPU the cost is LM positions: a training step of the
12 joint runs is 12 x 4 x 6 positions forward and backward (about 6 ms each on one core), scoring one arm on the
test set 400 x 6 positions (about 3 ms each), caching the reviews (400 + 128) x 35 positions once. Model
selection uses no validation set (the final prompt is evaluated), unlike Su's best-validation-epoch checkpoints.
``resume`` is accepted and recomputes (the joint training is one unit).
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.data import load_imdb
from kexue.methods import PTuning
from kexue.train import TensorBatches, fit, seed_all

from . import stats
from ._base import Claim, Result, check, claim, mean_std, new_figure, not_run, save_figure

NAME = "ptuning"
ORDER = 90
TITLE = "P-tuning from a hand-written template on SmolLM2-135M, few-shot IMDB"
ARTICLE = "https://kexue.fm/archives/8295"
CLAIMS = {
    "ptuning_vs_handwritten_gpt": "GPT + P-tuning (LM frozen) beats the hand-written PET template.",
    "reparam_mlp": "An MLP reparameterisation of the prompt gives better results than free prompt vectors.",
    "reparam_lstm": "The paper's BiLSTM+MLP prompt encoder gives better results than free prompt vectors.",
    "prefix_matters": "For a causal LM a prefix prompt is very important: suffix-only prompts are clearly worse.",
    "aux_lm_helps": "Su's auxiliary LM loss on the rest of the sequence improves P-tuning.",
    "ptuning_vs_handwritten_bert": "BERT + P-tuning (LM frozen) >= the best hand-written PET template.",
    "gpt_close_to_bert": "With P-tuning, GPT gets close to BERT (within 2 points) on few-shot sentiment.",
    "init_equals_template": "P-tuning started from the template's word embeddings equals the template at step 0.",
    "cached_suffix_exact": "Scoring with the review's cached keys/values equals the full-sequence forward.",
}

HEAD = "Review:"
TAIL = " All in all, it was"
TAIL_T1 = " In short, this film is"
VERBALIZER = [" terrible", " great"]
SU_GPT_GAP = 0.0424  # 88.51 - 84.27: Su's GPT + P-tuning over PET zero-shot
SU_PET_GAP = 0.0057  # 89.75 - 89.18: Su's P-tuning over the best fine-tuned PET template
NO_MLM = (
    "not testable offline: no pretrained masked LM with its MLM head ships in any package reachable offline (the "
    "only encoder, all-MiniLM-L6-v2, has no cls.predictions weights, and a head fitted on the frozen encoder is not "
    "a cloze model), so no BERT arm is run"
)


@dataclass(frozen=True)
class Config:
    """Settings of the P-tuning experiment.

    Attributes:
        seed: base seed; seed ``seed + i`` draws the few-shot sample and the batch order of run ``i``.
        seeds: runs per arm.
        models: ``"real"`` (SmolLM2-135M) or ``"tiny"`` (a random-init tiny Llama with SmolLM2's tokenizer, for the
            smoke test only).
        n_train: few-shot sizes (balanced samples of one pool of ``max(n_train)`` training reviews).
        n_test: test reviews shared by every arm.
        text_tokens: every review is cut to exactly this many tokens (shorter reviews are not used).
        steps: Adam steps of every trained arm.
        batch_size: examples per step and run.
        lr: Adam learning rate of the prompt parameters.
        suffix_arms: P-tuning arms in the cached suffix layout (``pt_none``, ``pt_mlp``, ``pt_lstm``).
        reparam_sizes: few-shot sizes at which ``pt_mlp`` / ``pt_lstm`` run (``pt_none`` runs at every size).
        prefix_arms: arms in Su's prefix + suffix layout (``pt_su``, ``pt_su_aux``): a full forward per step.
        aux_weight: weight of the auxiliary next-token loss of ``pt_su_aux``.
        eval_chunk: test reviews per cached chunk at evaluation.
    """

    seed: int = 0
    seeds: int = 3
    models: str = "real"
    n_train: tuple[int, ...] = (32, 128)
    n_test: int = 400
    text_tokens: int = 32
    steps: int = 64
    batch_size: int = 4
    lr: float = 2e-3
    suffix_arms: tuple[str, ...] = ("pt_none", "pt_mlp", "pt_lstm")
    reparam_sizes: tuple[int, ...] = (32,)
    prefix_arms: tuple[str, ...] = ()
    aux_weight: float = 1.0
    eval_chunk: int = 50


PRESETS = {
    "smoke": Config(
        models="tiny",
        seeds=2,
        n_train=(8,),
        n_test=16,
        text_tokens=12,
        steps=8,
        batch_size=4,
        lr=1e-2,
        reparam_sizes=(8,),
        prefix_arms=("pt_su", "pt_su_aux"),
        eval_chunk=8,
    ),
    "quick": Config(),
    "full": Config(
        seeds=5,
        n_train=(32, 128),
        n_test=2000,
        text_tokens=128,
        steps=100,
        batch_size=16,
        reparam_sizes=(32, 128),
        prefix_arms=("pt_su", "pt_su_aux"),
    ),
}


# --------------------------------------------------------------------------------------------------- models, data
def _tiny_model() -> tuple[nn.Module, Any]:
    from kexue._optional import optional_import

    transformers = optional_import("transformers", purpose="the P-tuning experiment")
    from kexue.data import SMOLLM2_GGUF, require, smollm2_fp32_dir

    cached = smollm2_fp32_dir()
    if (cached / "tokenizer.json").is_file():
        tok = transformers.AutoTokenizer.from_pretrained(cached)
    else:
        tok = transformers.AutoTokenizer.from_pretrained(require("smollm2"), gguf_file=SMOLLM2_GGUF)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return transformers.LlamaForCausalLM(cfg).eval(), tok


def _reviews(split: str, n: int, T: int, tok: Any, *, balanced: bool) -> tuple[list[list[int]], Tensor]:
    """``n`` reviews of at least ``T`` tokens (``" " + text``), cut to exactly ``T``; balanced on request."""
    texts, labels = load_imdb(split, limit=min(25000, 6 * n + 64))  # type: ignore[arg-type]
    ids: list[list[int]] = []
    ys: list[int] = []
    per_class = {0: 0, 1: 0}
    for t, y in zip(texts, labels.tolist()):
        if balanced and per_class[y] >= n // 2 + (n % 2) * y:
            continue
        tid = tok(" " + t, add_special_tokens=False)["input_ids"]
        if len(tid) < T:
            continue
        ids.append(list(tid[:T]))
        ys.append(y)
        per_class[y] += 1
        if len(ids) == n:
            break
    if len(ids) < n:
        raise ValueError(f"only {len(ids)} {split} reviews have >= {T} tokens; lower text_tokens or the sizes")
    return ids, torch.tensor(ys)


# --------------------------------------------------------------------------------------------------- cached review
@dataclass
class _Cache:
    """The frozen LM's keys/values of ``"Review:" + review`` for ``N`` reviews, and their mean-pooled states."""

    keys: Tensor  # (layers, N, kv_heads, T0, head_dim)
    values: Tensor
    pooled: Tensor  # (N, H)


@torch.no_grad()
def _encode_prefix(lm: Any, ids: Tensor, chunk: int = 32) -> _Cache:
    ks, vs, pooled = [], [], []
    for i in range(0, ids.shape[0], chunk):
        out = lm.base_model(input_ids=ids[i : i + chunk], use_cache=True)
        cache = out["cache"] if "cache" in out else out["past_key_values"]  # renamed in transformers 5
        ks.append(torch.stack([layer.keys for layer in cache.layers]))
        vs.append(torch.stack([layer.values for layer in cache.layers]))
        pooled.append(out.last_hidden_state.mean(1).float().cpu())
    return _Cache(torch.cat(ks, 1), torch.cat(vs, 1), torch.cat(pooled))


def _suffix_scores(lm: Any, cache: _Cache, rows: Tensor, embeds: Tensor, label_ids: Tensor) -> Tensor:
    """Class scores ``(R, C)`` = log p(label word) for suffix embeddings ``(R, S, H)`` after cached reviews ``rows``.

    Only the ``S`` suffix positions run through the LM; they attend to the cached review (no padding: every review
    has the same length ``T0``), with positions ``T0 .. T0 + S - 1``.
    """
    from transformers import DynamicCache

    c = DynamicCache(config=lm.config)
    for i in range(cache.keys.shape[0]):
        c.update(cache.keys[i, rows], cache.values[i, rows], i)
    T0, S = cache.keys.shape[3], embeds.shape[1]
    pos = (T0 + torch.arange(S, device=embeds.device)).expand(embeds.shape[0], S)
    # transformers 5 renamed past_key_values to cache; an unknown keyword would be swallowed by **kwargs
    name = "cache" if "cache" in inspect.signature(lm.base_model.forward).parameters else "past_key_values"
    h = lm.base_model(inputs_embeds=embeds, position_ids=pos, use_cache=True, **{name: c})[0][:, -1]  # (R, H)
    logp = lm.get_output_embeddings()(h).float().log_softmax(-1)
    return logp[:, label_ids[:, 0]]  # single-token label words: (R, C)


class _Suffix:
    """A template ``"Review:{text}<suffix>{label}"`` split into the cached part and the suffix (ids, prompt index)."""

    def __init__(self, pt: PTuning, T: int) -> None:
        ids, pidx, _ = pt.layout.row([0] * T, None)
        parts = pt.template.parts
        n_head = len(pt.layout.literal_ids[0]) if parts[0][0] == "literal" else 0
        cut = n_head + T
        if any(p >= 0 for p in pidx[:cut]):
            raise ValueError(f"{pt.template.pattern!r} has prompts before the text: not a suffix layout")
        self.pt = pt
        self.head = ids[:n_head]
        self.ids = torch.tensor([ids[cut:]])
        self.pidx = torch.tensor([pidx[cut:]])

    def embeds(self) -> Tensor:
        """``(1, S, H)``: the suffix's token embeddings with the prompt vectors spliced in (differentiable)."""
        dev = self.pt.label_ids.device
        return self.pt.embed(self.ids.to(dev), self.pidx.to(dev))


# --------------------------------------------------------------------------------------------------- runs
@dataclass
class _Run:
    key: str  # "n32/pt_none/s0"
    arm: str
    n: int
    seed: int
    pt: PTuning
    rows: Tensor  # (n,) pool rows of the few-shot sample
    plan: Tensor  # (steps, B) pool rows per step
    losses: list[float]
    correct: list[int]


def _sample(y_pool: Tensor, n: int, seed: int) -> Tensor:
    """Balanced ``n`` rows of the pool drawn with ``seed`` (the whole pool when ``n`` equals its size)."""
    if n == y_pool.numel():
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    idx = []
    for c in (0, 1):
        pool = (y_pool == c).nonzero().flatten()
        idx.append(pool[torch.randperm(pool.numel(), generator=g)[: n // 2 + (n % 2) * c]])
    return torch.cat(idx)


def _plan(rows: Tensor, steps: int, B: int, seed: int) -> Tensor:
    """``(steps, B)``: epochs of seeded permutations of ``rows``, cut into batches."""
    g = torch.Generator().manual_seed(10_000 + seed)
    need = steps * B
    order = torch.cat([rows[torch.randperm(rows.numel(), generator=g)] for _ in range(-(-need // rows.numel()))])
    return order[:need].reshape(steps, B)


def _make_pt(lm: Any, tok: Any, arm: str, T: int, aux_weight: float) -> PTuning:
    n_head, n_tail = (
        len(tok(HEAD, add_special_tokens=False)["input_ids"]),
        len(tok(TAIL, add_special_tokens=False)["input_ids"]),
    )
    max_length = T + n_head + n_tail + 1
    if arm in ("pt_su", "pt_su_aux"):
        return PTuning(lm, tok, f"{{p{n_head}}}{{text}}{{p{n_tail}}}{{label}}", VERBALIZER, prompt="none",
                       init_text=[HEAD, TAIL], max_length=max_length, kind="causal",
                       aux_weight=aux_weight if arm == "pt_su_aux" else 0.0)  # fmt: skip
    kind = arm.removeprefix("pt_")
    return PTuning(lm, tok, HEAD + f"{{text}}{{p{n_tail}}}{{label}}", VERBALIZER, prompt=kind,  # type: ignore[arg-type]
                   init_text=[TAIL], max_length=max_length, kind="causal")  # fmt: skip


def _train_suffix(lm: Any, runs: list[_Run], suffixes: list[_Suffix], cache: _Cache, y: Tensor, cfg: Config) -> None:
    """All suffix-layout runs in one batched forward per step: each run's loss is its own batch's mean."""
    bank = nn.ModuleList([r.pt.prompt for r in runs])
    B = cfg.batch_size
    dev = y.device

    def step(_m: nn.Module, batch: list[Tensor]) -> dict[str, Tensor]:
        s = int(batch[0][0])
        rows = torch.cat([r.plan[s] for r in runs]).to(dev)
        emb = torch.cat([sx.embeds().expand(B, -1, -1) for sx in suffixes])  # (R * B, S, H)
        scores = _suffix_scores(lm, cache, rows, emb, runs[0].pt.label_ids)
        per_run = F.cross_entropy(scores, y[rows], reduction="none").reshape(len(runs), B).mean(1)
        for r, v in zip(runs, per_run.tolist()):
            r.losses.append(v)
        return {"loss": per_run.sum()}

    fit(bank, [torch.arange(cfg.steps)], epochs=1, batch_size=1, step=step, seed=cfg.seed, name="ptuning-suffix",
        progress=False, device=dev,
        optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=cfg.lr))  # fmt: skip


def _prefix_encoding(pt: PTuning, texts: list[list[int]]) -> list[Tensor]:
    rows = [pt.layout.row(t, None) for t in texts]
    ids = torch.tensor([r[0] for r in rows]).unsqueeze(1)  # (N, 1, L): equal lengths, no padding
    pidx = torch.tensor([r[1] for r in rows]).unsqueeze(1)
    spos = torch.tensor([r[2] for r in rows]).unsqueeze(1)
    return [ids, torch.ones_like(ids), pidx, spos]


def _enc_dict(pt: PTuning, texts: list[list[int]]) -> dict[str, Tensor]:
    keys = ("input_ids", "attention_mask", "prompt_index", "slot_pos")
    return dict(zip(keys, _prefix_encoding(pt, texts)))


def _train_prefix(run: _Run, enc: list[Tensor], y: Tensor, cfg: Config) -> None:
    """Su's prefix layout: the prompt before the review changes its states, so each step is a full forward."""
    data = [t[run.plan.flatten()] for t in enc] + [y[run.plan.flatten()]]

    def step(m: nn.Module, batch: list[Tensor]) -> dict[str, Tensor]:
        out = m(*batch)
        run.losses.append(float(out["label_loss"]))
        return {"loss": out["loss"]}

    # the plan already holds the seeded order: one pass over it, in order, batch by batch
    batches = TensorBatches(data, batch_size=cfg.batch_size, seed=run.seed, shuffle=False, drop_last=True)
    fit(run.pt, batches, epochs=1, step=step, seed=run.seed, name=run.key, progress=False,
        optimizer=lambda m: torch.optim.Adam(run.pt.param_groups(lr_prompt=cfg.lr)))  # fmt: skip


def _probe(f_tr: Tensor, y: Tensor, f_te: Tensor, te_y: Tensor, seed: int) -> list[int]:
    """Logistic regression on standardised mean-pooled frozen features (100 full-batch AdamW steps)."""
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    seed_all(seed)
    clf = nn.Linear(f_tr.shape[1], 2)

    def step(m: nn.Module, b: list[Tensor]) -> dict[str, Tensor]:
        return {"loss": F.cross_entropy(m((b[0] - mu) / sd), b[1])}

    reps = 100
    fit(clf, [f_tr.repeat(reps, 1), y.cpu().repeat(reps)], epochs=1, batch_size=f_tr.shape[0], step=step, seed=seed,
        name="probe", progress=False, device="cpu",
        optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=1e-2))  # fmt: skip
    with torch.no_grad():
        return (clf((f_te - mu) / sd).argmax(-1) == te_y.cpu()).int().tolist()


def run(cfg: Config, out_dir: Path, *, resume: bool = False) -> Result:
    """Train every arm, score all of them on the shared test reviews, evaluate the claims."""
    del resume  # one joint training: always recomputed
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    c0 = time.process_time()
    if cfg.models == "tiny":
        lm, tok = _tiny_model()
    else:
        from kexue.data import load_smollm2

        lm, tok = load_smollm2()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lm = lm.to(dev).eval()
    lm.requires_grad_(False)
    T = cfg.text_tokens
    pool_ids, pool_y = _reviews("train", max(cfg.n_train), T, tok, balanced=True)
    test_ids, test_y = _reviews("test", cfg.n_test, T, tok, balanced=False)
    pool_y, test_y = pool_y.to(dev), test_y.to(dev)

    # templates: the hand-written ones and every arm's PTuning (all share the cached "Review:" + review)
    hand = {
        "zeroshot_t0": PTuning(lm, tok, HEAD + "{text}" + TAIL + "{label}", VERBALIZER, max_length=T + 16,
                               kind="causal"),
        "zeroshot_t1": PTuning(lm, tok, HEAD + "{text}" + TAIL_T1 + "{label}", VERBALIZER, max_length=T + 16,
                               kind="causal"),
    }  # fmt: skip
    hand_sfx = {k: _Suffix(pt, T) for k, pt in hand.items()}
    head = hand_sfx["zeroshot_t0"].head
    pool_cache = _encode_prefix(lm, torch.tensor([head + t for t in pool_ids], device=dev))
    t_cache = time.perf_counter()

    runs: list[_Run] = []
    for n in cfg.n_train:
        arms = [a for a in cfg.suffix_arms if a == "pt_none" or n in cfg.reparam_sizes] + list(cfg.prefix_arms)
        for arm in arms:
            for i in range(cfg.seeds):
                seed = cfg.seed + i
                seed_all(seed)  # the encoders' random layers (their output starts at the template regardless)
                pt = _make_pt(lm, tok, arm, T, cfg.aux_weight).to(dev)
                rows = _sample(pool_y.cpu(), n, seed)
                plan = _plan(rows, cfg.steps, cfg.batch_size, seed)
                runs.append(_Run(f"n{n}/{arm}/s{i}", arm, n, seed, pt, rows, plan, [], []))
    suffix_runs = [r for r in runs if r.arm in cfg.suffix_arms]
    prefix_runs = [r for r in runs if r.arm not in cfg.suffix_arms]
    suffixes = {r.key: _Suffix(r.pt, T) for r in suffix_runs}

    # check: every P-tuning arm equals the template at step 0 (first test reviews, before training)
    n_chk = min(16, cfg.n_test)
    chk_cache = _encode_prefix(lm, torch.tensor([head + t for t in test_ids[:n_chk]], device=dev))
    chk_rows = torch.arange(n_chk, device=dev)
    with torch.no_grad():
        ref = _suffix_scores(lm, chk_cache, chk_rows, hand_sfx["zeroshot_t0"].embeds().expand(n_chk, -1, -1),
                             hand["zeroshot_t0"].label_ids)  # fmt: skip
        init_diff: dict[str, float] = {}
        for r in runs:
            if r.arm in init_diff:
                continue
            if r.key in suffixes:
                got = _suffix_scores(lm, chk_cache, chk_rows, suffixes[r.key].embeds().expand(n_chk, -1, -1),
                                     r.pt.label_ids)  # fmt: skip
            else:
                got = r.pt.predict(_enc_dict(r.pt, test_ids[:n_chk]))
            init_diff[r.arm] = float((got.cpu() - ref.cpu()).abs().max())
        # check: the cached-review path equals the full-sequence forward of the same template
        full = hand["zeroshot_t0"].predict(_enc_dict(hand["zeroshot_t0"], test_ids[:n_chk]))
        cache_diff = float((full.cpu() - ref.cpu()).abs().max())

    t_train = time.perf_counter()
    if suffix_runs:
        _train_suffix(lm, suffix_runs, [suffixes[r.key] for r in suffix_runs], pool_cache, pool_y, cfg)
    if prefix_runs:
        enc = _prefix_encoding(prefix_runs[0].pt, pool_ids)
        enc = [t.to(dev) for t in enc]
        for r in prefix_runs:
            _train_prefix(r, enc, pool_y, cfg)
    train_seconds = time.perf_counter() - t_train
    drift = {}
    for r in runs:
        r.pt.eval()
        with torch.no_grad():
            p = r.pt.prompt()
            start = r.pt.lm.get_input_embeddings().weight[torch.tensor(r.pt.init_ids, device=dev)]
            drift[r.key] = float((p - start).norm() / start.norm())

    # evaluation: every arm on the same test reviews, chunk by chunk of cached reviews
    t_eval = time.perf_counter()
    hand_correct: dict[str, list[int]] = {k: [] for k in hand}
    test_pooled = []
    frozen = {r.key: suffixes[r.key].embeds().detach() for r in suffix_runs}
    with torch.no_grad():
        for a in range(0, cfg.n_test, cfg.eval_chunk):
            ids = torch.tensor([head + t for t in test_ids[a : a + cfg.eval_chunk]], device=dev)
            cache = _encode_prefix(lm, ids)
            test_pooled.append(cache.pooled)
            rows = torch.arange(ids.shape[0], device=dev)
            y = test_y[a : a + cfg.eval_chunk]
            for k, sx in hand_sfx.items():
                s = _suffix_scores(lm, cache, rows, sx.embeds().expand(len(rows), -1, -1), hand[k].label_ids)
                hand_correct[k] += (s.argmax(-1) == y).int().tolist()
            for r in suffix_runs:
                s = _suffix_scores(lm, cache, rows, frozen[r.key].expand(len(rows), -1, -1), r.pt.label_ids)
                r.correct += (s.argmax(-1) == y).int().tolist()
        if prefix_runs:
            enc_te = _enc_dict(prefix_runs[0].pt, test_ids)
            for r in prefix_runs:
                r.correct = (r.pt.predict(enc_te, batch_size=cfg.eval_chunk).argmax(-1) == test_y.cpu()).int().tolist()
    eval_seconds = time.perf_counter() - t_eval
    f_te = torch.cat(test_pooled)

    results: dict[str, Any] = {}
    for n in cfg.n_train:
        for k, c in hand_correct.items():
            results[f"imdb/gpt/n{n}/zeroshot/{k[-2:]}/s0"] = {"arm": k, "correct": c, "acc": sum(c) / len(c)}
        for i in range(cfg.seeds):
            rows = _sample(pool_y.cpu(), n, cfg.seed + i)
            c = _probe(pool_cache.pooled[rows], pool_y[rows.to(dev)], f_te, test_y, cfg.seed + i)
            results[f"imdb/gpt/n{n}/probe/s{i}"] = {"arm": "probe", "correct": c, "acc": sum(c) / len(c)}
    for r in runs:
        results[f"imdb/gpt/{r.key}"] = {
            "arm": r.arm,
            "correct": r.correct,
            "acc": sum(r.correct) / len(r.correct),
            "loss": r.losses,
            "trainable": r.pt.num_trainable(),
            "drift": drift[r.key],
        }
    metrics: dict[str, Any] = {"accuracy": _summarise(cfg, results), "runs": results}
    metrics["chance"] = {"imdb": float(max(test_y.float().mean(), 1 - test_y.float().mean()))}
    metrics["checks"] = {"init_max_abs_diff": init_diff, "cache_vs_full_max_abs_diff": cache_diff}
    metrics["seconds"] = {
        "load_and_cache": t_cache - t0,
        "train": train_seconds,
        "eval": eval_seconds,
        "total": time.perf_counter() - t0,
        "process_cpu": time.process_time() - c0,
    }
    claims = _claims(cfg, metrics)
    plots = [_plot(metrics, out_dir)]
    return Result(metrics=metrics, claims=claims, plots=plots)


# --------------------------------------------------------------------------------------------------- summary
def _summarise(cfg: Config, results: dict[str, Any]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for n in cfg.n_train:
        row: dict[str, Any] = {}
        cell = f"imdb/gpt/n{n}/"
        for k, v in results.items():
            if k.startswith(cell):
                row.setdefault(v["arm"], []).append(float(v["acc"]))
        table[f"imdb/gpt/n{n}"] = {
            a: {"mean": mean_std(x)[0], "std": mean_std(x)[1], "seeds": x} for a, x in row.items()
        }
    return table


def _vectors(results: dict[str, Any], n: int, arm: str) -> list[list[int]]:
    return [
        list(v["correct"]) for k, v in sorted(results.items()) if k.startswith(f"imdb/gpt/n{n}/") and v["arm"] == arm
    ]


def _seed_mean(vectors: list[list[int]]) -> list[float]:
    return [sum(col) / len(col) for col in zip(*vectors)]


def _fmt(xs: list[float]) -> str:
    m, s = mean_std(xs)
    return f"{m:.3f}±{s:.3f}" if len(xs) > 1 else f"{m:.3f}"


def _tail_loss(results: dict[str, Any], n: int, arm: str) -> float:
    ls = [
        v["loss"] for k, v in results.items() if k.startswith(f"imdb/gpt/n{n}/") and v["arm"] == arm and v.get("loss")
    ]
    return mean_std([sum(x[-8:]) / len(x[-8:]) for x in ls])[0]


def _per_review(
    cid: str, results: dict[str, Any], n: int, a: str, b: str, cfg: Config, *, effect: float | None, context: str
) -> Claim:
    """ "``a`` beats ``b``", decided per test review (paired t over reviews of seed-averaged correctness)."""
    va, vb = _vectors(results, n, a), _vectors(results, n, b)
    c = stats.t_test(_seed_mean(va), _seed_mean(vb), paired=True)
    holds = c.decision
    if holds is None and effect is not None and c.mde < effect:
        holds = False  # a design that could have seen the article's effect and did not
    mc = []
    for i, x in enumerate(va):
        y = vb[0] if len(vb) == 1 else vb[i]
        m = stats.mcnemar([bool(t) for t in x], [bool(t) for t in y])
        mc.append(f"s{i} {m.diff:+.3f} (p={m.p:.2g})")
    accs = {k: [sum(v) / len(v) for v in vs] for k, vs in ((a, va), (b, vb))}
    size = (
        f"; MDE {c.mde:.3f} {'<' if c.mde < effect else '>'} the article's effect {effect:.4f}"
        + ("" if c.mde < effect else ": a null result here cannot contradict it")
        if effect is not None
        else "; the article gives no effect size"
    )
    text = (
        f"{context}: {a} {_fmt(accs[a])} vs {b} {_fmt(accs[b])} on the same {len(va[0])} test reviews, {n} labels, "
        f"{len(va)} seeds; per review, seed-averaged: {c.describe()}{size}; exact McNemar per seed vs {b}: "
        + ", ".join(mc)
    )
    return claim(
        cid,
        CLAIMS[cid],
        ARTICLE,
        holds=holds,
        evidence=text,
        measured={a: mean_std(accs[a])[0], b: mean_std(accs[b])[0], "diff": c.diff, "mde": c.mde},
        seeds=len(va),
        mde=c.mde,
        test="paired t over test reviews (seed-averaged correctness), two-sided 0.05; McNemar exact per seed",
    )


def _claims(cfg: Config, metrics: dict[str, Any]) -> list[Claim]:
    results = metrics["runs"]
    big, small = max(cfg.n_train), min(cfg.n_train)
    out: list[Claim] = []
    model = "tiny random-init Llama" if cfg.models == "tiny" else "SmolLM2-135M"
    chk = metrics["checks"]
    init = chk["init_max_abs_diff"]
    out.append(
        check(
            "init_equals_template",
            CLAIMS["init_equals_template"],
            ARTICLE,
            holds=bool(init) and all(v == 0.0 for v in init.values()),
            evidence=f"{model}, first {min(16, cfg.n_test)} test reviews, step 0: max |score - template score| per "
            "arm " + ", ".join(f"{k} {v:.3g}" for k, v in init.items()) + " (required: exactly 0)",
            measured=init,
        )
    )
    out.append(
        check(
            "cached_suffix_exact",
            CLAIMS["cached_suffix_exact"],
            ARTICLE,
            holds=chk["cache_vs_full_max_abs_diff"] <= 1e-3,
            evidence=f"{model}, template t0, first {min(16, cfg.n_test)} test reviews: max |cached - full forward| "
            f"of the class log-probabilities {chk['cache_vs_full_max_abs_diff']:.3g} (tolerance 1e-3)",
            measured={"max_abs_diff": chk["cache_vs_full_max_abs_diff"]},
            test="max abs difference, tolerance 1e-3",
        )
    )
    arms_at = {n: {v["arm"] for k, v in results.items() if k.startswith(f"imdb/gpt/n{n}/")} for n in cfg.n_train}
    steps = f"{cfg.steps} Adam steps at lr {cfg.lr:g}, batch {cfg.batch_size}"
    if {"pt_none", "zeroshot_t0"} <= arms_at[big]:
        out.append(
            _per_review(
                "ptuning_vs_handwritten_gpt", results, big, "pt_none", "zeroshot_t0", cfg, effect=SU_GPT_GAP,
                context=f"{model}, suffix P-tuning started from the template, {steps} (Su's P-tuning vs fine-tuned "
                f"PET gap, {SU_PET_GAP:.4f}, is below this MDE and PET fine-tuning is not run)",
            )
        )  # fmt: skip
    else:
        out.append(not_run("ptuning_vs_handwritten_gpt", CLAIMS["ptuning_vs_handwritten_gpt"], ARTICLE,
                           reason="pt_none or the template not run in this preset"))  # fmt: skip
    for cid, arm in (("reparam_mlp", "pt_mlp"), ("reparam_lstm", "pt_lstm")):
        if {arm, "pt_none"} <= arms_at[small]:
            ctx = (f"{model}, residual {arm.removeprefix('pt_')} encoder vs free vectors, both started from the "
                   f"template, {steps}; last-8-step training loss {arm} {_tail_loss(results, small, arm):.4f} vs "
                   f"pt_none {_tail_loss(results, small, 'pt_none'):.4f}")  # fmt: skip
            out.append(_per_review(cid, results, small, arm, "pt_none", cfg, effect=None, context=ctx))
        else:
            out.append(not_run(cid, CLAIMS[cid], ARTICLE, reason=f"{arm} not run in this preset"))
    L_su = cfg.text_tokens + 9
    cost = (
        f"not run at this budget: Su's prefix layout puts trainable vectors before the review, so every step is a "
        f"full forward and backward of all {L_su} positions of each example instead of the 6 prompt positions of "
        f"the cached suffix layout (about {L_su / 6:.0f}x the CPU time per run); it runs in the full preset"
    )
    for cid, a, b in (("prefix_matters", "pt_su", "pt_none"), ("aux_lm_helps", "pt_su_aux", "pt_su")):
        if {a, b} <= arms_at[small]:
            ctx = f"{model}, {a} vs {b}, both started from the template, {steps}"
            if cid == "aux_lm_helps":
                ctx += f", auxiliary next-token loss weight {cfg.aux_weight:g} on the review"
            out.append(_per_review(cid, results, small, a, b, cfg, effect=None, context=ctx))
        else:
            out.append(not_run(cid, CLAIMS[cid], ARTICLE, reason=cost))
    out.append(not_run("ptuning_vs_handwritten_bert", CLAIMS["ptuning_vs_handwritten_bert"], ARTICLE, reason=NO_MLM))
    out.append(not_run("gpt_close_to_bert", CLAIMS["gpt_close_to_bert"], ARTICLE, reason=NO_MLM))
    return out


def _plot(metrics: dict[str, Any], out_dir: Path) -> str:
    keys = list(metrics["accuracy"])
    fig, axes = new_figure(len(keys) + 1, width=4.5)
    for ax, key in zip(axes[0], keys):
        row = metrics["accuracy"][key]
        names = list(row)
        ax.bar(
            range(len(names)),
            [row[k]["mean"] for k in names],
            yerr=[row[k]["std"] for k in names],
            color=["tab:grey" if k.startswith("zeroshot") else "tab:blue" for k in names],
        )
        for j, k in enumerate(names):
            ax.plot([j] * len(row[k]["seeds"]), row[k]["seeds"], "k.", ms=3)
        ax.axhline(metrics["chance"]["imdb"], color="red", ls=":", lw=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set(ylim=(0.3, 1.0), ylabel="test accuracy", title=key)
    ax = axes[0][-1]
    for k, v in metrics["runs"].items():
        if v.get("loss"):
            ax.plot(v["loss"], lw=0.8, label=k.removeprefix("imdb/gpt/") if k.endswith("/s0") else None)
    ax.set(xlabel="step", ylabel="training loss (label CE)", title="training loss per run")
    ax.legend(fontsize=6)
    return save_figure(fig, out_dir, "ptuning_accuracy")
