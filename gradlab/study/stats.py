"""Statistics over seeds: confidence intervals, paired and Welch t-tests, Holm's correction
and the number of seeds a difference needs. Nothing here imports torch.

The distributions are scipy's: the Student t and noncentral t functions of
``scipy.special`` (``stdtr``, ``stdtrit``, ``nctdtr``), which are what ``scipy.stats.t``
and ``scipy.stats.nct`` compute with. They are called directly because importing
``scipy.stats`` costs half a second, longer than the rest of a 500-run comparison; the
tests check every result against ``scipy.stats`` (``ttest_rel``, ``ttest_ind``,
``t.interval``, ``nct``).

A seed fixes the initialization and the data order in every arm of a gradlab study, so two
groups that ran the same seeds are paired: their per-seed differences are tested. Groups
with different seeds are compared with Welch's t-test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean

import numpy as np

ALPHA = 0.05
POWER = 0.8
_MAX_SEEDS = 1_000_000


def t_quantile(probability: float, df: float) -> float:
    """The Student t quantile (``scipy.stats.t.ppf``)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, probability))


def t_quantile_array(probability: float, df):
    """:func:`t_quantile` element-wise over an array or frame of degrees of freedom
    (NaN where df < 1)."""
    from scipy.special import stdtrit

    df = df.where(df >= 1) if hasattr(df, "where") else np.where(np.asarray(df) >= 1, df, np.nan)
    return stdtrit(df, probability)


def t_two_sided_p(statistic: float, df: float) -> float:
    """The two-sided p-value of a t statistic: ``2 * scipy.stats.t.sf(|t|, df)``."""
    from scipy.special import stdtr

    return float(min(1.0, 2 * stdtr(df, -abs(statistic))))


def nct_cdf(x: float, df: float, nc: float) -> float:
    """The noncentral t distribution function (``scipy.stats.nct.cdf``)."""
    from scipy.special import nctdtr

    return float(nctdtr(df, nc, x))


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The Student t confidence interval of the mean of ``values``: mean ± t·s/√n.
    NaN for fewer than two values; a point when they are all equal."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        return math.nan, math.nan
    mean = float(x.mean())
    half = t_quantile(0.5 + level / 2, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


@dataclass
class Difference:
    """A group against the baseline on one metric (group minus baseline)."""

    test: str | None  # paired, welch; none: a value is infinite; None: one side has none
    delta: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    p_value: float = math.nan
    n_pairs: float = math.nan
    seeds_needed: float = math.nan


def compare_to_baseline(
    group: dict[int, float], baseline: dict[int, float], level: float = 0.95
) -> Difference:
    """Test ``group`` against ``baseline`` (seed -> value, NaN values left out).

    Paired t-test on the per-seed differences when both ran the same seeds, or when the
    seeds of one are all among the other's and at least two are shared (a seed whose run
    failed or diverged drops its pair; ``delta`` is then the mean over the pairs); Welch's
    t-test otherwise. When the differences (paired) or both groups (Welch)
    have no spread, p is 1 if the difference is exactly 0 and 0 otherwise, and the interval
    is the point. Too few values for a test leave p and the interval empty (NaN); with no
    value on one side there is no test at all (``test`` is None); with an infinite value on
    either side (ε without noise) ``test`` is ``none``: ``delta`` is the difference of the
    means (±inf) and there is no interval, p-value or ``seeds_needed``.
    """
    group = {s: v for s, v in group.items() if not math.isnan(v)}
    baseline = {s: v for s, v in baseline.items() if not math.isnan(v)}
    if not group or not baseline:
        return Difference(None, math.nan)
    if not all(math.isfinite(v) for v in (*group.values(), *baseline.values())):
        # an infinite value (epsilon without noise) has no t-test: the difference of the
        # means (+-inf, or NaN for inf - inf) without interval or p-value
        return Difference("none", fmean(group.values()) - fmean(baseline.values()))
    shared = sorted(set(group) & set(baseline))
    if set(group) == set(baseline) or (
        len(shared) >= 2 and (set(group) <= set(baseline) or set(baseline) <= set(group))
    ):
        seeds = shared
        return _paired([group[s] for s in seeds], [baseline[s] for s in seeds], level)
    return _welch(list(group.values()), list(baseline.values()), level)


def _paired(a: list[float], b: list[float], level: float) -> Difference:
    d = np.asarray(a) - np.asarray(b)
    n = len(d)
    result = Difference("paired", float(d.mean()), n_pairs=n)
    if n < 2:
        return result
    if np.all(d == d[0]):  # no spread: scipy would divide by zero
        return _without_spread(result)
    sd = float(d.std(ddof=1))
    # scipy.stats.ttest_rel: t = mean(d) / (sd(d) / sqrt(n)), df n - 1
    _t_test(result, sd / math.sqrt(n), n - 1, level)
    result.seeds_needed = seeds_needed_paired(result.delta / sd)
    return result


def _welch(a: list[float], b: list[float], level: float) -> Difference:
    result = Difference("welch", float(np.mean(a) - np.mean(b)))
    if len(a) < 2 or len(b) < 2:
        return result
    var_a, var_b = float(np.var(a, ddof=1)), float(np.var(b, ddof=1))
    if var_a == var_b == 0:
        return _without_spread(result)
    # Welch (scipy.stats.ttest_ind, equal_var=False): Welch-Satterthwaite degrees of freedom
    va, vb = var_a / len(a), var_b / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    _t_test(result, math.sqrt(va + vb), df, level)
    result.seeds_needed = seeds_needed_two_sample(result.delta / math.sqrt((var_a + var_b) / 2))
    return result


def _without_spread(result: Difference) -> Difference:
    """No spread at all: p is 1 for a difference of exactly 0 and 0 otherwise; the interval
    is the point; two seeds suffice to see a non-zero difference."""
    result.ci_low = result.ci_high = result.delta
    result.p_value = 1.0 if result.delta == 0 else 0.0
    result.seeds_needed = math.nan if result.delta == 0 else 2
    return result


def _t_test(result: Difference, se: float, df: float, level: float) -> None:
    """The two-sided p-value and the interval of ``result.delta`` with standard error
    ``se`` and ``df`` degrees of freedom."""
    result.p_value = t_two_sided_p(result.delta / se, df)
    half = t_quantile(0.5 + level / 2, df) * se
    result.ci_low, result.ci_high = result.delta - half, result.delta + half


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given; NaN stays NaN and does not
    count as a test. Sorted ascending, ``p_adj(i) = max_{j<=i} min(1, (k - j) p(j))``."""
    tested = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    tested.sort()
    k = len(tested)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for j, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (k - j) * p))
        adjusted[i] = running
    return adjusted


def power_paired(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of a two-sided paired t-test with ``n`` pairs for the standardized effect
    ``effect`` = mean difference / sd of the differences (noncentral t, df n-1, nc d·√n)."""
    return _power(n - 1, abs(effect) * math.sqrt(n), alpha)


def power_two_sample(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of a two-sided two-sample t-test with ``n`` seeds per group for
    ``effect`` = mean difference / sqrt of the mean of the two variances
    (noncentral t, df 2n-2, nc d·√(n/2))."""
    return _power(2 * n - 2, abs(effect) * math.sqrt(n / 2), alpha)


def _power(df: float, nc: float, alpha: float) -> float:
    """P(|T| > t_crit) for T noncentral t with ``df`` and ``nc``: both tails."""
    critical = t_quantile(1 - alpha / 2, df)
    return 1 - nct_cdf(critical, df, nc) + nct_cdf(-critical, df, nc)


def seeds_needed_paired(effect: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest number of seeds (pairs) with at least ``power`` to detect ``effect``;
    NaN when the effect is 0 or needs more than a million seeds."""
    return _smallest_n(lambda n: power_paired(effect, n, alpha), effect, power)


def seeds_needed_two_sample(effect: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """Seeds per group for an unpaired (Welch) design; see :func:`seeds_needed_paired`."""
    return _smallest_n(lambda n: power_two_sample(effect, n, alpha), effect, power)


def _smallest_n(power_at, effect: float, target: float) -> float:
    if effect == 0 or not math.isfinite(effect):
        return 2 if math.isinf(effect) else math.nan
    low, high = 1, 2  # power_at(low) < target <= power_at(high), power grows with n
    while power_at(high) < target:
        low, high = high, high * 2
        if high > _MAX_SEEDS:
            return math.nan
    while high - low > 1:
        middle = (low + high) // 2
        if power_at(middle) >= target:
            high = middle
        else:
            low = middle
    return high
