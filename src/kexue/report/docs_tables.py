"""The claims tables of the README and the docs pages, generated from the committed results.

Numbers in the README and the docs are never typed by hand: they sit between marker comments and are rewritten
from the run folders under ``results/<preset>/<experiment>/`` (the ``claims.json`` and ``metrics.json`` each run
wrote)::

    <!-- BEGIN GENERATED claims -->            README: the summary counts and every experiment's claims
    <!-- BEGIN GENERATED claims:<experiment> -->   a docs page: that experiment's claims, then its measured
                                                   numbers (tables built from the run's ``metrics.json``)

Usage (from the repository root)::

    python -m kexue.report.docs_tables            # rewrite the marked sections
    python -m kexue.report.docs_tables --check    # exit 1 and name the files whose sections are stale

``make reproduce`` reruns every experiment's quick preset into ``results/quick`` and then rewrites the tables; a test
fails when a committed table and the committed results disagree.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._sections import run_cli, write_sections

__all__ = ["DOCS_PAGES", "METRIC_TABLES", "load_results", "render_experiment", "render_summary", "update"]

# Experiment -> the docs page that shows its claims (mnist_baseline appears in the README only).
DOCS_PAGES: dict[str, str] = {
    "regularizers": "docs/regularizers.md",
    "simsiam": "docs/simsiam.md",
    "ptuning": "docs/ptuning.md",
    "flatnce": "docs/flatnce.md",
    "multitask": "docs/multitask.md",
    "tailr": "docs/tailr.md",
    "ign": "docs/ign.md",
    "topk": "docs/topk.md",
}

_EMPIRICAL = ("reproduced", "not reproduced", "inconclusive", "not testable")


def load_results(results: str | Path) -> list[dict[str, Any]]:
    """The runs under ``results`` (one sub-folder per experiment with a ``claims.json``), in report order.

    Each run is the parsed ``claims.json`` plus ``config`` (from ``config.json`` when present) and ``metrics``
    (from ``metrics.json`` when present).
    """
    root = Path(results)
    runs: list[dict[str, Any]] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        cj = d / "claims.json"
        if not cj.is_file():
            continue
        run = json.loads(cj.read_text(encoding="utf-8"))
        run.setdefault("experiment", d.name)
        cfg = d / "config.json"
        run["config"] = json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() else {}
        met = d / "metrics.json"
        run["metrics"] = json.loads(met.read_text(encoding="utf-8")) if met.is_file() else {}
        runs.append(run)
    order = _order()
    runs.sort(key=lambda r: (order.get(r["experiment"], 100), r["experiment"]))
    return runs


def _order() -> dict[str, int]:
    try:
        from kexue import experiments

        return {name: i for i, name in enumerate(experiments.available())}
    except Exception:  # the tables must render even where an experiment module fails to import
        return {}


def _cell(text: Any) -> str:
    # GitHub-flavoured Markdown reads an escaped pipe as a literal one inside a table cell (|p - q| stays legible).
    return str(text).replace("|", "\\|").replace("\n", " ")


def _mde(c: dict[str, Any]) -> str:
    v = c.get("mde")
    if v is None or c.get("kind", "claim") == "check":
        return "—"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _cell(v)
    return "∞" if math.isinf(f) else f"{f:.3g}"


def _counts(claims: Sequence[dict[str, Any]]) -> tuple[int, int, dict[str, int]]:
    checks = [c for c in claims if c.get("kind", "claim") == "check"]
    passed = sum(1 for c in checks if c["verdict"] == "reproduced")
    emp: dict[str, int] = dict.fromkeys(_EMPIRICAL, 0)
    for c in claims:
        if c.get("kind", "claim") != "check":
            emp[c["verdict"]] = emp.get(c["verdict"], 0) + 1
    return passed, len(checks), emp


def _claim_rows(claims: Sequence[dict[str, Any]], *, experiment: str | None) -> list[str]:
    head = "| experiment | claim | verdict | seeds | test | MDE | evidence |" if experiment else ""
    lines = [head or "| claim | verdict | seeds | test | MDE | evidence |"]
    lines.append("|---" * (7 if experiment else 6) + "|")
    for c in claims:
        seeds = c.get("seeds")
        cells = [
            f"`{c['id']}`",
            f"**{c['verdict']}**",
            "—" if seeds is None else str(seeds),
            _cell(c.get("test") or "—"),
            _mde(c),
            _cell(c.get("evidence", "")),
        ]
        if experiment:
            cells.insert(0, experiment)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _split(claims: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    emp = [c for c in claims if c.get("kind", "claim") != "check"]
    checks = [c for c in claims if c.get("kind", "claim") == "check"]
    return emp, checks


def _preset(run: dict[str, Any]) -> str:
    return str(run.get("preset") or run.get("config", {}).get("preset") or "quick")


def render_experiment(run: dict[str, Any]) -> str:
    """One experiment's section of its docs page: empirical claims, the checks, then its measured numbers.

    The measured numbers are tables built from the run's ``metrics.json`` for the experiments listed in
    :data:`METRIC_TABLES` (none for the others).
    """
    emp, checks = _split(run.get("claims", []))
    passed, n_checks, counts = _counts(run.get("claims", []))
    measured = _metric_lines(run)
    sources = "claims.json`" + (" and `metrics.json`" if measured else "")
    out = [
        f"Generated from `results/{_preset(run)}/{run['experiment']}/{sources} by "
        "`python -m kexue.report.docs_tables`; do not edit by hand.",
        "",
        "Empirical claims: "
        + (", ".join(f"{n} {v}" for v, n in counts.items() if n) or "none")
        + (f". Checks: {passed} of {n_checks} pass." if n_checks else ". Checks: none."),
        "",
    ]
    if emp:
        out += ["**Empirical claims** (decided by a statistical test over seeds; MDE = minimum detectable effect)", ""]
        out += [*_claim_rows(emp, experiment=None), ""]
    if checks:
        out += ["**Checks** (deterministic properties verified numerically)", ""]
        out += [*_claim_rows(checks, experiment=None), ""]
    out += measured
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Measured numbers per experiment, from metrics.json. Each builder returns Markdown lines (a bold caption, a blank
# line, a table, a blank line per table) and skips a table whose data the run did not record, so a run of another
# preset or an older layout renders what it has instead of failing.


def _mean_sd(values: Sequence[Any], digits: int) -> str:
    vals = [float(v) for v in values]
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.fmean(vals):.{digits}f} ± {sd:.{digits}f}"


def _per_seed(values: Sequence[Any], digits: int) -> str:
    return ", ".join(f"{float(v):.{digits}f}" for v in values)


def _table(caption: str, head: Sequence[str], align: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A captioned Markdown table; ``align`` holds ``"l"`` or ``"r"`` per column."""
    if not rows:
        return []
    lines = [f"**{caption}**", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _multitask_metrics(run: dict[str, Any]) -> list[str]:
    metrics = run.get("metrics", {})
    table = metrics.get("table")
    if not isinstance(table, dict):
        return []
    keys = ("digit_a", "digit_b", "ink", "worst", "mean")
    rows = []
    for name, row in table.items():
        if not all(k in row and f"{k}_std" in row for k in keys):
            continue
        strategy, _, scale = str(name).rpartition("@")
        n = len(metrics.get("runs", {}).get(name, []))
        rows.append([f"`{strategy}`", scale, str(n or "—"), *(f"{row[k]:.3f} ± {row[f'{k}_std']:.3f}" for k in keys)])
    return _table(
        "Test scores per strategy and ink-loss scale (0 = chance or predicting the mean, 1 = perfect; "
        "mean ± sample std over seeds)",
        ("strategy", "ink-loss scale", "seeds", "digit A", "digit B", "ink R²", "worst task", "mean task"),
        ("l", "r", "r", "r", "r", "r", "r", "r"),
        rows,
    )


def _topk_metrics(run: dict[str, Any]) -> list[str]:
    metrics = run.get("metrics", {})
    verdicts = {c["id"]: c["verdict"] for c in run.get("claims", [])}
    out: list[str] = []
    props = metrics.get("property_table")
    if isinstance(props, dict) and props:
        names = list(next(iter(props.values())))
        rows = []
        for method, cells in props.items():
            row = [f"`{method}`"]
            for prop in names:
                text = "yes" if cells.get(prop) else "no"
                verdict = verdicts.get(f"{method}_{prop}", "reproduced")
                row.append(text if verdict == "reproduced" else f"{text} (**{verdict}**)")
            rows.append(row)
        out += _table(
            "Measured properties (each cell is the check `<construction>_<property>`; a cell that contradicts "
            "its expectation carries the verdict)",
            ("construction", *names),
            ("l", *("l" for _ in names)),
            rows,
        )
    moe = metrics.get("moe")
    if isinstance(moe, dict) and moe:
        hard = moe.get("hard_topk") or []
        rows = []
        for router, seeds in moe.items():
            if not seeds or "test_acc_sparse" not in seeds[0]:
                continue
            acc = [s["test_acc_sparse"] for s in seeds]
            diff = [a - h["test_acc_sparse"] for a, h in zip(acc, hard)] if len(hard) == len(acc) else []
            rows.append(
                [
                    f"`{router}`",
                    str(len(seeds)),
                    _mean_sd(acc, 4),
                    _mean_sd(diff, 4) if diff and router != "hard_topk" else "—",
                    _mean_sd([s.get("test_acc_train_forward", s.get("test_acc", math.nan)) for s in seeds], 4),
                    _mean_sd([s["load_cv"] for s in seeds], 2),
                    f"{max(s.get('off_topk_mass', 0.0) for s in seeds):.3f}",
                    _mean_sd([s["purity"] for s in seeds], 2) if "purity" in seeds[0] else "—",
                ]
            )
        out += _table(
            "Top-2 mixture-of-experts routers (sparse top-2 test accuracy; its paired difference to hard top-k per "
            "seed; accuracy of the training-time forward, dense for the annealed routers; load coefficient of "
            "variation, 0 = balanced; largest gate mass outside the top 2; routing purity by orientation; "
            "mean ± sample std over seeds)",
            (
                "router",
                "seeds",
                "sparse top-2 acc",
                "minus hard top-k",
                "training-forward acc",
                "load CV",
                "mass outside top 2",
                "purity",
            ),
            ("l", "r", "r", "r", "r", "r", "r", "r"),
            rows,
        )
    return out


def _regularizers_metrics(run: dict[str, Any]) -> list[str]:
    metrics = run.get("metrics", {})
    out: list[str] = []
    mnist = metrics.get("mnist", {}).get("test_accuracy")
    if isinstance(mnist, dict) and mnist:
        rows = [[f"`{k}`", _mean_sd(v, 4), _per_seed(v, 4)] for k, v in mnist.items() if v]
        out += _table(
            "Semi-supervised MNIST, 100 labels: test accuracy (mean ± sample std over seeds)",
            ("variant", "test accuracy", "per seed"),
            ("l", "r", "r"),
            rows,
        )
    text = metrics.get("text", {})
    acc = text.get("test_accuracy")
    if isinstance(acc, dict) and acc:
        activity = text.get("activity", {})
        rows = [
            [
                f"`{k}`",
                _mean_sd(v, 4),
                _per_seed(v, 4),
                ", ".join(f"{float(a):.2g}" for a in activity.get(k, [])) or "—",
            ]
            for k, v in acc.items()
            if v
        ]
        out += _table(
            "IMDB, 200 labels: test accuracy (mean ± sample std over seeds) and activity (mean log change of the "
            "training loss caused by the regulariser, per seed)",
            ("variant", "test accuracy", "per seed", "activity"),
            ("l", "r", "r", "r"),
            rows,
        )
    return out


def _finite(values: Sequence[Any]) -> list[float]:
    """The finite numbers among ``values`` (metrics.json stores a missing measurement as NaN or ``"nan"``)."""
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def _ms(values: Sequence[Any], digits: int) -> str:
    """Mean ± sample std of the finite values, or ``—`` when there are none."""
    vals = _finite(values)
    return _mean_sd(vals, digits) if vals else "—"


def _simsiam_metrics(run: dict[str, Any]) -> list[str]:
    metrics = run.get("metrics", {})
    runs = metrics.get("runs")
    if not isinstance(runs, dict) or not runs:
        return []
    out: list[str] = []
    rows = []
    for label, key in (("raw pixels", "pixels"), ("random-init encoder", "random_init")):
        ref = metrics.get(key, {})
        if ref.get("probe"):
            rows.append([label, str(len(ref["probe"])), _ms(ref["probe"], 3), _ms(ref.get("knn", []), 3)] + ["—"] * 4)
    for name, r in runs.items():
        if not r.get("probe"):
            continue
        rows.append(
            [
                f"`{name}`",
                str(len(r["probe"])),
                _ms(r["probe"], 3),
                _ms(r.get("knn", []), 3),
                _ms(r.get("z_probe", []), 3),
                _ms(r.get("erank", []), 2),
                _ms(r.get("std", []), 3),
                _ms(r.get("final_loss", []), 3),
            ]
        )
    d = metrics.get("d")
    out += _table(
        "Fashion-MNIST, per arm: accuracy of the backbone features (linear probe, kNN) on the test set, the probe "
        f"of the projection z and its effective rank{f' (of d = {d})' if d else ''}, the paper's train-mode std "
        "of z/‖z‖ (pinned near 1/√d by the output BatchNorm, decides nothing) and the final training loss (mean ± "
        "sample std over seeds)",
        ("arm", "seeds", "linear probe", "kNN", "probe of z", "effective rank of z", "std of z/‖z‖", "final loss"),
        ("l", "r", "r", "r", "r", "r", "r", "r"),
        rows,
    )
    rows = []
    for name, r in runs.items():
        whole = r.get("pred_over_enc_rel_update") or [
            p / e for p, e in zip(r.get("pred_rel_update_mean", []), r.get("enc_rel_update_mean", [])) if e
        ]
        if whole:
            rows.append(
                [
                    f"`{name}`",
                    str(len(whole)),
                    _ms(whole, 2),
                    _ms(r.get("pred_over_enc_first_10pct", []), 2),
                    _ms(r.get("pred_over_enc_last_10pct", []), 2),
                ]
            )
    out += _table(
        "Relative update per step ‖Δ‖/‖param‖, predictor over encoder (above 1 = the predictor moves faster; mean "
        "± sample std over seeds)",
        ("variant", "seeds", "whole run", "first 10 % of steps", "last 10 % of steps"),
        ("l", "r", "r", "r", "r"),
        rows,
    )
    er = runs.get("baseline", {}).get("expansion_ratio")
    if isinstance(er, dict) and er:
        out += _table(
            "First-order expansion ratio E‖F(T₂x) − F(T₁x)‖² / E‖F(Tx) − F(x̄)‖² of the trained baseline encoder per "
            "augmentation strength (1 = the training augmentation; a linear F gives 2 / (1 + 1/M); mean ± sample std "
            "over seeds)",
            ("strength", "seeds", "ratio"),
            ("r", "r", "r"),
            [[s, str(len(v)), _ms(v, 3)] for s, v in er.items()],
        )
    rows = [
        [
            f"`{name}`",
            str(len(r["probe"])),
            _ms(r["probe"], 3),
            _ms(r["probe_xbar"], 3),
            _ms(r.get("knn", []), 3),
            _ms(r.get("knn_xbar", []), 3),
        ]
        for name, r in runs.items()
        if r.get("probe") and r.get("probe_xbar")
    ]
    out += _table(
        "Mean-view variants: features of the clean image F(x) against those of the mean of augmented views "
        "F(x̄) (mean ± sample std over seeds)",
        ("variant", "seeds", "probe F(x)", "probe F(x̄)", "kNN F(x)", "kNN F(x̄)"),
        ("l", "r", "r", "r", "r", "r"),
        rows,
    )
    return out


def _flatnce_metrics(run: dict[str, Any]) -> list[str]:
    metrics = run.get("metrics", {})
    out: list[str] = []
    table = metrics.get("float_error_table")
    if isinstance(table, list) and table:
        cells: dict[tuple[Any, Any], dict[str, dict[str, Any]]] = {}
        for row in table:
            cells.setdefault((row["tau"], row["K"]), {})[row["loss"]] = row
        rows = []
        for (tau, k), by_loss in cells.items():
            plain, stable, flat = (by_loss.get(n, {}) for n in ("infonce", "stable", "flatnce"))
            if not (plain and stable and flat):
                continue
            rows.append(
                [
                    f"{tau:g}",
                    str(k),
                    f"{plain['xi_median']:.2g}",
                    f"{plain['rel_err_median']:.2g}",
                    f"{plain['zero_loss_fraction']:.0%}",
                    f"{plain['cos_median']:.4f} / {plain['cos_min']:.4f}",
                    f"{stable['rel_err_max']:.2g}",
                    f"{stable['cos_min']:.6f}",
                    f"{flat['cos_min']:.6f}",
                ]
            )
        out += _table(
            "Float error on synthetic draws (float32 against float64; stable float64 InfoNCE is the reference of "
            "both InfoNCE forms): median xi of the cell, plain InfoNCE's median relative loss error, its share of "
            "draws whose loss is exactly 0 and its anchor-gradient cosine (median / worst draw), the stable "
            "control's worst relative loss error and worst cosine, FlatNCE's worst cosine",
            (
                "tau",
                "K",
                "median xi",
                "InfoNCE loss error",
                "InfoNCE loss = 0",
                "InfoNCE grad cosine",
                "stable loss error",
                "stable grad cosine",
                "FlatNCE grad cosine",
            ),
            ("r", "r", "r", "r", "r", "r", "r", "r", "r"),
            rows,
        )
    runs = metrics.get("runs")
    if isinstance(runs, list) and runs:
        groups: dict[tuple[Any, Any, Any], list[dict[str, Any]]] = {}
        for r in runs:
            groups.setdefault((r.get("optimizer", "adam"), r["batch_size"], r["loss"]), []).append(r)
        order = sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], _LOSS_ORDER.get(kv[0][2], 9)))
        rows = [
            [
                optim,
                str(batch),
                f"`{loss}`",
                str(len(rs)),
                str(rs[0].get("steps", "—")),
                _ms([r["linear_probe"] for r in rs], 4),
                _ms([r["knn"] for r in rs], 4),
                f"{statistics.fmean(_finite([r.get('saturation') for r in rs]) or [math.nan]):.2%}",
                _ms([r.get("log_xi_mean_last") for r in rs], 2),
            ]
            for (optim, batch, loss), rs in order
        ]
        untrained = metrics.get("untrained_encoder", {})
        if "linear_probe" in untrained:
            rows.append(
                ["—", "—", "untrained encoder", "—", "—", f"{untrained['linear_probe']:.4f}", f"{untrained['knn']:.4f}"]
                + ["—"] * 2
            )
        out += _table(
            "SimCLR on Fashion-MNIST per optimizer, batch size and loss: optimizer steps, frozen-feature test "
            "accuracy (mean ± sample std over seeds), saturation (share of anchors with xi < 1e-6 over all steps; "
            "float32 InfoNCE is corrupted only there) and the mean log xi of the last epoch",
            ("optimizer", "batch", "loss", "seeds", "steps", "linear probe", "kNN", "saturation", "final mean log xi"),
            ("l", "r", "l", "r", "r", "r", "r", "r", "r"),
            rows,
        )
        curves = [
            (optim, batch, loss, [statistics.fmean(col) for col in zip(*(r["saturation_per_epoch"] for r in rs))])
            for (optim, batch, loss), rs in order
            if all(isinstance(r.get("saturation_per_epoch"), list) for r in rs)
        ]
        if curves:
            n_ep = max(len(c) for *_, c in curves)
            out += _table(
                "Saturation per epoch: share of anchors with xi < 1e-6 in each epoch (mean over seeds)",
                ("optimizer", "batch", "loss", *(f"epoch {i + 1}" for i in range(n_ep))),
                ("l", "r", "l", *("r",) * n_ep),
                [[o, str(b), f"`{k}`", *(f"{v:.2%}" for v in c)] for o, b, k, c in curves],
            )
    return out


_LOSS_ORDER = {"infonce": 0, "stable": 1, "flatnce": 2}


def _ptuning_metrics(run: dict[str, Any]) -> list[str]:
    metrics = run.get("metrics", {})
    acc = metrics.get("accuracy")
    if not isinstance(acc, dict):
        return []
    per_run = metrics.get("runs", {})
    chance = metrics.get("chance", {})
    out: list[str] = []
    for cell, arms in acc.items():
        dataset, model, size = [*str(cell).split("/"), "", "", ""][:3]
        rows = []
        for arm, a in arms.items():
            seeds = a.get("seeds") or []
            if not seeds:
                continue
            variant = arm.split("_t")[0] if arm.startswith("zeroshot_t") else arm
            trainable = {r.get("trainable") for k, r in per_run.items() if k.startswith(f"{cell}/{variant}/s")}
            trainable.discard(None)
            rows.append(
                [
                    f"`{arm}`",
                    str(len(seeds)),
                    f"{a['mean']:.3f} ± {a['std']:.3f}" if len(seeds) > 1 else f"{a['mean']:.3f}",
                    _per_seed(seeds, 2),
                    f"{trainable.pop():,}" if len(trainable) == 1 else "—",
                ]
            )
        rate = chance.get(dataset)
        out += _table(
            f"{dataset}, {model.upper()} side, {size.lstrip('n')} labels: test accuracy (mean ± sample std over "
            "seeds; zero-shot arms are deterministic)"
            + (f"; majority-class rate of the test labels {float(rate):.2f}" if rate is not None else ""),
            ("arm", "seeds", "accuracy", "per seed", "trained parameters"),
            ("l", "r", "r", "r", "r"),
            rows,
        )
    return out


def _tailr_metrics(run: dict[str, Any]) -> list[str]:
    metrics = run.get("metrics", {})
    out: list[str] = []
    noisy = metrics.get("noisy", {}).get("runs")
    if isinstance(noisy, list) and noisy:
        groups: dict[tuple[Any, Any, Any], list[dict[str, Any]]] = {}
        for r in noisy:
            groups.setdefault((r["dataset"], r["noise"], r["method"]), []).append(r)
        for dataset in dict.fromkeys(k[0] for k in groups):
            rows = [
                [
                    f"{noise:.0%}",
                    f"`{method}`",
                    str(len(rs)),
                    _ms([r["test_acc"] for r in rs], 3),
                    _ms([r["ece"] for r in rs], 3),
                    _ms([r.get("overconfidence") for r in rs], 3),
                    _ms([r.get("memorisation") for r in rs], 3),
                    _ms([r.get("val_acc_epoch1") for r in rs], 3),
                ]
                for (ds, noise, method), rs in groups.items()
                if ds == dataset
            ]
            out += _table(
                f"{dataset}, symmetric label noise: clean test accuracy, test ECE, confidence − accuracy on the test "
                "set (above 0 = over-confident), memorisation (mean probability of the noisy label on the flipped "
                "training examples) and validation accuracy after the first epoch (mean ± sample std over seeds; "
                "`tailr:<γ>:<b>`, `ls:<ε>`, `focal:<γ_f>`)",
                ("noise", "method", "seeds", "test acc", "ECE", "confidence − acc", "memorisation", "val acc, epoch 1"),
                ("r", "l", "r", "r", "r", "r", "r", "r"),
                rows,
            )
    tweets = metrics.get("tweets", {})
    if isinstance(tweets.get("runs"), list) and tweets["runs"]:
        by_method: dict[str, list[dict[str, Any]]] = {}
        for r in tweets["runs"]:
            by_method.setdefault(r["method"], []).append(r)
        rows = [
            [
                f"`{method}`",
                str(len(rs)),
                _ms([r["acc_high_conf"] for r in rs], 4),
                _ms([r["ece_high_conf"] for r in rs], 4),
                _ms([r["acc_all"] for r in rs], 4),
                _ms([r["ece_all"] for r in rs], 4),
            ]
            for method, rs in by_method.items()
        ]
        sizes = ", ".join(
            f"{label} {tweets[key]:,}"
            for key, label in (
                ("n_train", "training tweets"),
                ("n_test", "test tweets"),
                ("n_test_high_conf", "of them unanimous"),
            )
            if isinstance(tweets.get(key), int)
        )
        out += _table(
            "Tweets (real annotator noise): accuracy and ECE on the unanimous (confidence 1) test tweets and on all "
            f"test tweets (mean ± sample std over seeds{'; ' + sizes if sizes else ''})",
            ("method", "seeds", "acc, unanimous", "ECE, unanimous", "acc, all", "ECE, all"),
            ("l", "r", "r", "r", "r", "r"),
            rows,
        )
    lm = metrics.get("lm", {})
    if isinstance(lm.get("runs"), list) and lm["runs"]:
        by_method = {}
        for r in lm["runs"]:
            by_method.setdefault(r["method"], []).append(r)
        rows = []
        for method, rs in by_method.items():
            over = [r["overestimation"][-1] for r in rs if r.get("overestimation")]
            arm = f"`{method}`" + (" (verdict arm)" if method == lm.get("verdict_arm") else "")
            rows.append(
                [
                    arm,
                    str(len(rs)),
                    _ms([r.get("mean_weight") for r in rs], 4),
                    _ms([r["ppl_oracle"] for r in rs], 1),
                    _ms([r["ppl_test"] for r in rs], 2),
                    _ms(over, 2),
                ]
            )
        k = max((len(r.get("overestimation") or []) for r in lm["runs"]), default=1) - 1
        oracle = lm.get("oracle_ppl")
        out += _table(
            "Synthetic-oracle language model: mean TaiLr weight on the training tokens (— for MLE), oracle "
            "perplexity of model samples (PPL_oracle, lower = better samples), model perplexity of held-out oracle "
            f"text (PPL_test, lower = better coverage) and overestimation after {k} perturbations in nats (mean ± "
            "sample std over seeds"
            + (f"; the oracle's own perplexity is {float(oracle):.2f}" if oracle is not None else "")
            + ")",
            ("method", "seeds", "mean weight", "PPL_oracle", "PPL_test", f"overestimation, k = {k}"),
            ("l", "r", "r", "r", "r", "r"),
            rows,
        )
    return out


def _ign_metrics(run: dict[str, Any]) -> list[str]:
    metrics = run.get("metrics", {})
    out: list[str] = []
    ring = metrics.get("ring")
    if isinstance(ring, dict) and ring:
        rows = []
        for name, r in ring.items():
            fin, ini = r.get("final", {}), r.get("init", {})
            modes = fin.get("modes") or []
            covers = sum(1 for c in fin.get("collapsed", []) if not c)
            rows.append(
                [
                    f"`{name}`",
                    str(r.get("parameters", "—")),
                    str(len(modes)),
                    f"{covers}/{len(modes)}",
                    _ms(modes, 2),
                    _ms(fin.get("hq") or [], 3),
                    _ms(ini.get("modes") or [], 2),
                    _ms(ini.get("hq") or [], 3),
                    _ms(r.get("move_first") or [], 3),
                    _ms(r.get("move_second") or [], 4),
                ]
            )
        out += _table(
            "Ring of 8 Gaussians, every arm over the same seeds (mean ± sample std over seeds): parameters per "
            "model (WGAN-GP: generator + critic), seeds, seeds covering the ring (at least 6 of 8 modes; the rest "
            "collapsed), modes covered and high-quality share (within 3σ of a mode) at the end and at "
            "initialisation (the arm's activity), ‖f(z) − z‖ (WGAN-GP: ‖G(z) − z‖) and ‖f(f(z)) − f(z)‖",
            (
                "arm",
                "parameters",
                "seeds",
                "covers ring",
                "modes",
                "high-quality share",
                "modes at init",
                "share at init",
                "‖f(z) − z‖",
                "‖f(f(z)) − f(z)‖",
            ),
            ("l", "r", "r", "r", "r", "r", "r", "r", "r", "r"),
            rows,
        )
    anchors = metrics.get("anchors", {})
    labels = (
        ("classifier_test_accuracy", "test accuracy of the judging classifier", 4),
        ("real_confidence", "its mean confidence on real test digits", 3),
        ("fd_real_train_vs_test", "FD, real training vs real test digits (the floor)", 2),
        ("fd_noise", "FD, the noise z itself vs real test digits", 2),
        ("noise_confidence", "classifier confidence on the noise z", 3),
    )
    rows = [[text, f"{float(anchors[key]):.{d}f}"] for key, text, d in labels if key in anchors]
    out += _table(
        "MNIST anchors measured in the same run (FD = Fréchet distance of classifier features)",
        ("anchor", "value"),
        ("l", "r"),
        rows,
    )
    mnist = metrics.get("mnist")
    if isinstance(mnist, list) and mnist:
        one = [r["one_step"] for r in mnist]
        rows = [
            [
                "`ign`",
                str(len(one)),
                _ms([o["fd"] for o in one], 1),
                _ms([o["confidence"] for o in one], 3),
                _ms([o.get("diversity") for o in one], 3),
                _ms([max(o["class_share"]) for o in one], 3),
                _ms([o["class_entropy"] for o in one], 2),
                _ms([r.get("move_first") for r in mnist], 4),
                _ms([r.get("move_second") for r in mnist], 4),
                _ms([r.get("test_rec_l1") for r in mnist], 4),
            ]
        ]
        out += _table(
            "14×14 MNIST one-step samples f(z), eval mode: FD, classifier confidence, diversity (pairwise distance "
            "relative to real digits), share of the most frequent class, class entropy in nats (uniform over ten "
            "classes = 2.30), ‖f(z) − z‖, ‖f(f(z)) − f(z)‖ and the test reconstruction error ‖f(x) − x‖ (mean "
            "absolute pixel difference on [-1, 1]; mean ± sample std over seeds)",
            (
                "model",
                "seeds",
                "FD",
                "confidence",
                "diversity",
                "top class share",
                "class entropy",
                "‖f(z) − z‖",
                "‖f(f(z)) − f(z)‖",
                "‖f(x) − x‖",
            ),
            ("l", "r", "r", "r", "r", "r", "r", "r", "r", "r"),
            rows,
        )
    return out


# Experiment -> the builder of its measured-numbers tables on its docs page.
METRIC_TABLES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "regularizers": _regularizers_metrics,
    "simsiam": _simsiam_metrics,
    "ptuning": _ptuning_metrics,
    "flatnce": _flatnce_metrics,
    "multitask": _multitask_metrics,
    "tailr": _tailr_metrics,
    "ign": _ign_metrics,
    "topk": _topk_metrics,
}


def _metric_lines(run: dict[str, Any]) -> list[str]:
    build = METRIC_TABLES.get(run["experiment"])
    return build(run) if build else []


def render_summary(runs: Sequence[dict[str, Any]]) -> str:
    """The README's section: counts per experiment (checks and claims apart), then every claim."""
    all_claims = [c for r in runs for c in r.get("claims", [])]
    passed, n_checks, counts = _counts(all_claims)
    presets = sorted({_preset(r) for r in runs}) or ["quick"]
    out = [
        f"Generated from `results/{'|'.join(presets)}/*/claims.json` by `python -m kexue.report.docs_tables`; "
        "do not edit by hand.",
        "",
        f"**Empirical claims** (about training, decided by a statistical test): {counts['reproduced']} reproduced, "
        f"{counts['not reproduced']} not reproduced, {counts['inconclusive']} inconclusive, "
        f"{counts['not testable']} not testable. **Checks** (deterministic properties verified numerically): "
        f"{passed} of {n_checks} pass.",
        "",
        "| experiment | claims reproduced | not reproduced | inconclusive | not testable | checks passed |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        p, n, c = _counts(r.get("claims", []))
        out.append(
            f"| {r['experiment']} | {c['reproduced']} | {c['not reproduced']} | {c['inconclusive']} | "
            f"{c['not testable']} | {p} / {n} |"
        )
    emp = [(r["experiment"], c) for r in runs for c in _split(r.get("claims", []))[0]]
    checks = [(r["experiment"], c) for r in runs for c in _split(r.get("claims", []))[1]]
    for title, rows in (("Empirical claims", emp), ("Checks", checks)):
        if not rows:
            continue
        out += ["", f"**{title}**", "", "| experiment | claim | verdict | seeds | test | MDE | evidence |"]
        out.append("|---|---|---|---|---|---|---|")
        for exp, c in rows:
            out.append(_claim_rows([c], experiment=exp)[2])
    return "\n".join(out).rstrip() + "\n"


def update(repo: str | Path = ".", results: str | Path = "results/quick", *, check: bool = False) -> list[Path]:
    """Rewrite (or with ``check=True`` only compare) the generated sections; returns the stale files.

    Raises:
        FileNotFoundError: ``results`` holds no run folder.
        ValueError: a file lacks its marker section.
    """
    repo = Path(repo)
    runs = load_results(repo / results)
    if not runs:
        raise FileNotFoundError(f"no run folders with claims.json under {repo / results}")
    targets: dict[Path, list[tuple[str, str]]] = {repo / "README.md": [("claims", render_summary(runs))]}
    for run in runs:
        page = DOCS_PAGES.get(run["experiment"])
        if page:
            targets.setdefault(repo / page, []).append((f"claims:{run['experiment']}", render_experiment(run)))
    return write_sections(targets, check=check)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(
        argv,
        prog="python -m kexue.report.docs_tables",
        description=__doc__.splitlines()[0],
        default_results="results/quick",
        update=update,
    )


if __name__ == "__main__":
    raise SystemExit(main())
