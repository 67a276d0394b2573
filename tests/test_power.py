"""The power benchmark's injections and tally on constructed reports (fast); the benchmark itself runs real
benches (`make bench-check`)."""

from __future__ import annotations

import numpy as np
from test_check_stats import TOP1, _entry, _report

from kdmobile.harness.check import compare
from kdmobile.harness.stats import unpack_bits
from kdmobile.tasks.selftest.power import degraded, slowed, summarize


def test_injected_drop_turns_exactly_k_right_examples_wrong_and_is_caught():
    base = _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=1)])
    now = _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=2)])
    rep, k = degraded(now, 2.0, seed=3)
    assert k == 7  # ceil(2 % of 320 = 6.4)
    after = unpack_bits(rep["artifacts"][0]["outcomes"]["top1"])
    assert int((TOP1 & ~after).sum()) == 7 and not (~TOP1 & after).any()
    assert now["artifacts"][0]["outcomes"]["top1"] != rep["artifacts"][0]["outcomes"]["top1"]  # a copy
    row = next(r for r in compare(rep, base).rows if r.metric == "top1")
    assert row.verdict == "REGRESSION"
    assert degraded(now, 1.0, seed=3)[1] == 4 and degraded(now, 5.0, seed=3)[1] == 16


def test_injected_slowdown_moves_the_ratios_and_is_caught():
    base = _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=1)])
    now = _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=2)])
    rep = slowed(now, 1.5)
    ratio = np.array(rep["artifacts"][0]["ratio_samples"]) / np.array(now["artifacts"][0]["ratio_samples"])
    assert np.allclose(ratio, 1.5)
    assert next(r for r in compare(rep, base).rows if r.metric == "latency ratio").verdict == "REGRESSION"
    assert compare(now, base).ok


def test_summary_counts_false_alarms_and_detections():
    rec = {
        "condition": "quiet",
        "check": 0,
        "unchanged": {"ok": True},
        "+50% latency (injected)": {"a": "REGRESSION", "b": "ok"},
        "-2 pt top-1 (injected)": {"a": "REGRESSION", "_examples": "7"},
    }
    s = summarize([rec, {**rec, "check": 1, "unchanged": {"ok": False}}], alpha=0.01)
    rows = {r["case"]: r for r in s["rows"]}
    assert (rows["unchanged"]["flagged"], rows["unchanged"]["of"]) == (1, 2)
    assert (rows["+50% latency (injected)"]["flagged"], rows["+50% latency (injected)"]["of"]) == (2, 4)
    assert rows["-2 pt top-1 (injected)"]["of"] == 2 and not s["ok"]
