"""Latency and memory measurement on real work (numpy), no runtime mocks.

The timing assertions are on same-run ratios of calls whose cost ratio is known by construction, with wide
margins; no absolute time is asserted.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from kdmobile.harness.timing import PeakMemory, measure_latency, timed


def _work(times: int) -> None:
    # Pure-Python arithmetic: single-threaded and steady (BLAS thread pools would add their own noise).
    for _ in range(times):
        sum(i * i for i in range(300))


def test_measure_latency_keeps_min_runs_and_window():
    lat = measure_latency(lambda: _work(1), min_runs=300, min_seconds=0.2, warmup_runs=5)
    s = lat.summary()
    assert s["n"] >= 300 and lat.seconds >= 0.2
    assert s["p50"] <= s["p90"] <= s["p99"] and s["min"] > 0
    assert lat.ratios.size == 0 and lat.ratio_p50 is None


def test_interleaved_ratio_cancels_a_machine_slowdown():
    # Part-way through, the "machine" gets 3x slower for both calls; the artifact does twice the
    # reference's work throughout. Absolute times move 3x; the same-run ratio stays near 2.
    # The switch is armed when measuring starts (the first artifact call after the reference's warm-up),
    # not at a fixed time from the test's start: under load the warm-ups alone can outlast any fixed delay.
    state = {"factor": 1, "ref_seen": False, "switch_at": None, "art_factors": []}

    def ref():
        state["ref_seen"] = True
        if (
            state["switch_at"] is not None
            and state["factor"] == 1
            and time.perf_counter() > state["switch_at"]
        ):
            state["factor"] = 3
        _work(state["factor"])

    def art():
        if state["ref_seen"] and state["switch_at"] is None:
            state["switch_at"] = time.perf_counter() + 1.5  # half of min_seconds
        state["art_factors"].append(state["factor"])
        _work(2 * state["factor"])

    lat = measure_latency(art, reference=ref, min_runs=400, min_seconds=3.0, block_seconds=0.01)
    # The slowdown is known by construction: which timed artifact calls ran at 3x is recorded, so the
    # test does not have to read it back from absolute times (a shared CI runner moves those by itself:
    # one run saw a 1.7x early/late median where 3x work was done).
    timed_factors = np.array(state["art_factors"][-lat.samples_ms.size :])
    slow = timed_factors == 3
    assert 0.15 < slow.mean() < 0.85, "the slowdown did not split the measurement"
    # Absolute times did move with the work (a loose bound: load noise alone is not 3x on medians).
    assert np.median(lat.samples_ms[slow]) / np.median(lat.samples_ms[~slow]) > 1.3
    # One ratio per artifact block (rounds), each between two reference blocks.
    assert lat.ratios.size == lat.rounds >= 5
    q = lat.ratios.size // 5
    r_early, r_late = np.median(lat.ratios[:q]), np.median(lat.ratios[-q:])
    assert 1.5 < r_early < 2.7 and 1.5 < r_late < 2.7
    assert abs(np.log(r_late / r_early)) < np.log(1.3)


def test_peak_memory_counts_what_the_block_allocates():
    before = np.ones(8 * 1024 * 1024)  # 64 MB allocated before the block: not counted
    with PeakMemory() as mem:
        inside = np.ones(16 * 1024 * 1024)  # 128 MB touched inside
        inside[::4096] = 2.0
        del inside
    if mem.peak_bytes is None:
        pytest.skip("this kernel cannot reset the RSS high-water mark (/proc/self/clear_refs)")
    assert 120e6 < mem.peak_bytes < 190e6
    assert before.sum() > 0


def test_timed_returns_value_and_ms():
    value, ms = timed(lambda: sum(range(1000)))
    assert value == 499500 and ms > 0


def test_bracketed_ratios_cancel_a_steady_drift():
    from kdmobile.harness.timing import bracketed_ratios

    # The machine slows by 10 % per block (R A R A R ...); the artifact costs 2x the reference throughout.
    speed = 1.1 ** np.arange(9)
    ref, art = speed[0::2], 2 * speed[1::2]  # 5 reference blocks around 4 artifact blocks
    assert np.allclose(bracketed_ratios(art, ref), 2.0)
    with pytest.raises(ValueError):
        bracketed_ratios(art, ref[:-1])
