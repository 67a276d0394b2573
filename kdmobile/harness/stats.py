"""The statistics ``kdmobile check`` uses: percentile summaries, the one-sided rank test on latency ratios
and the exact paired (McNemar) test on per-example accuracy outcomes.

    from kdmobile.harness.stats import summarize, shifted_mann_whitney, mcnemar_worse
    summarize([0.021, 0.020, 0.025])              # {"p50": ..., "p90": ..., ...}
    shifted_mann_whitney(now, base, shift=math.log(1.15))   # is `now` slower than `base` by > 15 %?
    mcnemar_worse(base_correct, now_correct)      # did the same examples get worse? (exact, one-sided)

Pure numpy (scipy is not a dependency); ``tests/test_check_stats.py`` checks both tests against
``scipy.stats`` where scipy happens to be installed, and against hand-computed values otherwise.
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


# --- per-example accuracy outcomes ----------------------------------------------------------------------


def pack_bits(flags: Sequence[bool] | np.ndarray) -> str:
    """Per-example booleans as a string of ``0``/``1`` (example ``i`` is character ``i``): compact, and a
    baseline diff shows which examples flipped."""
    return "".join("1" if f else "0" for f in np.asarray(flags, dtype=bool).tolist())


def unpack_bits(bits: str) -> np.ndarray:
    """Inverse of :func:`pack_bits`; ``ValueError`` on any character other than ``0``/``1``."""
    if set(bits) - {"0", "1"}:
        raise ValueError("per-example outcomes must be a string of 0 and 1")
    return np.frombuffer(bits.encode("ascii"), dtype=np.uint8) == ord("1")


def binomial_upper_tail(k: int, n: int) -> float:
    """Exact ``P(X >= k)`` for ``X ~ Binomial(n, 1/2)`` (integer arithmetic, then one division)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n


@dataclass(frozen=True)
class PairedTest:
    """Result of :func:`mcnemar_worse` on two outcome vectors over the same examples."""

    n: int
    lost: tuple[int, ...]  # example indices right in the baseline, wrong now
    gained: tuple[int, ...]  # wrong in the baseline, right now
    p_value: float  # one-sided: P(at least len(lost) of the flips are losses | flips are coin tosses)
    p_gain: float  # the same for gains (an improvement)

    @property
    def net_drop(self) -> float:
        """(losses - gains) / n: the accuracy drop as a fraction (0.02 = 2 points)."""
        return (len(self.lost) - len(self.gained)) / self.n if self.n else 0.0


def mcnemar_worse(base: Sequence[bool] | np.ndarray, now: Sequence[bool] | np.ndarray) -> PairedTest:
    """Exact one-sided McNemar test, H1: ``now`` is right on fewer of the same examples than ``base``.

    Only the discordant examples carry information: under H0 (no change) each flip is a loss or a gain
    with probability 1/2, so the number of losses among ``b + c`` flips is Binomial(b + c, 1/2). An
    unchanged, reproducible artifact has no flips at all (p = 1); a 2-point drop on 320 examples with no
    gain elsewhere (7 losses) gives p = 2^-7 = 0.0078.
    """
    b = np.asarray(base, dtype=bool)
    c = np.asarray(now, dtype=bool)
    if b.shape != c.shape or b.ndim != 1:
        raise ValueError(f"outcome vectors differ in shape: {b.shape} vs {c.shape}")
    lost = tuple(int(i) for i in np.flatnonzero(b & ~c))
    gained = tuple(int(i) for i in np.flatnonzero(~b & c))
    flips = len(lost) + len(gained)
    return PairedTest(
        n=int(b.size),
        lost=lost,
        gained=gained,
        p_value=binomial_upper_tail(len(lost), flips),
        p_gain=binomial_upper_tail(len(gained), flips),
    )
