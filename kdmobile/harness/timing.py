"""Latency and memory measurement: warm-up, then interleaved timed blocks of the artifact and a reference.

    from kdmobile.harness.timing import measure_latency
    lat = measure_latency(lambda: run(ids), reference=lambda: eager(ids_t), min_runs=200, min_seconds=10)
    lat.summary()["p50"], lat.ratio_p50   # ms, and the median per-block ratio to the reference

Why interleave: the machine is shared and its speed drifts (other processes, frequency, thermal). Blocks of
the artifact and of the reference alternate (~``block_seconds`` each, starting and ending with a reference
block), and each artifact block gives one ratio: the median of its runs divided by the geometric mean of
the medians of the two reference blocks around it, so drift slower than a block cancels out, linear drift
included. One ratio per block (not per run) because runs inside a block share the machine's state: they
are not independent evidence, and a test that counted them as such would see significance in a load
spike. ``kdmobile check`` tests these per-block ratios against the baseline's.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdmobile.harness.stats import summarize

MIN_BLOCKS = 30  # per entry; `kdmobile check` judges latency on at least 20 blocks (check.MIN_SAMPLES)


@dataclass
class Latency:
    """Per-run samples (ms) of one measurement and its per-block ratios (empty without a reference)."""

    samples_ms: np.ndarray
    ref_samples_ms: np.ndarray = field(default_factory=lambda: np.empty(0))
    ratios: np.ndarray = field(default_factory=lambda: np.empty(0))
    rounds: int = 0
    seconds: float = 0.0
    warmup_runs: int = 0

    def summary(self) -> dict[str, float | int]:
        return summarize(self.samples_ms)

    @property
    def ratio_p50(self) -> float | None:
        return float(np.median(self.ratios)) if self.ratios.size else None


def _warm_up(call: Callable[[], Any], warmup_runs: int) -> int:
    """Untimed runs: at least ``warmup_runs`` and at least 50 ms (allocator, caches, lazy kernel selection)."""
    runs = 0
    t0 = time.perf_counter()
    while runs < warmup_runs or time.perf_counter() - t0 < 0.05:
        call()
        runs += 1
    return runs


def _median_block(call: Callable[[], Any], seconds: float, out: list[int]) -> float:
    """Run ``call`` for ``seconds`` of wall time (at least once); append each run's ns; their median.

    Blocks are timed by the wall clock, not by a run count fixed at warm-up: on a loaded machine a run
    takes several times longer than it did then, and a fixed count would stretch every block (measured
    here: 7 blocks instead of 50 in a 1 s window with ten runnable processes on 2 cores).
    """
    clock = time.perf_counter_ns
    first = len(out)
    end = clock() + int(seconds * 1e9)
    while True:
        t0 = clock()
        call()
        t1 = clock()
        out.append(t1 - t0)
        if t1 >= end:
            break
    return float(np.median(out[first:]))


def bracketed_ratios(block_medians: Sequence[float], ref_medians: Sequence[float]) -> np.ndarray:
    """One ratio per artifact block: its median over the geometric mean of the reference blocks before and
    after it (``ref_medians`` has one more entry than ``block_medians``: the blocks alternate R A R A R)."""
    a = np.asarray(block_medians, dtype=np.float64)
    r = np.asarray(ref_medians, dtype=np.float64)
    if r.size != a.size + 1:
        raise ValueError(
            f"{a.size} artifact blocks need {a.size + 1} reference blocks around them, got {r.size}"
        )
    return a / np.sqrt(r[:-1] * r[1:])


def measure_latency(
    call: Callable[[], Any],
    *,
    reference: Callable[[], Any] | None = None,
    warmup_runs: int = 20,
    min_runs: int = 200,
    min_seconds: float = 10.0,
    max_seconds: float | None = None,
    block_seconds: float = 0.01,
    min_blocks: int = MIN_BLOCKS,
) -> Latency:
    """Time ``call()`` until at least ``min_runs`` runs, ``min_blocks`` blocks and ``min_seconds`` of wall
    time have passed.

    Args:
        call: the exact call to time (e.g. ``lambda: runtime(ids)``), inputs prepared beforehand.
        reference: a call measured in alternating blocks with ``call`` (the same-run reference).
        warmup_runs: untimed runs before measuring (at least 50 ms of them).
        min_runs: the least number of timed runs of ``call``.
        min_seconds: the least wall time of the measurement loop (artifact and reference blocks together).
        max_seconds: stop after this much wall time even if ``min_runs`` is not reached (at least 3 runs).
        block_seconds: the length of one block; drift slower than this cancels in the ratios.
        min_blocks: the least number of artifact blocks (ratios): the statistical unit of the check, so a
            loaded machine (where a 10 ms block stretches to 20-40 ms) measures longer, not with fewer.

    Returns:
        the per-run samples of ``call`` and of ``reference`` and the per-block ratios.
    """
    warm = _warm_up(call, warmup_runs)
    if reference is not None:
        _warm_up(reference, warmup_runs)
    samples: list[int] = []
    ref_samples: list[int] = []
    art_medians: list[float] = []
    ref_medians: list[float] = []
    rounds = 0
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # a collection inside a timed call is noise, not the model's cost
    start = time.perf_counter()
    try:
        if reference is not None:
            ref_medians.append(_median_block(reference, block_seconds, ref_samples))
        while True:
            elapsed = time.perf_counter() - start
            if len(samples) >= min_runs and elapsed >= min_seconds and rounds >= min_blocks:
                break
            if max_seconds is not None and elapsed >= max_seconds and len(samples) >= 3:
                break
            art_medians.append(_median_block(call, block_seconds, samples))
            if reference is not None:
                ref_medians.append(_median_block(reference, block_seconds, ref_samples))
            rounds += 1
    finally:
        seconds = time.perf_counter() - start
        if gc_was_enabled:
            gc.enable()
    ratios = bracketed_ratios(art_medians, ref_medians) if reference is not None else np.empty(0)
    return Latency(
        samples_ms=np.asarray(samples, dtype=np.float64) * 1e-6,
        ref_samples_ms=np.asarray(ref_samples, dtype=np.float64) * 1e-6,
        ratios=ratios,
        rounds=rounds,
        seconds=seconds,
        warmup_runs=warm,
    )


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and its wall time in ms (for one-off costs such as loading)."""
    t0 = time.perf_counter_ns()
    out = fn()
    return out, (time.perf_counter_ns() - t0) * 1e-6


# --- memory -------------------------------------------------------------------------------------------


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int | None:
    """Current resident set size of this process."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux ``clear_refs``); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """This process's RSS high-water mark since start or the last :func:`reset_peak_rss`."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return None


class PeakMemory:
    """Peak extra resident memory over a ``with`` block (e.g. loading and running one artifact).

    ``peak_bytes`` = the high-water mark inside the block minus the RSS at its start; ``None`` if the OS
    cannot reset the high-water mark (the figure would then include everything before the block).
    """

    def __init__(self) -> None:
        self.start: int | None = None
        self.peak_bytes: int | None = None
        self._reset = False

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self._reset = reset_peak_rss()
        self.start = rss_bytes()
        return self

    def sample(self) -> None:
        """Update ``peak_bytes`` now (call it at the end of the block or at points of interest)."""
        peak = peak_rss_bytes()
        if self._reset and peak is not None and self.start is not None:
            self.peak_bytes = max(self.peak_bytes or 0, peak - self.start)

    def __exit__(self, *exc: object) -> None:
        self.sample()
