"""Turn a run's nested ``metrics.json`` into a few compact tables a reader can scan.

Experiments write metrics as nested dicts such as ``{"summary": {"infonce": {"probe": .7, "knn": .6},
"flatnce": {"probe": .7, "knn": .6}}}``. Listing every leaf as ``summary.infonce.probe = 0.7`` makes a long column;
siblings that share the same leaf keys read better as one matrix (rows ``infonce``, ``flatnce``; columns ``probe``,
``knn``). Everything else (top-level numbers, one-off leaves) becomes a key/value list. Lists (per-epoch
histories, curves) are left to the plots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MetricTables", "fmt_value", "metric_tables"]

_MAX_COLUMNS = 16
_MIN_FILL = 0.75
_MAX_ROWS = 16
_MAX_STR = 60


@dataclass
class Matrix:
    """Rows of sibling dicts that share their keys: ``caption`` is their parent's path."""

    caption: str
    columns: list[str]
    rows: list[tuple[str, list[str]]]


@dataclass
class MetricTables:
    """A run's metrics, ready to render: key/value pairs, matrices, and how many values were left out."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    matrices: list[Matrix] = field(default_factory=list)
    omitted: int = 0

    def __bool__(self) -> bool:
        return bool(self.pairs or self.matrices)


def fmt_value(v: Any) -> str | None:
    """A scalar metric as short text (4 significant digits), or ``None`` for what is not a scalar."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    if isinstance(v, str):
        return v if len(v) <= _MAX_STR else v[: _MAX_STR - 1] + "…"
    if v is None:
        return "null"
    return None


def _leaves(obj: Mapping[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    out: list[tuple[tuple[str, ...], str]] = []
    for k, v in obj.items():
        p = (*path, str(k))
        if isinstance(v, Mapping):
            out += _leaves(v, p)
        else:
            s = fmt_value(v)
            if s is not None:
                out.append((p, s))
    return out


def _merge_std(kv: dict[str, str]) -> dict[str, str]:
    """``{"acc": "0.7", "acc_std": "0.01"}`` -> ``{"acc": "0.7 ± 0.01"}``: the spread beside the number it qualifies."""
    out: dict[str, str] = {}
    for k, s in kv.items():
        if k.endswith("_std") and k[:-4] in kv:
            continue
        std = kv.get(k + "_std")
        out[k] = f"{s} ± {std}" if std is not None else s
    return out


def metric_tables(metrics: Mapping[str, Any], *, limit: int = 240) -> MetricTables:
    """Group the scalar leaves of ``metrics`` into matrices and key/value pairs (at most ``limit`` values shown).

    Args:
        metrics: the run's ``metrics.json``.
        limit: the most values to show; the rest are counted in ``omitted``.

    Returns:
        the tables, in the order their first value appears in ``metrics``.
    """
    # parent path -> its leaf keys and values, in file order
    parents: dict[tuple[str, ...], dict[str, str]] = {}
    for p, s in _leaves(metrics):
        parents.setdefault(p[:-1], {})[p[-1]] = s
    parents = {p: _merge_std(kv) for p, kv in parents.items()}
    # Sibling dicts (same grandparent, >= 2 of them) whose keys mostly coincide form a matrix; a key a row lacks
    # shows as a dash. Siblings with little in common stay key/value pairs.
    siblings: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for parent in parents:
        if parent:
            siblings.setdefault(parent[:-1], []).append(parent)
    matrix_of: dict[tuple[str, ...], tuple[str, ...]] = {}
    columns: dict[tuple[str, ...], list[str]] = {}
    for grand, members in siblings.items():
        cols = list(dict.fromkeys(k for m in members for k in parents[m]))
        filled = sum(len(parents[m]) for m in members)
        if len(members) >= 2 and len(cols) <= _MAX_COLUMNS and filled >= _MIN_FILL * len(members) * len(cols):
            columns[grand] = cols
            for m in members:
                matrix_of[m] = grand
    out = MetricTables()
    shown = 0
    for parent, kv in parents.items():
        owner = matrix_of.get(parent)
        if owner is None:
            for k, s in kv.items():
                if shown >= limit:
                    out.omitted += 1
                    continue
                out.pairs.append((".".join((*parent, k)), s))
                shown += 1
            continue
        if parent != siblings[owner][0]:
            continue  # the matrix was emitted with its first row
        cols = columns[owner]
        # A long matrix (one row per seed and arm, say) shows its first _MAX_ROWS rows; the file has the rest.
        members = siblings[owner][:_MAX_ROWS]
        cells = len(members) * len(cols)
        if shown + cells > limit:
            out.omitted += len(siblings[owner]) * len(cols)
            continue
        out.omitted += (len(siblings[owner]) - len(members)) * len(cols)
        rows = [(m[-1], [parents[m].get(c, "—") for c in cols]) for m in members]
        out.matrices.append(Matrix(".".join(owner), cols, rows))
        shown += cells
    return out
