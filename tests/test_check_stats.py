"""The check's statistics and rules on constructed reports (fast; no runtime involved).

Golden values: the rank test against scipy.stats.mannwhitneyu and the exact McNemar test against
scipy.stats.binomtest where scipy is installed, and hand-computed values otherwise; the check's verdicts on
samples built with a known shift and on outcome vectors with known flips.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdmobile.errors import UsageError
from kdmobile.harness.check import compare, format_table, parse_threshold_overrides
from kdmobile.harness.report import SCHEMA, SCHEMA_VERSION, new_entry
from kdmobile.harness.stats import (
    binomial_upper_tail,
    hodges_lehmann,
    mann_whitney_greater,
    mcnemar_worse,
    pack_bits,
    shifted_mann_whitney,
    summarize,
    thin,
    unpack_bits,
)


def test_mann_whitney_small_case_by_hand():
    # x = [3, 5], y = [1, 2, 4]: ranks of x in [1,2,3,4,5] are 3 and 5 -> R1 = 8, U = 8 - 3 = 5 (of 6).
    u, p = mann_whitney_greater([3, 5], [1, 2, 4])
    assert u == 5.0
    # normal approximation: mean 3, var 2*3*6/12 = 3, z = (5 - 3 - 0.5)/sqrt(3)
    z = 1.5 / math.sqrt(3)
    assert p == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)), rel=1e-12)


def test_mann_whitney_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x = np.round(rng.lognormal(0.1, 0.3, 400), 2)  # rounding makes ties
    y = np.round(rng.lognormal(0.0, 0.3, 350), 2)
    u, p = mann_whitney_greater(x, y)
    ref = stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic", use_continuity=True)
    assert u == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_hodges_lehmann_is_the_median_of_pairwise_differences():
    import itertools
    import statistics

    rng = np.random.default_rng(2)
    x, y = rng.normal(0.7, 1, 41), rng.normal(0, 1, 37)
    brute = statistics.median(a - b for a, b in itertools.product(x.tolist(), y.tolist()))
    assert hodges_lehmann(x, y) == pytest.approx(brute, abs=1e-12)
    # Beyond max_pairs it sub-samples and stays close (a shift of 0.7 with noise sd 0.05).
    x, y = rng.normal(0.7, 0.05, 5000), rng.normal(0, 0.05, 5000)
    assert hodges_lehmann(x, y, max_pairs=250_000) == pytest.approx(0.7, abs=0.02)


def test_shifted_test_needs_more_than_the_margin():
    rng = np.random.default_rng(3)
    base = rng.normal(0.0, 0.05, 3000)
    # 10 % slower is real but under a 15 % margin: no regression however many samples.
    small = shifted_mann_whitney(rng.normal(math.log(1.10), 0.05, 3000), base, math.log(1.15))
    assert small.p_value > 0.5
    big = shifted_mann_whitney(rng.normal(math.log(1.30), 0.05, 3000), base, math.log(1.15))
    assert big.p_value < 1e-6
    assert math.exp(big.shift_estimate) == pytest.approx(1.30, rel=0.02)


def test_summarize_and_thin():
    s = summarize(np.arange(1, 101, dtype=float))
    assert (
        s["p50"] == pytest.approx(50.5)
        and s["p90"] == pytest.approx(90.1)
        and s["p99"] == pytest.approx(99.01)
    )
    assert s["mean"] == pytest.approx(50.5) and s["n"] == 100
    t = thin(np.arange(10_000, dtype=float), 100)
    assert len(t) == 100 and t[0] == 0 and t[-1] == 9999
    with pytest.raises(ValueError):
        summarize([])


# --- the check on constructed reports -----------------------------------------------------------------


N_EXAMPLES = 320
# 198 of 320 right (61.9 %), fixed: the outcomes every constructed entry starts from.
TOP1 = np.zeros(N_EXAMPLES, dtype=bool)
TOP1[np.random.default_rng(7).permutation(N_EXAMPLES)[:198]] = True


def _outcomes(top1=TOP1, fingerprint="f" * 64):
    return {
        "n": int(len(top1)),
        "eval_fingerprint": fingerprint,
        "top1": pack_bits(top1),
        "recall_at_3": pack_bits(np.ones(len(top1), dtype=bool)),
        "top1_class": [0] * len(top1),
    }


def _flip(top1, lose=0, gain=0, seed=0):
    """``top1`` with ``lose`` right examples made wrong and ``gain`` wrong ones made right."""
    rng = np.random.default_rng(seed)
    out = top1.copy()
    out[rng.choice(np.flatnonzero(top1), lose, replace=False)] = False
    out[rng.choice(np.flatnonzero(~top1), gain, replace=False)] = True
    return out


def _entry(eid, target, precision, *, ratio=0.3, noise=0.05, n=1500, seed=0, top1_outcomes=TOP1, **kw):
    rng = np.random.default_rng(seed)
    ratios = np.exp(rng.normal(math.log(ratio), noise, n))
    base = dict(
        id=eid,
        kind="artifact",
        target=target,
        precision=precision,
        runtime="rt",
        status="ok",
        size_bytes=1_000_000,
        latency_ms={"p50": ratio * 0.03, "p90": ratio * 0.033, "p99": ratio * 0.04, "mean": 0.0, "std": 0.0},
        ratio_samples=ratios.tolist(),
        ratio_reference="ref",
        top1=float(top1_outcomes.mean()),
        recall_at_3=1.0,
        retention=0.97,
        outcomes=_outcomes(top1_outcomes),
    )
    base.update(kw)
    return new_entry(**base)


def _report(entries, machine_class="x86_64-test-2c", versions=None):
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "machine": {"machine_class": machine_class},
        "versions": versions or {"torch": "2.13.0", "onnxruntime": "1.32.0"},
        "teacher": None,
        "student": None,
        "artifacts": entries,
    }


def _verdicts(result):
    return {(r.entry, r.metric): r.verdict for r in result.rows}


def test_unchanged_report_passes():
    base = _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=1)])
    now = _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=2)])
    res = compare(now, base)
    assert res.ok, format_table(res, verbose=True)
    assert _verdicts(res)[("onnx-web fp32", "latency ratio")] == "ok"


def test_latency_regression_on_ratio_not_on_absolute_time():
    base = _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=1)])
    # A 2x slower machine: absolute latency doubles, the same-run ratio does not -> passes, flagged.
    slow_machine = _report(
        [_entry("a/fp32/rt", "onnx-web", "fp32", seed=2, latency_ms={"p50": 0.018})], "other-4c"
    )
    res = compare(slow_machine, base)
    assert res.ok and any("machine class" in n for n in res.notes)
    # A slower artifact: the ratio grows by 40 % -> regression.
    slower = _report([_entry("a/fp32/rt", "onnx-web", "fp32", ratio=0.42, seed=3)])
    res = compare(slower, base)
    assert not res.ok
    assert _verdicts(res)[("onnx-web fp32", "latency ratio")] == "REGRESSION"
    row = next(r for r in res.rows if r.metric == "latency ratio")
    assert row.change == "+40.0%" or abs(float(row.change.rstrip("%")) - 40) < 2


def test_mcnemar_exact_by_hand_and_against_scipy():
    assert binomial_upper_tail(7, 7) == 2.0**-7  # 7 losses, no gain: p = 1/128
    assert binomial_upper_tail(6, 7) == 8 / 128  # 6 of 7 flips are losses: (C(7,6) + C(7,7)) / 2^7
    assert binomial_upper_tail(0, 0) == 1.0 and binomial_upper_tail(3, 2) == 0.0
    base = np.array([1, 1, 1, 0, 0, 1], dtype=bool)
    now = np.array([0, 1, 0, 1, 0, 1], dtype=bool)
    t = mcnemar_worse(base, now)
    assert t.lost == (0, 2) and t.gained == (3,) and t.net_drop == pytest.approx(1 / 6)
    assert t.p_value == pytest.approx(4 / 8) and t.p_gain == pytest.approx(7 / 8)
    assert mcnemar_worse(base, base).p_value == 1.0  # a reproducible artifact: no flip, no evidence
    assert unpack_bits(pack_bits(base)).tolist() == base.tolist() and pack_bits(base) == "111001"
    stats = pytest.importorskip("scipy.stats")
    for lost, gained in ((7, 0), (12, 5), (30, 18), (3, 9)):
        ref = stats.binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue
        assert binomial_upper_tail(lost, lost + gained) == pytest.approx(ref, rel=1e-12)


def test_accuracy_is_judged_on_the_examples_that_flipped():
    base = _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=1)])

    def verdict(top1, **kw):
        res = compare(
            _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=2, top1_outcomes=top1)]), base, **kw
        )
        row = next(r for r in res.rows if r.metric == "top1")
        return row.verdict, row.detail

    # The same examples right: ok, p = 1.
    assert verdict(TOP1) == ("ok", "0 lost, 0 gained of 320, p=1")
    # Two flipped (the int8 false alarm of a fixed 0.5-point rule): within noise.
    assert verdict(_flip(TOP1, lose=2))[0] == "ok"
    # A 2-point drop, 7 examples lost and none gained: p = 1/128 < 0.01; the lost ids are listed.
    worse = _flip(TOP1, lose=7, seed=3)
    v, detail = verdict(worse)
    lost = np.flatnonzero(TOP1 & ~worse)
    assert v == "REGRESSION" and detail.startswith("7 lost, 0 gained of 320, p=0.0078")
    assert all(f"#{i}" in detail for i in lost)
    # The same net drop hidden in churn (15 lost, 8 gained): not significant on 320 examples.
    assert verdict(_flip(TOP1, lose=15, gain=8, seed=4))[0] == "ok"
    # Significant but under the minimum effect: with accuracy_pt = 3, a 2.2-point drop passes.
    assert verdict(worse, overrides=parse_threshold_overrides(["accuracy_pt=3"]))[0] == "ok"
    assert verdict(_flip(TOP1, gain=8, seed=5))[0] == "improved"


def test_a_baseline_without_per_example_outcomes_is_refused():
    base = _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=1)])
    base["artifacts"][0]["outcomes"] = None
    now = _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=2)])
    with pytest.raises(UsageError, match="no per-example outcomes.*Re-take it.*kdmobile baseline update"):
        compare(now, base)


def test_ratios_to_another_reference_are_refused_with_the_retake_command():
    base = _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=1)])
    now = _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=2, ratio_reference="other")])
    with pytest.raises(
        UsageError, match=r"a/fp32/rt: 'ref' in the baseline, 'other' now.*kdmobile baseline update"
    ):
        compare(now, base)
    # Out of scope (--only another entry), or not measured now: nothing to compare, nothing refused.
    other = _report([_entry("b/fp32/rt", "onnx-web", "fp32", seed=1)])
    assert compare(_report([_entry("b/fp32/rt", "onnx-web", "fp32", seed=2)]), other).ok
    now["artifacts"][0]["status"] = "run_failed"
    assert not compare(now, base).ok  # judged on its status instead


def test_retention_size_and_status_rules():
    base = _report(
        [
            _entry("a/fp32/rt", "onnx-web", "fp32", seed=1),
            _entry("b/int8/rt", "tflite", "int8", seed=4),
            _entry("c/fp32/rt", "executorch", "fp32", seed=5),
        ]
    )
    now = _report(
        [
            _entry("a/fp32/rt", "onnx-web", "fp32", seed=2, retention=0.97 - 0.04),
            _entry("b/int8/rt", "tflite", "int8", seed=6, size_bytes=1_060_000, status="ok"),
        ]
    )
    res = compare(now, base)
    v = _verdicts(res)
    assert v[("onnx-web fp32", "retention")] == "ok"  # judged through top1 (unchanged here)
    assert v[("tflite int8", "size")] == "REGRESSION"  # +6 % > 5 %
    assert v[("executorch fp32", "status")] == "REGRESSION"  # missing
    table = format_table(res)
    assert "REGRESSION" in table and "2 regressions" in table and "alpha=0.01" in table


def test_thresholds_from_the_command_line_override():
    base = _report([_entry("b/int8/rt", "tflite", "int8", seed=4)])
    now = _report([_entry("b/int8/rt", "tflite", "int8", seed=6, size_bytes=1_060_000)])
    assert not compare(now, base).ok
    assert compare(now, base, overrides=parse_threshold_overrides(["tflite.size_pct=10"])).ok
    assert compare(now, base, overrides=parse_threshold_overrides(["size_pct=7"])).ok
    assert not compare(now, base, overrides=parse_threshold_overrides(["onnx-web.size_pct=10"])).ok
    for bad in ("size=3", "tflite.size_pct", "tflite.size_pct=abc", "latency_pct=-1"):
        with pytest.raises(UsageError):
            parse_threshold_overrides([bad])


def test_ok_then_failing_is_a_regression_and_only_scopes():
    base = _report(
        [_entry("a/fp32/rt", "onnx-web", "fp32", seed=1), _entry("c/fp32/rt", "executorch", "fp32", seed=5)]
    )
    now = _report(
        [
            _entry("a/fp32/rt", "onnx-web", "fp32", seed=2),
            _entry("c/fp32/rt", "executorch", "fp32", status="run_failed", reason="boom"),
        ]
    )
    res = compare(now, base)
    assert _verdicts(res)[("executorch fp32", "status")] == "REGRESSION"
    assert compare(now, base, only=["a/"]).ok
    with pytest.raises(UsageError):
        compare(now, base, only=["nothing/"])


def test_other_tool_versions_are_flagged():
    base = _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=1)])
    now = _report(
        [_entry("a/fp32/rt", "onnx-web", "fp32", seed=2)],
        versions={"torch": "2.14.0", "onnxruntime": "1.32.0"},
    )
    res = compare(now, base)
    assert res.ok and not res.comparable_machine
    assert any("torch 2.13.0 -> 2.14.0" in n for n in res.notes)


def test_other_evaluation_data_is_flagged_and_accuracy_not_judged():
    base = _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=1)])
    now = _report([_entry("a/fp32/rt", "onnx-web", "fp32", seed=2, top1_outcomes=_flip(TOP1, lose=100))])
    base["eval_fingerprint"], now["eval_fingerprint"] = "a" * 64, "b" * 64
    res = compare(now, base)
    assert not res.ok
    v = _verdicts(res)
    assert v[("evaluation set", "data")] == "REGRESSION"
    assert ("onnx-web fp32", "top1") not in v  # not comparable, so not judged
    assert v[("onnx-web fp32", "latency ratio")] == "ok"


def test_per_example_outcomes_average_to_the_task_metrics():
    from kdmobile.harness.bench import outcomes
    from kdmobile.tasks.email.metrics import compute

    rng = np.random.default_rng(8)
    logits = rng.normal(size=(320, 12)).round(1)  # rounding makes ties: both must break them the same way
    teacher = rng.normal(size=(320, 12))
    acceptable = [rng.choice(12, size=rng.integers(1, 4), replace=False).tolist() for _ in range(320)]
    per = outcomes(logits, acceptable, teacher)
    m = compute(logits, acceptable, teacher)
    assert per["top1"].mean() == pytest.approx(m["top1"], abs=1e-12)
    assert per["recall_at_3"].mean() == pytest.approx(m["recall_at_3"], abs=1e-12)
    assert per["teacher_agreement"].mean() == pytest.approx(m["teacher_agreement"], abs=1e-12)
    assert per["top1_class"].tolist() == logits.argmax(1).tolist()
