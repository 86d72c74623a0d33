"""Read run folders into plain records: one :class:`Run` per experiment, one :class:`ClaimRecord` per claim.

A run folder is what ``kexue run``/``kexue reproduce`` wrote: ``config.json``, ``env.json``, ``metrics.json``,
``claims.json``, ``log.txt`` and plots, or ``error.txt`` when the run failed. Fields that older run folders lack
(``kind``, ``seeds``, ``mde``, ``test``, per-claim ``plots``) get defaults, so every folder ever written renders.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ClaimRecord", "Run", "collect", "label", "tone"]

#: Verdicts in the order the report lists them; "error" is a run that crashed, not a verdict on the article.
VERDICT_ORDER: tuple[str, ...] = ("reproduced", "not reproduced", "inconclusive", "not testable")
_CHECK_LABELS = {"reproduced": "passed", "not reproduced": "failed"}


def tone(verdict: str) -> str:
    """The colour class of a verdict: ``agree`` (green), ``contradict`` (red) or ``neutral`` (grey)."""
    if verdict == "reproduced":
        return "agree"
    if verdict == "not reproduced":
        return "contradict"
    return "neutral"


def label(verdict: str, kind: str) -> str:
    """What the reader sees: a check *passes* or *fails*; an empirical claim is *reproduced* or not."""
    return _CHECK_LABELS.get(verdict, verdict) if kind == "check" else verdict


@dataclass(frozen=True)
class ClaimRecord:
    """One entry of ``claims.json`` with defaults filled in.

    Attributes:
        kind: ``"check"`` (a deterministic property verified numerically) or ``"claim"`` (an empirical statement
            about training).
        seeds: independent runs per arm, or ``None`` when not recorded.
        mde: minimum detectable effect in the units of the compared metric, or ``None``.
        test: the statistical test behind the verdict (``"paired t"``, ``"McNemar"``, ``"exact"`` ...), or ``None``.
        plots: plot files (in the run folder) that show this claim's evidence.
    """

    id: str
    statement: str
    source: str
    verdict: str
    evidence: str
    measured: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "claim"
    seeds: int | None = None
    mde: float | None = None
    test: str | None = None
    plots: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return label(self.verdict, self.kind)

    @property
    def tone(self) -> str:
        return tone(self.verdict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClaimRecord:
        """Read one ``claims.json`` entry, tolerating missing or malformed optional fields."""
        kind = str(d.get("kind") or "claim").strip().lower()
        plots = d.get("plots") or ()
        measured = d.get("measured")
        return cls(
            id=str(d.get("id", "?")),
            statement=str(d.get("statement", "")),
            source=str(d.get("source", "")),
            verdict=str(d.get("verdict", "inconclusive")).strip().lower(),
            evidence=str(d.get("evidence", "")),
            measured=measured if isinstance(measured, Mapping) else {},
            kind="check" if kind == "check" else "claim",
            seeds=_as_int(d.get("seeds")),
            mde=_as_float(d.get("mde")),
            test=str(d["test"]) if d.get("test") not in (None, "", "—", "-") else None,
            plots=tuple(str(p) for p in plots) if isinstance(plots, Sequence) and not isinstance(plots, str) else (),
        )


@dataclass
class Run:
    """One experiment's run folder.

    Attributes:
        name: the experiment's name (``claims.json``'s ``experiment``, else the folder name).
        anchor: the HTML id of its section, unique within a report.
        title: the experiment's title.
        article: the article's URL ("" when unknown).
        article_title: the article's own title when the run recorded one.
        preset: ``smoke``, ``quick``, ``full`` ... or ``None`` when no file names it.
        order: the experiment's place in reports (``claims.json``'s ``order``, the module's ``ORDER``; 100 when
            absent, as in :func:`kexue.experiments.available`).
        error: the traceback when the run failed (``error.txt``), or why its ``claims.json`` cannot be read.
    """

    name: str
    dir: Path
    title: str
    anchor: str = ""
    article: str = ""
    article_title: str | None = None
    preset: str | None = None
    claims: list[ClaimRecord] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    stale_claims: bool = False
    order: float = 100.0

    @property
    def checks(self) -> list[ClaimRecord]:
        return [c for c in self.claims if c.kind == "check"]

    @property
    def empirical(self) -> list[ClaimRecord]:
        return [c for c in self.claims if c.kind == "claim"]

    @property
    def smoke(self) -> bool:
        return self.preset == "smoke"

    def counts(self, kind: str) -> dict[str, int]:
        """Number of claims of ``kind`` per verdict (every verdict of :data:`VERDICT_ORDER` present, maybe 0)."""
        out = dict.fromkeys(VERDICT_ORDER, 0)
        for c in self.claims:
            if c.kind == kind:
                out[c.verdict] = out.get(c.verdict, 0) + 1
        return out

    def existing_plots(self) -> list[str]:
        """The run's plots that exist on disk: its own list, then any plot only a claim names."""
        names = list(dict.fromkeys([*self.plots, *(p for c in self.claims for p in c.plots)]))
        return [p for p in names if (self.dir / p).is_file()]


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or ``{}`` when the file is missing or unreadable (a half-written run)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _claims_problem(cj: Path) -> str | None:
    """Why ``claims.json`` cannot be read as a run's result, or ``None`` when it can."""
    try:
        data = json.loads(cj.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"{cj.name} is unreadable: {e}"
    if not isinstance(data, dict):
        return f"{cj.name} holds a {type(data).__name__}, not an object"
    if not isinstance(data.get("claims", []), list):
        return f"{cj.name}: 'claims' is a {type(data['claims']).__name__}, not a list"
    return None


def _read_run(d: Path) -> Run | None:
    cj, err = d / "claims.json", d / "error.txt"
    if not cj.is_file() and not err.is_file():
        return None
    claims = _read_json(cj) if cj.is_file() else {}
    # A corrupt claims.json (a truncated copy, a hand edit) must not pass for a run that made no claims.
    problem = _claims_problem(cj) if cj.is_file() and not err.is_file() else None
    config = _read_json(d / "config.json")
    preset = claims.get("preset") or config.get("preset")
    run = Run(
        name=str(claims.get("experiment") or config.get("experiment") or d.name),
        dir=d,
        title=str(claims.get("title") or claims.get("experiment") or d.name),
        article=str(claims.get("article") or ""),
        article_title=str(claims["article_title"]) if claims.get("article_title") else None,
        preset=str(preset) if preset else None,
        metrics=_read_json(d / "metrics.json"),
        config=config,
        env=_read_json(d / "env.json"),
    )
    order = _as_float(claims.get("order", config.get("order")))
    if order is not None:
        run.order = order
    if problem is not None:
        run.error = problem
        return run
    if err.is_file():
        # `kexue reproduce` deletes error.txt before each attempt, so its presence means the latest attempt failed;
        # a claims.json next to it is left over from an earlier run and is not shown as this run's result.
        run.error = err.read_text(encoding="utf-8", errors="replace")
        run.stale_claims = cj.is_file()
        return run
    run.claims = [ClaimRecord.from_dict(c) for c in claims.get("claims", []) if isinstance(c, Mapping)]
    run.plots = [str(p) for p in claims.get("plots", []) if isinstance(p, str)]
    return run


def collect(root: str | Path) -> list[Run]:
    """Every run folder under ``root`` (``root`` itself and its direct sub-folders).

    A folder counts when it holds a ``claims.json`` or an ``error.txt``. Runs come in report order: the ``order``
    their files record (an experiment's ``ORDER``), then the folder name.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    dirs = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    runs = [r for r in (_read_run(d) for d in dirs) if r is not None]
    runs.sort(key=lambda r: r.order)  # stable: folder names break ties
    # Two folders of the same experiment (e.g. runs/x-smoke and runs/x-quick) need distinct anchors.
    seen: dict[str, int] = {}
    for r in runs:
        base = "x-" + "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in r.name)
        n = seen.get(base, 0)
        seen[base] = n + 1
        r.anchor = base if n == 0 else f"{base}-{n + 1}"
    return runs
