"""Statistics of the experiment: summaries, standard errors, reliability, percentiles and Kendall's tau-b.

Plain Python on lists of floats (no SciPy): a few dozen cells at most.
"""
from __future__ import annotations

import math
import statistics


def summarize(values: list[float]) -> dict[str, float]:
    """Count, mean, sample std (0 for one value), min, median and max."""
    return {"n": len(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "median": statistics.median(values), "max": max(values)}


def standard_error(values: list[float]) -> float | None:
    """Standard error of the mean, ``stdev / sqrt(n)``; None for fewer than two values (undefined)."""
    if len(values) < 2:
        return None
    return statistics.stdev(values) / math.sqrt(len(values))


def pooled_standard_error(groups: list[list[float]]) -> float | None:
    """Standard error of one group's mean from the spread inside every group (the retraining noise).

    The within-group variances are pooled (each weighted by its ``n - 1``) and
    divided by the mean group size: with R retrainings per cell this is how far
    a cell's mean of R runs moves from retraining noise alone. None when no
    group has two values.
    """
    sized = [g for g in groups if len(g) > 1]
    if not sized:
        return None
    return math.sqrt(_pooled_variance(sized) / statistics.fmean(len(g) for g in sized))


def _pooled_variance(sized: list[list[float]]) -> float:
    """The within-group variances of groups with two or more values, pooled by their ``n - 1`` (MSW)."""
    return sum((len(g) - 1) * statistics.variance(g) for g in sized) / sum(len(g) - 1 for g in sized)


def reliability_of_means(groups: list[list[float]]) -> float | None:
    """How much of the spread among group means is not noise: ICC(1, k) of a one-way random-effects ANOVA.

    With the groups being cells and their values retrainings, this is the reliability of a
    cell's mean of ``k`` retrainings (``k`` the mean group size): the share of the variance of
    the cell means that comes from the cells rather than from retraining noise, which is also
    the correlation expected between two independent sets of ``k`` retrainings of the same cells.
    1 means the budget ranks these cells repeatably, 0 (or below: the estimate is unbiased, not
    clipped) that their ranking is noise. For equal group sizes it is ``(MSB - MSW) / MSB``;
    unequal sizes use the usual ``n0`` correction for ICC(1) and then Spearman-Brown to ``k``.
    None when undefined: fewer than two groups, no group with two values, or no spread at all.
    """
    groups = [g for g in groups if g]
    sized = [g for g in groups if len(g) > 1]
    if len(groups) < 2 or not sized:
        return None
    total = sum(len(g) for g in groups)
    grand = sum(sum(g) for g in groups) / total
    ms_between = sum(len(g) * (statistics.fmean(g) - grand) ** 2 for g in groups) / (len(groups) - 1)
    ms_within = _pooled_variance(sized)
    n0 = (total - sum(len(g) ** 2 for g in groups) / total) / (len(groups) - 1)
    denominator = ms_between + (n0 - 1) * ms_within
    if denominator <= 0:
        return None
    icc1 = (ms_between - ms_within) / denominator
    k = total / len(groups)
    spearman_brown = 1 + (k - 1) * icc1
    return k * icc1 / spearman_brown if spearman_brown > 0 else None


def percentile_among(value: float, population: list[float]) -> float:
    """Percentage of ``population`` below ``value``, ties counting half (50 = the median).

    Raises:
        ValueError: for an empty population.
    """
    if not population:
        raise ValueError("percentile among an empty population")
    below = sum(p < value for p in population)
    ties = sum(p == value for p in population)
    return 100.0 * (below + 0.5 * ties) / len(population)


def kendall_tau_b(x: list[float], y: list[float]) -> float | None:
    """Kendall's rank correlation tau-b of paired values (ties in either list allowed).

    ``(C - D) / sqrt((n0 - n1) * (n0 - n2))`` over the ``n0 = n(n-1)/2`` pairs:
    ``C``/``D`` concordant/discordant pairs, ``n1``/``n2`` the pairs tied in
    ``x``/``y``. None when it is undefined (fewer than two items, or every
    value of one list tied).

    Raises:
        ValueError: if the lists differ in length.
    """
    if len(x) != len(y):
        raise ValueError(f"kendall_tau_b of {len(x)} and {len(y)} values")
    concordant = discordant = tied_x = tied_y = pairs = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            pairs += 1
            tied_x += dx == 0
            tied_y += dy == 0
            sign = dx * dy
            concordant += sign > 0
            discordant += sign < 0
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    return (concordant - discordant) / denominator if denominator > 0 else None
