"""What every experiment shares: claims with measured verdicts, results, config overrides and plot helpers.

An experiment module defines, in this order: a docstring naming the article and its claims; ``NAME``, ``TITLE``,
``ARTICLE`` (URL) and ``CLAIMS`` (claim id -> the article's statement); a frozen ``Config`` dataclass with a
``seed`` field; ``PRESETS = {"smoke": ..., "quick": ..., "full": ...}``; and ``run(cfg, out_dir, *,
resume=False) -> Result``. Nothing runs at import.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import stats

__all__ = [
    "KINDS",
    "VERDICTS",
    "Claim",
    "ConfigError",
    "Result",
    "apply_overrides",
    "better",
    "check",
    "claim",
    "compare",
    "config_to_dict",
    "mean_std",
    "new_figure",
    "not_run",
    "not_worse",
    "save_figure",
    "within",
]

Verdict = Literal["reproduced", "not reproduced", "inconclusive", "not testable"]
VERDICTS: tuple[str, ...] = ("reproduced", "not reproduced", "inconclusive", "not testable")
Kind = Literal["check", "claim"]
KINDS: tuple[str, ...] = ("check", "claim")


@dataclass(frozen=True)
class Claim:
    """A statement from an article and the verdict the measured numbers give it.

    Attributes:
        id: short stable identifier, unique within the experiment.
        statement: the article's claim, paraphrased in English.
        source: article URL and section.
        verdict: ``"reproduced"``, ``"not reproduced"``, ``"inconclusive"`` or ``"not testable"`` (the budget or
            the offline setting cannot test it; ``evidence`` says why).
        evidence: the numbers behind the verdict, as a sentence a reader can check.
        measured: the same numbers as a mapping.
        kind: ``"check"`` — a deterministic property or theorem verified numerically (unit-test grade) — or
            ``"claim"`` — an empirical statement about training, decided by a statistical test.
        seeds: independent runs per arm behind the verdict (``None`` for a check that involves no training).
        mde: minimum detectable effect of the test at this budget, in the units of the compared metric (claims).
        test: the test that decided it (``"paired t"``, ``"Welch t"``, ``"McNemar exact"``, ``"exact"`` …).
    """

    id: str
    statement: str
    source: str
    verdict: Verdict
    evidence: str
    measured: Mapping[str, float] = field(default_factory=dict)
    kind: Kind = "claim"
    seeds: int | None = None
    mde: float | None = None
    test: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "statement": self.statement,
            "source": self.source,
            "verdict": self.verdict,
            "kind": self.kind,
            "seeds": self.seeds,
            "mde": _jsonable(self.mde),
            "test": self.test,
            "evidence": self.evidence,
            "measured": {k: _jsonable(v) for k, v in self.measured.items()},
        }


def _verdict(holds: bool | None) -> Verdict:
    return "inconclusive" if holds is None else ("reproduced" if holds else "not reproduced")


def claim(
    id: str,
    statement: str,
    source: str,
    *,
    holds: bool | None,
    evidence: str,
    measured: Mapping[str, float] | None = None,
    kind: Kind = "claim",
    seeds: int | None = None,
    mde: float | None = None,
    test: str | None = None,
) -> Claim:
    """Build a :class:`Claim` whose verdict is derived from ``holds``.

    Args:
        holds: the predicate evaluated on measured numbers: ``True`` -> reproduced, ``False`` -> not
            reproduced, ``None`` (the numbers cannot decide, e.g. the gap is within seed noise) -> inconclusive.
        kind, seeds, mde, test: see :class:`Claim`. Prefer the helpers :func:`check`, :func:`better`,
            :func:`not_worse`, :func:`within` and :func:`not_run`, which fill them in.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return Claim(id, statement, source, _verdict(holds), evidence, dict(measured or {}), kind, seeds, mde, test)


def check(
    id: str,
    statement: str,
    source: str,
    *,
    holds: bool,
    evidence: str,
    measured: Mapping[str, float] | None = None,
    seeds: int | None = None,
    test: str = "exact",
) -> Claim:
    """A deterministic property or theorem verified numerically (``kind="check"``): it holds or it does not."""
    return claim(id, statement, source, holds=bool(holds), evidence=evidence, measured=measured, kind="check",
                 seeds=seeds, test=test)  # fmt: skip


def not_run(id: str, statement: str, source: str, *, reason: str, kind: Kind = "claim") -> Claim:
    """A claim this budget or setting cannot test: verdict ``"not testable"``, with the reason as evidence."""
    return Claim(id, statement, source, "not testable", reason, {}, kind, None, None, None)


def _fmt_arm(name: str, xs: Sequence[float]) -> str:
    m, s = mean_std(xs)
    return f"{name} {m:.4g} ± {s:.2g}" if len(xs) > 1 else f"{name} {m:.4g}"


def _from_comparison(
    id: str,
    statement: str,
    source: str,
    holds: bool | None,
    c: stats.Comparison,
    a: Sequence[float],
    b: Sequence[float],
    names: tuple[str, str],
    evidence: str | None,
    measured: Mapping[str, float] | None,
) -> Claim:
    text = f"{_fmt_arm(names[0], a)} vs {_fmt_arm(names[1], b)}; {c.describe()}"
    meas = {f"{names[0]}_mean": mean_std(a)[0], f"{names[1]}_mean": mean_std(b)[0], "diff": c.diff,
            "ci_low": c.ci[0], "ci_high": c.ci[1], "mde": c.mde}  # fmt: skip
    meas.update(measured or {})
    return claim(id, statement, source, holds=holds, evidence=(evidence + " " if evidence else "") + text,
                 measured=meas, kind="claim", seeds=c.n, mde=c.mde, test=c.test)  # fmt: skip


def better(
    id: str,
    statement: str,
    source: str,
    a: Sequence[float],
    b: Sequence[float],
    *,
    paired: bool,
    margin: float = 0.0,
    effect: float | None = None,
    names: tuple[str, str] = ("a", "b"),
    evidence: str | None = None,
    measured: Mapping[str, float] | None = None,
    alpha: float = 0.05,
) -> Claim:
    """The claim "``a`` is larger than ``b`` (by more than ``margin``)", decided by a t test on per-seed values.

    Reproduced when ``mean(a) - mean(b) > margin`` beyond noise; not reproduced when it is below beyond noise, or
    when the test was undecided although its minimum detectable effect is smaller than ``effect`` (the effect the
    article reports, in the metric's units): a design that could have seen the effect and did not. Otherwise
    inconclusive. For "smaller is better" metrics pass the arms negated or swapped.
    """
    c = stats.t_test(a, b, margin=margin, paired=paired, alpha=alpha)
    holds = c.decision
    if holds is None and effect is not None and c.n >= 2 and c.mde < effect:
        holds = False
    return _from_comparison(id, statement, source, holds, c, a, b, names, evidence, measured)


def not_worse(
    id: str,
    statement: str,
    source: str,
    a: Sequence[float],
    b: Sequence[float],
    *,
    margin: float,
    paired: bool,
    names: tuple[str, str] = ("a", "b"),
    evidence: str | None = None,
    measured: Mapping[str, float] | None = None,
    alpha: float = 0.05,
) -> Claim:
    """Non-inferiority: "``a`` is no worse than ``b`` by more than ``margin``" (``margin > 0``, pre-registered).

    Reproduced when ``mean(a) - mean(b) > -margin`` beyond noise, not reproduced when it is below beyond noise,
    inconclusive otherwise.
    """
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    c = stats.t_test(a, b, margin=-margin, paired=paired, alpha=alpha)
    return _from_comparison(id, statement, source, c.decision, c, a, b, names, evidence, measured)


def within(
    id: str,
    statement: str,
    source: str,
    a: Sequence[float],
    b: Sequence[float],
    *,
    margin: float,
    paired: bool,
    names: tuple[str, str] = ("a", "b"),
    evidence: str | None = None,
    measured: Mapping[str, float] | None = None,
    alpha: float = 0.05,
) -> Claim:
    """Equivalence: "``a`` and ``b`` agree within ``margin``" by two one-sided tests (see :func:`stats.equivalent`).

    Pair it with an activity precondition (the compared procedures measurably act) — an equivalence between two
    no-ops is vacuous.
    """
    holds, c = stats.equivalent(a, b, margin=margin, paired=paired, alpha=alpha)
    return _from_comparison(id, statement, source, holds, c, a, b, names, evidence, measured)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_std needs at least one value")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def compare(
    a: Sequence[float], b: Sequence[float], *, margin: float = 0.0, paired: bool = False, alpha: float = 0.05
) -> bool | None:
    """Is ``mean(a) > mean(b) + margin`` beyond seed noise? See :func:`kexue.experiments.stats.compare`.

    ``True`` / ``False`` when the paired (``paired=True``) or Welch t test decides at two-sided level ``alpha``,
    ``None`` when it does not — always ``None`` with fewer than 2 values per arm.
    """
    return stats.compare(a, b, margin=margin, paired=paired, alpha=alpha)


@dataclass
class Result:
    """What ``run`` returns: metrics (JSON-serialisable), evaluated claims and the plot files it wrote."""

    metrics: dict[str, Any]
    claims: list[Claim]
    plots: list[str] = field(default_factory=list)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and callable(v.item) and getattr(v, "numel", lambda: 1)() == 1:
        return _jsonable(v.item())
    return v


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(_jsonable(obj), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


class ConfigError(ValueError):
    """A ``--set`` override names an unknown key or a value of the wrong type."""


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A (nested) config dataclass as plain JSON-able data."""
    return _jsonable(dataclasses.asdict(cfg))


def _keys(cfg: Any, prefix: str = "") -> list[str]:
    out: list[str] = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out += _keys(v, prefix + f.name + ".")
        else:
            out.append(prefix + f.name)
    return out


def _parse(raw: str, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _parse(raw, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"--set {key}={raw}: expected {tp}")
    if origin is Literal:
        for a in args:
            if str(a) == raw:
                return a
        raise ConfigError(f"--set {key}={raw}: expected one of {list(args)}")
    if origin in (tuple, list):
        items = [s for s in raw.strip("()[] ").split(",") if s.strip()]
        elem = args[0] if args else str
        vals = [_parse(s.strip(), elem, key) for s in items]
        return tuple(vals) if origin is tuple else vals
    if tp is bool:
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--set {key}={raw}: expected a boolean (true/false)")
    if tp in (int, float):
        try:
            return tp(raw)
        except ValueError:
            raise ConfigError(f"--set {key}={raw}: expected {tp.__name__}") from None
    if tp is str:
        return raw
    raise ConfigError(f"--set {key}: values of type {tp} cannot be set from the command line")


def apply_overrides(cfg: Any, overrides: Mapping[str, str], *, _prefix: str = "") -> Any:
    """Return ``cfg`` with dotted-key overrides (``{"optim.lr": "3e-4"}``) parsed to each field's type.

    Raises:
        ConfigError: an unknown key (the message lists the valid ones) or a value of the wrong type.
    """
    for rel_key, raw in overrides.items():
        key = _prefix + rel_key
        head, _, rest = rel_key.partition(".")
        names = {f.name: f for f in dataclasses.fields(cfg)}
        if head not in names:
            valid = ", ".join(_prefix + k for k in _keys(cfg))
            raise ConfigError(f"unknown config key {key!r}; valid keys: {valid}")
        current = getattr(cfg, head)
        if rest:
            if not dataclasses.is_dataclass(current):
                raise ConfigError(f"unknown config key {key!r}; {head!r} has no sub-keys")
            new = apply_overrides(current, {rest: raw}, _prefix=f"{_prefix}{head}.")
        else:
            if dataclasses.is_dataclass(current):
                raise ConfigError(f"config key {key!r} is a group; set one of its fields, e.g. {key}.<field>")
            hints = typing.get_type_hints(type(cfg))
            new = _parse(raw, hints[head], key)
            # NumPy's generators refuse negative seeds and torch's refuse seeds of 2**64 and more: an out-of-range
            # seed would only fail as a traceback once the run had started.
            if head == "seed" and isinstance(new, int) and not 0 <= new < 2**32:
                raise ConfigError(f"--set {key}={raw}: a seed must be an int in [0, 2**32 - 1]")
        cfg = dataclasses.replace(cfg, **{head: new})
    return cfg


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 5.0, height: float = 3.6) -> Any:
    """A matplotlib ``Figure`` and its axes, made without pyplot (no global backend state is touched)."""
    from kexue._optional import optional_import

    Figure = optional_import("matplotlib.figure", purpose="the plots of the experiments").Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig: Any, out_dir: Path, name: str) -> str:
    """Save ``fig`` as ``out_dir/name.png`` and return the file name (for ``Result.plots``)."""
    fname = name if name.endswith(".png") else name + ".png"
    fig.savefig(Path(out_dir) / fname, dpi=110)
    return fname
