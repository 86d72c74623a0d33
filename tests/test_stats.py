"""The statistics behind every verdict: error rates by simulation, known critical values, exact tests."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kexue.experiments import _base, stats


def test_t_critical_known_values() -> None:
    # Two-sided 5 % Student t quantiles from any table.
    assert stats.t_critical(2) == pytest.approx(4.303, abs=1e-3)
    assert stats.t_critical(4) == pytest.approx(2.776, abs=1e-3)
    assert stats.t_critical(1e6) == pytest.approx(1.960, abs=1e-3)


@pytest.mark.parametrize("paired", [False, True])
def test_null_false_positive_rate_at_n3(paired: bool) -> None:
    """Under the null, compare() answers (True or False) at most alpha of the time with 3 seeds per arm."""
    rng = np.random.default_rng(0)
    trials, decided = 4000, 0
    for _ in range(trials):
        seed_effect = rng.normal(0, 3, 3)  # shared seeds move both arms: pairing removes it
        a = seed_effect + rng.normal(0, 1, 3)
        b = (seed_effect if paired else rng.normal(0, 3, 3)) + rng.normal(0, 1, 3)
        decided += stats.compare(a.tolist(), b.tolist(), paired=paired) is not None
    rate = decided / trials
    # Binomial SE at 5 %: 0.0034; allow 2 SE above alpha.
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / trials), rate
    assert rate > 0.02, f"a test that never decides is not a test: {rate}"


def test_old_z2_rule_was_anticonservative() -> None:
    """Negative control: the replaced rule (z = 2, unpaired) exceeds 5 % false positives at n = 3."""
    rng = np.random.default_rng(1)
    trials, decided = 4000, 0
    for _ in range(trials):
        a, b = rng.normal(0, 1, 3), rng.normal(0, 1, 3)
        se = math.sqrt(a.var(ddof=1) / 3 + b.var(ddof=1) / 3)
        decided += abs(a.mean() - b.mean()) > 2 * se
    assert decided / trials > 0.08


def test_power_for_3sigma_paired_effect_at_n5() -> None:
    rng = np.random.default_rng(2)
    trials, hits = 2000, 0
    for _ in range(trials):
        seed_effect = rng.normal(0, 5, 5)
        noise = rng.normal(0, 1, 5)
        a, b = seed_effect + 3.0 + noise, seed_effect.copy()  # paired differences ~ N(3, 1)
        hits += stats.compare(a.tolist(), b.tolist(), paired=True) is True
    assert hits / trials > 0.8


def test_fewer_than_two_values_decide_nothing() -> None:
    assert stats.compare([1.0], [0.0]) is None
    assert stats.compare([1.0], [0.0], paired=True) is None
    c = stats.t_test([5.0], [0.0])
    assert c.decision is None and c.test == "too few values" and math.isinf(c.mde)


def test_paired_detects_what_unpaired_cannot() -> None:
    base = [0.70, 0.80, 0.90]
    a = [x + d for x, d in zip(base, [0.010, 0.012, 0.011])]
    assert stats.compare(a, base, paired=True) is True
    assert stats.compare(a, base, paired=False) is None


def test_margin_and_sign() -> None:
    a, b = [1.0, 1.1, 0.9, 1.05], [0.0, 0.08, -0.12, 0.06]
    assert stats.compare(a, b, paired=True) is True
    assert stats.compare(b, a, paired=True) is False
    assert stats.compare(a, b, paired=True, margin=2.0) is False


def test_mde_matches_formula() -> None:
    c = stats.t_test([1.0, 2.0, 3.0], [0.0, 0.5, 1.0], paired=True)
    d = [1.0, 1.5, 2.0]
    se = float(np.std(d, ddof=1) / math.sqrt(3))
    assert c.se == pytest.approx(se)
    assert c.mde == pytest.approx((4.303 + 1.061) * se, rel=2e-3)
    assert c.ci[0] < c.diff < c.ci[1]


def test_equivalence_tost() -> None:
    a = [1.0, 1.001, 0.999, 1.0005, 0.9995]
    b = [1.0002, 1.0, 1.0001, 0.9999, 1.0003]
    assert stats.equivalent(a, b, margin=0.01)[0] is True
    assert stats.equivalent([x + 1 for x in a], b, margin=0.01)[0] is False
    assert stats.equivalent([0.0, 1.0], [0.5, 0.4], margin=0.01)[0] is None


def test_mcnemar_exact() -> None:
    # 30 discordant pairs all in favour of a: p = 2 * 0.5**30.
    a = [True] * 30 + [True] * 50 + [False] * 20
    b = [False] * 30 + [True] * 50 + [False] * 20
    c = stats.mcnemar(a, b)
    assert c.decision is True and c.p == pytest.approx(2 * 0.5**30)
    assert c.diff == pytest.approx(0.3)
    # Balanced discordance: no difference.
    c0 = stats.mcnemar([True, False] * 20, [False, True] * 20)
    assert c0.decision is None and c0.p == pytest.approx(1.0)


def test_binomial_exact() -> None:
    c = stats.binomial_test(9, 10, 0.5)
    assert c.p == pytest.approx(22 / 1024)
    assert c.decision is True
    assert stats.binomial_test(6, 10, 0.5).decision is None


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="paired"):
        stats.compare([1.0, 2.0], [1.0], paired=True)
    with pytest.raises(ValueError, match="NaN"):
        stats.compare([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="margin"):
        stats.equivalent([1.0, 2.0], [1.0, 2.0], margin=0)


def test_claim_helpers_fill_kind_seeds_mde() -> None:
    a, b = [0.81, 0.83, 0.82], [0.78, 0.801, 0.79]
    c = _base.better("x", "a beats b", "src", a, b, paired=True, names=("ours", "theirs"))
    d = c.to_dict()
    assert d["verdict"] == "reproduced" and d["kind"] == "claim" and d["seeds"] == 3 and d["test"] == "paired t"
    assert d["mde"] > 0 and "ours" in d["evidence"]
    # Undecided but the design could see the article's effect: not reproduced.
    n = _base.better("y", "a beats b", "src", [0.80, 0.82, 0.81], [0.81, 0.80, 0.82], paired=True, effect=0.2)
    assert n.verdict == "not reproduced"
    u = _base.better("y", "a beats b", "src", [0.80, 0.82, 0.81], [0.81, 0.80, 0.82], paired=True, effect=1e-4)
    assert u.verdict == "inconclusive"
    k = _base.check("z", "identity", "src", holds=True, evidence="err 0")
    assert k.kind == "check" and k.verdict == "reproduced"
    t = _base.not_run("w", "needs a GPU", "src", reason="budget")
    assert t.verdict == "not testable"


def test_lockstep_arms_decide_nothing() -> None:
    """Arms that move in lockstep across seeds (differences equal up to rounding) carry no seed information."""
    c = stats.t_test([0.1, 0.2], [0.05, 0.15], paired=True)
    assert c.decision is None and math.isinf(c.mde) and "no seed-to-seed variation" in c.test
    # Exactly repeated deterministic arms: no longer decided by the sign.
    assert stats.compare([0.6, 0.6, 0.6], [0.5, 0.5, 0.5]) is None
    # A real, tiny spread still decides.
    assert stats.compare([0.6, 0.61, 0.6], [0.5, 0.5, 0.51], paired=True) is True
    # Bitwise-identical arms are equivalent within any margin.
    assert stats.equivalent([0.3, 0.4], [0.3, 0.4], margin=1e-6, paired=True)[0] is True
