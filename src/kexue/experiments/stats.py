"""Statistics behind every verdict: t tests on seeds, exact tests on test-set outcomes, minimum detectable effects.

The rules (see the evidence section of the style guide):

- Arms measured on the same seeds (same initialisation, same data order) are compared **paired**: a one-sample
  t test on the per-seed differences. Independent arms use **Welch's** t test. Critical values are Student t
  quantiles, never z = 2.
- Fewer than two values per arm decide nothing: :func:`compare` returns ``None``.
- A deterministic arm (a zero-shot model, a fixed checkpoint) still carries test-set sampling error: compare per
  example with :func:`mcnemar` (two models on the same examples) or :func:`binomial_test` (one model against a
  fixed rate).
- Every comparison reports its **minimum detectable effect** (MDE): the true difference that this design, with
  the noise it observed, detects with probability ``power`` at level ``alpha``. "Inconclusive" is an honest verdict
  only when the MDE exceeds the effect the article claims.

All tests are two-sided at level ``alpha``: under the null hypothesis :func:`compare` returns a non-``None``
answer with probability ``alpha`` (each sign ``alpha / 2``); ``tests/test_stats.py`` checks this by simulation.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any


@cache
def _scipy_stats() -> Any:
    # Imported on first use: the CLI imports this package for every command, and scipy costs ~0.6 s to load.
    from kexue._optional import optional_import

    return optional_import("scipy.stats", purpose="kexue.experiments (the statistics behind every verdict)")


__all__ = [
    "Comparison",
    "binomial_test",
    "compare",
    "equivalent",
    "mcnemar",
    "minimum_detectable_effect",
    "t_critical",
    "t_test",
]


def t_critical(df: float, alpha: float = 0.05) -> float:
    """Two-sided Student t critical value: ``P(|T_df| > c) = alpha`` (4.303 at df = 2, 2.776 at df = 4)."""
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(_scipy_stats().t.ppf(1.0 - alpha / 2.0, df))


def minimum_detectable_effect(se: float, df: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference detected with probability ``power`` by a two-sided t test at level ``alpha``.

    ``(t_{1-alpha/2, df} + t_{power, df}) * se`` — the usual normal-approximation formula with t quantiles.

    Args:
        se: standard error of the compared difference (observed or planned).
        df: degrees of freedom of the test.
    """
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")
    return (t_critical(df, alpha) + float(_scipy_stats().t.ppf(power, df))) * se


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing arm ``a`` with arm ``b`` (``a - b``).

    Attributes:
        diff: ``mean(a) - mean(b)`` (or the accuracy difference for per-example tests).
        margin: the margin the decision was taken against: ``decision`` is about ``diff - margin``.
        se: standard error of ``diff`` (NaN when it cannot be estimated).
        df: degrees of freedom (NaN for exact tests).
        ci: two-sided ``1 - alpha`` confidence interval for ``diff``.
        p: two-sided p-value for ``diff == margin``.
        mde: minimum detectable effect at this budget (power 0.8).
        test: the test used: ``"paired t"``, ``"Welch t"``, ``"McNemar exact"``, ``"binomial exact"``, or
            ``"too few values"``.
        n: number of values (seeds, or examples for per-example tests) per arm.
        decision: ``True``: ``diff > margin`` beyond noise; ``False``: ``diff < margin`` beyond noise; ``None``:
            undecided.
    """

    diff: float
    margin: float
    se: float
    df: float
    ci: tuple[float, float]
    p: float
    mde: float
    test: str
    n: int
    decision: bool | None

    def describe(self, unit: str = "") -> str:
        """A short sentence a reader can check: difference, CI, test, MDE."""

        def f(x: float) -> str:
            return "nan" if not math.isfinite(x) else f"{x:+.4g}{unit}"

        lo, hi = self.ci
        return (
            f"diff {f(self.diff)} (95% CI [{f(lo)}, {f(hi)}], {self.test}, n={self.n}"
            + (f", p={self.p:.3g}" if math.isfinite(self.p) else "")
            + f"; MDE {f(self.mde).lstrip('+')})"
        )


def _values(name: str, xs: Sequence[float]) -> list[float]:
    vals = [float(x) for x in xs]
    if any(not math.isfinite(v) for v in vals):
        raise ValueError(f"{name} contains NaN or infinite values: {vals}")
    return vals


def _undecided(diff: float, margin: float, n: int) -> Comparison:
    nan = math.nan
    return Comparison(diff, margin, nan, nan, (nan, nan), nan, math.inf, "too few values", n, None)


def t_test(
    a: Sequence[float],
    b: Sequence[float],
    *,
    margin: float = 0.0,
    paired: bool = False,
    alpha: float = 0.05,
    power: float = 0.8,
) -> Comparison:
    """Compare two arms of per-seed values with a paired or Welch t test.

    Args:
        a, b: one value per seed (per independent run). With ``paired=True`` they must be aligned: ``a[i]`` and
            ``b[i]`` come from the same seed.
        margin: the decision is about ``mean(a) - mean(b) - margin``; e.g. ``margin=-0.01`` asks "is ``a`` not worse
            than ``b`` by more than 0.01".
        paired: one-sample t test on ``a[i] - b[i]`` (df = n - 1) instead of Welch's test.
        alpha: two-sided level.
        power: the power at which the MDE is computed.

    Returns:
        A :class:`Comparison`; ``decision`` is ``None`` with fewer than 2 values per arm, and when the values show
        no seed-to-seed variation beyond float64 rounding (the seeds then say nothing about the difference; compare
        per example with :func:`mcnemar` or :func:`binomial_test`).

    Raises:
        ValueError: non-finite values, or ``paired=True`` with arms of different lengths.
    """
    va, vb = _values("a", a), _values("b", b)
    if paired and len(va) != len(vb):
        raise ValueError(f"paired comparison needs arms of equal length, got {len(va)} and {len(vb)}")
    if not va or not vb:
        raise ValueError(f"both arms need at least one value, got {len(va)} and {len(vb)}")
    diff = statistics.fmean(va) - statistics.fmean(vb)
    n = min(len(va), len(vb))
    if n < 2:
        return _undecided(diff, margin, n)
    if paired:
        d = [x - y for x, y in zip(va, vb)]
        se = statistics.stdev(d) / math.sqrt(n)
        df: float = n - 1
        test = "paired t"
    else:
        qa, qb = statistics.variance(va) / len(va), statistics.variance(vb) / len(vb)
        se = math.sqrt(qa + qb)
        # Welch-Satterthwaite; with both variances 0 the df is irrelevant (se = 0) but must stay finite.
        df = (qa + qb) ** 2 / (qa**2 / (len(va) - 1) + qb**2 / (len(vb) - 1)) if qa + qb > 0 else n - 1
        test = "Welch t"
    crit = t_critical(df, alpha)
    gap = diff - margin
    # A spread at the level of float64 rounding is no spread: the arms move in lockstep across seeds (a
    # deterministic metric, or both arms stuck at the same rate), so the seeds carry no information about the
    # difference and a t statistic of ~1e16 would be an artefact. Seed noise cannot decide then; compare the arms
    # per test example instead (mcnemar / binomial_test).
    scale = max(1.0, max(abs(v) for v in (*va, *vb)))
    if se <= 1e-12 * scale:
        nan = math.nan
        return Comparison(diff, margin, 0.0, df, (nan, nan), nan, math.inf,
                          f"{test}: no seed-to-seed variation", n, None)  # fmt: skip
    tstat = gap / se
    p = float(2.0 * _scipy_stats().t.sf(abs(tstat), df))
    decision: bool | None = True if tstat > crit else (False if tstat < -crit else None)
    ci = (diff - crit * se, diff + crit * se)
    mde = minimum_detectable_effect(se, df, alpha=alpha, power=power)
    return Comparison(diff, margin, se, df, ci, p, mde, test, n, decision)


def compare(
    a: Sequence[float], b: Sequence[float], *, margin: float = 0.0, paired: bool = False, alpha: float = 0.05
) -> bool | None:
    """Is ``mean(a) > mean(b) + margin`` beyond noise?

    ``True``: above, ``False``: below, ``None``: undecided (including fewer than 2 values per arm). Paired t test
    on per-seed differences when ``paired=True`` (arms that share seeds), Welch's t test otherwise; two-sided
    level ``alpha``. See :func:`t_test` for the numbers behind the answer.
    """
    return t_test(a, b, margin=margin, paired=paired, alpha=alpha).decision


def equivalent(
    a: Sequence[float], b: Sequence[float], *, margin: float, paired: bool = False, alpha: float = 0.05
) -> tuple[bool | None, Comparison]:
    """Two one-sided tests (TOST): is ``|mean(a) - mean(b)| < margin`` beyond noise?

    ``True`` when the ``1 - 2 alpha`` confidence interval of the difference lies inside ``(-margin, margin)``;
    ``False`` when the ``1 - alpha`` interval lies entirely outside ``[-margin, margin]`` (a difference larger than
    the margin is demonstrated); ``None`` otherwise.

    Returns:
        The decision and the :class:`Comparison` (two-sided, level ``alpha``) behind it.
    """
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    c = t_test(a, b, paired=paired, alpha=alpha)
    if c.n < 2:
        return None, c
    if c.se == 0:
        return abs(c.diff) < margin, c
    crit1 = t_critical(c.df, 2 * alpha)  # the one-sided alpha quantile
    lo, hi = c.diff - crit1 * c.se, c.diff + crit1 * c.se
    if -margin < lo and hi < margin:
        return True, c
    if c.ci[0] > margin or c.ci[1] < -margin:
        return False, c
    return None, c


def binomial_test(successes: int, n: int, p0: float, *, alpha: float = 0.05) -> Comparison:
    """Exact two-sided binomial test of a rate ``successes / n`` against a fixed ``p0``.

    For a deterministic arm scored on ``n`` test examples (its accuracy against a fixed threshold), or for a rate
    over seeds (how many of ``n`` seeds collapsed). ``diff`` is ``successes / n - p0``; the CI is Clopper–Pearson.
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got successes={successes}, n={n}")
    if not 0.0 <= p0 <= 1.0:
        raise ValueError(f"p0 must be in [0, 1], got {p0}")
    rate = successes / n
    res = _scipy_stats().binomtest(successes, n, p0)
    ci = res.proportion_ci(confidence_level=1 - alpha, method="exact")
    se = math.sqrt(max(p0 * (1 - p0), 1e-12) / n)
    decision: bool | None = None
    if res.pvalue < alpha:
        decision = rate > p0
    mde = minimum_detectable_effect(se, max(n - 1, 1), alpha=alpha)
    return Comparison(rate - p0, 0.0, se, math.nan, (ci.low - p0, ci.high - p0), float(res.pvalue), mde,
                      "binomial exact", n, decision)  # fmt: skip


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool], *, alpha: float = 0.05) -> Comparison:
    """Exact McNemar test: do two classifiers scored on the *same* examples differ in accuracy?

    Only the discordant examples count (``a`` right and ``b`` wrong: ``n01``; the reverse: ``n10``); under the null
    each is a fair coin. ``diff`` is ``acc(a) - acc(b)``; the CI is the Wald interval for paired proportions; the
    MDE is for the observed discordance rate.
    """
    ca, cb = [bool(x) for x in correct_a], [bool(x) for x in correct_b]
    if len(ca) != len(cb) or not ca:
        raise ValueError(f"correct_a and correct_b must be non-empty and aligned, got {len(ca)} and {len(cb)}")
    n = len(ca)
    n01 = sum(1 for x, y in zip(ca, cb) if x and not y)
    n10 = sum(1 for x, y in zip(ca, cb) if y and not x)
    diff = (n01 - n10) / n
    disc = n01 + n10
    p = float(_scipy_stats().binomtest(n01, disc, 0.5).pvalue) if disc > 0 else 1.0
    se = math.sqrt(max((n01 + n10) / n - diff**2, 0.0) / n)
    z = float(_scipy_stats().norm.ppf(1 - alpha / 2))
    decision: bool | None = (diff > 0) if p < alpha else None
    # MDE at this discordance rate (at least one discordant pair assumed so the budget is never "free").
    se_mde = math.sqrt(max(disc, 1) / n) / math.sqrt(n)
    mde = (z + float(_scipy_stats().norm.ppf(0.8))) * se_mde
    return Comparison(diff, 0.0, se, math.nan, (diff - z * se, diff + z * se), p, mde, "McNemar exact", n, decision)
