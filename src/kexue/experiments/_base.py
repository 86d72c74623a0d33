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

__all__ = [
    "VERDICTS",
    "Claim",
    "ConfigError",
    "Result",
    "apply_overrides",
    "claim",
    "compare",
    "config_to_dict",
    "mean_std",
    "new_figure",
    "save_figure",
]

Verdict = Literal["reproduced", "not reproduced", "inconclusive"]
VERDICTS: tuple[str, ...] = ("reproduced", "not reproduced", "inconclusive")


@dataclass(frozen=True)
class Claim:
    """A statement from an article and the verdict the measured numbers give it.

    Attributes:
        id: short stable identifier, unique within the experiment.
        statement: the article's claim, paraphrased in English.
        source: article URL and section.
        verdict: ``"reproduced"``, ``"not reproduced"`` or ``"inconclusive"``.
        evidence: the numbers behind the verdict, as a sentence a reader can check.
        measured: the same numbers as a mapping.
    """

    id: str
    statement: str
    source: str
    verdict: Verdict
    evidence: str
    measured: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "statement": self.statement,
            "source": self.source,
            "verdict": self.verdict,
            "evidence": self.evidence,
            "measured": {k: _jsonable(v) for k, v in self.measured.items()},
        }


def claim(
    id: str,
    statement: str,
    source: str,
    *,
    holds: bool | None,
    evidence: str,
    measured: Mapping[str, float] | None = None,
) -> Claim:
    """Build a :class:`Claim` whose verdict is derived from ``holds``.

    Args:
        holds: the predicate evaluated on measured numbers: ``True`` -> reproduced, ``False`` -> not
            reproduced, ``None`` (the numbers cannot decide, e.g. the gap is within seed noise) -> inconclusive.
    """
    verdict: Verdict = "inconclusive" if holds is None else ("reproduced" if holds else "not reproduced")
    return Claim(id, statement, source, verdict, evidence, dict(measured or {}))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_std needs at least one value")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def compare(a: Sequence[float], b: Sequence[float], *, margin: float = 0.0, z: float = 2.0) -> bool | None:
    """Is ``mean(a) > mean(b) + margin``, beyond seed noise?

    Returns ``True`` when ``mean(a) - mean(b) - margin`` exceeds ``z`` standard errors of the difference,
    ``False`` when it is below ``-z`` standard errors, and ``None`` (inconclusive) otherwise. With a single seed
    per side the standard error is 0 and the sign decides.
    """
    ma, sa = mean_std(a)
    mb, sb = mean_std(b)
    se = math.sqrt(sa**2 / len(a) + sb**2 / len(b))
    gap = ma - mb - margin
    if gap > z * se:
        return True
    if gap < -z * se:
        return False
    return None


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
        cfg = dataclasses.replace(cfg, **{head: new})
    return cfg


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 5.0, height: float = 3.6) -> Any:
    """A matplotlib ``Figure`` and its axes, made without pyplot (no global backend state is touched)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig: Any, out_dir: Path, name: str) -> str:
    """Save ``fig`` as ``out_dir/name.png`` and return the file name (for ``Result.plots``)."""
    fname = name if name.endswith(".png") else name + ".png"
    fig.savefig(Path(out_dir) / fname, dpi=110)
    return fname
