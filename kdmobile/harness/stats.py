"""Latency statistics: percentile summaries and the one-sided rank test ``kdmobile check`` uses.

    from kdmobile.harness.stats import summarize, shifted_mann_whitney
    summarize([0.021, 0.020, 0.025])              # {"p50": ..., "p90": ..., ...}
    shifted_mann_whitney(now, base, shift=math.log(1.15))   # is `now` slower than `base` by > 15 %?

Pure numpy (scipy is not a dependency); ``tests/test_check_stats.py`` checks the rank test against
``scipy.stats.mannwhitneyu`` where scipy happens to be installed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PERCENTILES = (50, 90, 99)


def summarize(samples_ms: Sequence[float] | np.ndarray) -> dict[str, float | int]:
    """p50/p90/p99/mean/std/min/max and the run count of a list of per-run latencies (ms)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latency samples")
    p50, p90, p99 = np.percentile(a, PERCENTILES)
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min": float(a.min()),
        "max": float(a.max()),
        "n": int(a.size),
    }


def thin(samples: Sequence[float] | np.ndarray, max_count: int, significant: int = 6) -> list[float]:
    """At most ``max_count`` samples, evenly spaced in time order (keeps drift visible, bounds file size),
    rounded to ``significant`` digits (far below timer noise)."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size > max_count:
        a = a[np.linspace(0, a.size - 1, max_count).round().astype(np.int64)]
    return [float(f"{x:.{significant}g}") for x in a]


def _rankdata(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) of ``a`` and the sizes of its tie groups."""
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    # Start index of every run of equal values.
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    counts = np.diff(np.append(starts, s.size))
    avg = starts + (counts + 1) / 2.0  # mean of 1-based ranks start+1 .. start+count
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, counts)
    return ranks, counts


@dataclass(frozen=True)
class RankTest:
    """Result of :func:`shifted_mann_whitney`."""

    u: float
    p_value: float
    shift_estimate: float  # Hodges-Lehmann estimate of (x - y), before subtracting `shift`
    n_x: int
    n_y: int


def mann_whitney_greater(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """One-sided Mann-Whitney U test, H1: ``x`` is stochastically greater than ``y``.

    Normal approximation with tie correction and continuity correction (the large-sample form; the harness
    always has hundreds of samples). Returns ``(U_x, p_value)``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n1, n2 = x.size, y.size
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    ranks, ties = _rankdata(np.concatenate([x, y]))
    u = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    n = n1 + n2
    mean = n1 * n2 / 2.0
    tie_term = float((ties.astype(np.float64) ** 3 - ties).sum()) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:  # every value equal: no evidence either way
        return u, 1.0
    z = (u - mean - 0.5) / math.sqrt(var)
    return u, 0.5 * math.erfc(z / math.sqrt(2.0))


def hodges_lehmann(x: np.ndarray, y: np.ndarray, max_pairs: int = 4_000_000, seed: int = 0) -> float:
    """Median of all pairwise differences ``x_i - y_j`` (sub-sampled beyond ``max_pairs``)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size * y.size > max_pairs:
        rng = np.random.default_rng(seed)
        k = int(math.sqrt(max_pairs))
        x = rng.choice(x, size=min(k, x.size), replace=False)
        y = rng.choice(y, size=min(k, y.size), replace=False)
    return float(np.median(x[:, None] - y[None, :]))


def shifted_mann_whitney(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, shift: float
) -> RankTest:
    """Test H1: ``x`` exceeds ``y + shift`` (e.g. log-latencies, ``shift = log(1.15)`` for "> 15 % slower").

    A small p-value means the evidence says ``x`` is larger than ``y`` by more than ``shift``; noise alone
    (however many samples) does not give one unless the true difference exceeds ``shift``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    u, p = mann_whitney_greater(x, y + shift)
    return RankTest(u=u, p_value=p, shift_estimate=hodges_lehmann(x, y), n_x=int(x.size), n_y=int(y.size))
