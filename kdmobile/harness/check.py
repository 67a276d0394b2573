"""Compare a fresh bench report with a committed baseline; a regression fails the check (exit 1).

    kdmobile check build/report/report.json --baseline baselines/email-x86_64-amd-epyc-2c.json

What counts as a regression, per entry (matched on ``id``, e.g. ``executorch/int8/executorch (XNNPACK)``):

- **status**: ok (or ``conversion_validated``) in the baseline, now failing or missing;
- **latency**: judged on *same-run ratios* (the artifact timed in blocks interleaved with a fixed
  reference model in the same runtime and process: an ONNX model in the browser page and for
  onnxruntime, the same network exported through the target for ExecuTorch, LiteRT and other Python
  runtimes; one ratio per block), never on absolute time, so a slower or busier machine does not fail
  the check but a slower artifact does. The test is a one-sided Mann-Whitney U over the per-block log-ratios shifted by
  the threshold: regression if the evidence says the ratio grew by more than ``latency_pct`` (p <
  ``alpha``), so noise alone does not fail it however many blocks there are (in-browser runs use
  ``browser_latency_pct``). Ratios to another reference (``ratio_reference``: the reference model's
  sha256 and converter versions) are refused (exit 2, saying how to re-take the baseline): a skip would
  pass a real slowdown silently, a REGRESSION would blame the artifact for the yardstick's change;
- **accuracy** (top-1, recall@3, teacher agreement): a paired test on the same examples. The exact
  one-sided McNemar test counts the examples that flipped (right → wrong: lost; wrong → right: gained);
  regression if the losses are significant (p < ``alpha``) *and* the net drop exceeds ``accuracy_pt``
  points. The lost and gained example indices are listed. Retention (top-1 / teacher top-1) is shown and
  judged through top-1 and the teacher's own entry. A baseline without per-example outcomes is refused;
- **size**: relative growth > ``size_pct``.

The false-alarm rate: each test is one-sided at ``alpha`` (default 0.01) when the true change sits exactly
at its threshold, and far lower for an unchanged artifact (a reproducible export has no flipped example,
so p = 1; a latency ratio must also move past its margin). Measured rates: ``make bench-check``
(docs/ci.md).

Thresholds: ``DEFAULT_CHECK_THRESHOLDS`` < the target's ``check_thresholds`` (``targets/<name>.py``) <
``--latency-pct/--accuracy-pt/--size-pct`` < ``--threshold TARGET.KEY=VALUE``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdmobile.errors import UsageError
from kdmobile.harness.machine import LATENCY_RELEVANT
from kdmobile.harness.report import OK_STATUSES, all_entries, display_name, fmt_bytes
from kdmobile.harness.stats import mcnemar_worse, shifted_mann_whitney, unpack_bits

# ``browser_latency_pct`` applies to in-browser runs instead of ``latency_pct``: a browser shares the
# machine through several processes and its timer is coarse, so its same-run ratio is noisier (measured here
# with two CPU hogs on the 2 cores: up to +10 % where the Python runtimes stayed within +-3 %).
DEFAULTS: dict[str, float] = {
    "latency_pct": 15.0,
    "accuracy_pt": 0.5,
    "size_pct": 5.0,
    "browser_latency_pct": 30.0,
}
THRESHOLD_KEYS = tuple(DEFAULTS)
ACCURACY_METRICS = ("top1", "recall_at_3", "teacher_agreement", "retention")
DEFAULT_ALPHA = 0.01
MIN_SAMPLES = 20  # fewer per-block ratios than this: latency is not judged (and the row says so)


@dataclass
class Row:
    """One line of the check's table."""

    entry: str
    metric: str
    baseline: str
    current: str
    change: str
    threshold: str
    verdict: str  # "ok" | "REGRESSION" | "improved" | "skipped" | "new"
    detail: str = ""

    @property
    def regression(self) -> bool:
        return self.verdict == "REGRESSION"


@dataclass
class CheckResult:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    comparable_machine: bool = True

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.regression]

    @property
    def ok(self) -> bool:
        return not self.regressions


def target_thresholds(target: str | None) -> dict[str, float]:
    """The thresholds a target declares (``Target.thresholds()``); the defaults if it declares none."""
    out = dict(DEFAULTS)
    if not target:
        return out
    try:
        from kdmobile.export import discover, get_target

        discover()
        t = get_target(target)
    except (ImportError, KeyError):
        return out
    declared = t.thresholds() if hasattr(t, "thresholds") else getattr(t, "check_thresholds", {})
    out.update({k: float(v) for k, v in (declared or {}).items() if k in DEFAULTS})
    return out


def parse_threshold_overrides(items: list[str] | None) -> dict[str, dict[str, float]]:
    """``["onnx-web.latency_pct=30", "size_pct=10"]`` → ``{"onnx-web": {...}, "*": {"size_pct": 10}}``."""
    out: dict[str, dict[str, float]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        target, dot, name = key.strip().rpartition(".")
        if not dot:
            target = "*"
        if not sep or name not in DEFAULTS:
            raise UsageError(
                f"--threshold takes [TARGET.]KEY=VALUE with KEY one of {', '.join(DEFAULTS)}, got {item!r} "
                "(e.g. --threshold onnx-web.latency_pct=30)"
            )
        try:
            v = float(value)
        except ValueError:
            raise UsageError(f"--threshold {item!r}: {value!r} is not a number") from None
        if not v >= 0:
            raise UsageError(f"--threshold {item!r}: must be >= 0")
        out.setdefault(target or "*", {})[name] = v
    return out


def _fmt_pct_change(x: float) -> str:
    return f"{100 * x:+.1f}%"


def _machine_notes(report: dict[str, Any], baseline: dict[str, Any]) -> tuple[bool, list[str]]:
    notes = [f"baseline note: {baseline['note']}"] if baseline.get("note") else []
    mb, mr = baseline.get("machine", {}), report.get("machine", {})
    same_machine = mb.get("machine_class") == mr.get("machine_class")
    if not same_machine:
        notes.append(
            f"baseline machine class {mb.get('machine_class')!r} != this machine {mr.get('machine_class')!r}: "
            "absolute latencies are not comparable; latency is judged only on same-run ratios"
        )
    vb, vr = baseline.get("versions", {}), report.get("versions", {})
    changed = [
        f"{k} {vb.get(k)} -> {vr.get(k)}"
        for k in LATENCY_RELEVANT
        if k in vb and k in vr and vb[k] != vr[k]  # a runtime not run in one of them is not a change
    ]
    if changed:
        notes.append(
            "tool versions differ from the baseline ("
            + ", ".join(changed)
            + "): latency is judged only on same-run ratios (a change of the reference runtime moves them too)"
        )
    return same_machine and not changed, notes


def _latency_row(
    name: str, base: dict[str, Any], cur: dict[str, Any], th: dict[str, float], alpha: float, absolute: bool
) -> Row:
    pct = th["browser_latency_pct"] if base.get("kind") == "browser" else th["latency_pct"]
    bl, cl = base.get("latency_ms") or {}, cur.get("latency_ms") or {}
    abs_txt = ""
    if absolute and bl.get("p50") and cl.get("p50"):
        abs_txt = f"; absolute p50 {bl['p50']:.4g} -> {cl['p50']:.4g} ms ({_fmt_pct_change(cl['p50'] / bl['p50'] - 1)})"
    xr = np.asarray(cur.get("ratio_samples") or [], dtype=np.float64)
    yr = np.asarray(base.get("ratio_samples") or [], dtype=np.float64)
    xr, yr = xr[xr > 0], yr[yr > 0]
    threshold = f"+{pct:g}% (p<{alpha:g})"
    unjudged: tuple[str, str] | None = None
    if xr.size < MIN_SAMPLES or yr.size < MIN_SAMPLES:
        unjudged = ("skipped", f"too few per-block ratios ({xr.size}, {yr.size})")
    if unjudged:
        return Row(name, "latency ratio", "–", "–", "–", threshold, *unjudged)
    test = shifted_mann_whitney(np.log(xr), np.log(yr), shift=math.log1p(pct / 100.0))
    moved = math.exp(test.shift_estimate) - 1.0
    regression = test.p_value < alpha and moved > pct / 100.0
    verdict = "REGRESSION" if regression else ("improved" if moved < -pct / 100.0 else "ok")
    return Row(
        name,
        "latency ratio",
        f"{float(np.median(yr)):.4g}",
        f"{float(np.median(xr)):.4g}",
        _fmt_pct_change(moved),
        threshold,
        verdict,
        f"p={test.p_value:.2g} (n={test.n_x}/{test.n_y}){abs_txt}",
    )


def _needs_outcomes(entry: dict[str, Any]) -> bool:
    return entry.get("status") == "ok" and any(entry.get(m) is not None for m in ACCURACY_METRICS[:3])


def _require_outcomes(report: dict[str, Any], baseline: dict[str, Any], only: Sequence[str] | None) -> None:
    """Refuse a baseline (or report) without per-example outcomes: accuracy can then only be compared by
    its mean, which is the noise-prone rule this check replaced."""

    def missing(doc: dict[str, Any]) -> list[str]:
        return [
            e["id"]
            for e in all_entries(doc)
            if (not only or any(e["id"].startswith(o) for o in only))
            and _needs_outcomes(e)
            and not e.get("outcomes")
        ]

    task = baseline.get("task") or "TASK"
    if bad := missing(baseline):
        raise UsageError(
            f"the baseline has no per-example outcomes for {len(bad)} entr{'ies' if len(bad) > 1 else 'y'} "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): it was written by an older kdmobile, "
            "and accuracy is now judged by a paired test on the same examples. Re-take it: "
            f"`kdmobile bench ARTIFACTS_DIR --task {task} -o build/report && kdmobile baseline update "
            "build/report -o BASELINE.json` (the selftest baseline: docs/ci.md, 'Re-taking the selftest "
            "baseline')"
        )
    if bad := missing(report):
        raise UsageError(
            f"the report has no per-example outcomes for {', '.join(bad[:3])}: it was written by an older "
            f"kdmobile; re-run `kdmobile bench ARTIFACTS_DIR --task {task} -o build/report`"
        )


def _require_same_references(
    report: dict[str, Any], baseline: dict[str, Any], only: Sequence[str] | None
) -> None:
    """Refuse (exit 2) to compare latency ratios taken to two different references.

    A skip would let a real slowdown of those entries pass unnoticed, and a REGRESSION would blame the
    artifact for a change of the yardstick (a new reference model, or a converter upgrade that changed
    its bytes). Either way the baseline is stale for these entries and must be re-taken on purpose.
    """
    current = {e["id"]: e for e in all_entries(report)}
    differ = []
    for base in all_entries(baseline):
        cur = current.get(base["id"])
        if (
            cur is None
            or (only and not any(base["id"] == o or base["id"].startswith(o) for o in only))
            or base.get("kind") not in ("artifact", "browser")
            or not (base.get("status") == cur.get("status") == "ok")
            or not (base.get("ratio_samples") and cur.get("ratio_samples"))
        ):
            continue
        if base.get("ratio_reference") != cur.get("ratio_reference"):
            differ.append(
                f"{base['id']}: {base.get('ratio_reference')!r} in the baseline, "
                f"{cur.get('ratio_reference')!r} now"
            )
    if differ:
        task = baseline.get("task") or "TASK"
        raise UsageError(
            f"latency ratios of {len(differ)} entr{'ies' if len(differ) > 1 else 'y'} divide by another "
            "reference than the baseline's, so they cannot be compared (a new reference model or converter "
            f"version): {'; '.join(differ[:3])}{'; ...' if len(differ) > 3 else ''}. Re-take the baseline "
            f"on purpose: `kdmobile bench ARTIFACTS_DIR --task {task} -o build/report && kdmobile baseline "
            "update build/report -o BASELINE.json` (the selftest baseline: docs/ci.md, 'Re-taking the "
            "selftest baseline')"
        )


def _fmt_ids(ids: Sequence[int], limit: int = 12) -> str:
    shown = ", ".join(f"#{i}" for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _accuracy_row(
    name: str, metric: str, base: dict[str, Any], cur: dict[str, Any], min_pt: float, alpha: float
) -> Row:
    """A paired test on the same examples: exact one-sided McNemar on the flips, plus a minimum drop."""
    if metric == "retention":
        # top1 / teacher top1: judged through top1 here and the teacher's own entry; shown for the record.
        b, c = base[metric], cur[metric]
        return Row(name, metric, f"{b:.4f}", f"{c:.4f}", f"{100 * (c - b):+.2f} pt", "via top1", "ok")
    threshold = f"-{min_pt:g} pt (p<{alpha:g})"
    bo, co = base.get("outcomes") or {}, cur.get("outcomes") or {}
    fmt = f"{100 * base[metric]:.2f}%", f"{100 * cur[metric]:.2f}%"
    if metric not in bo or metric not in co:
        why = "no per-example outcomes for this metric in " + (
            "the baseline" if metric not in bo else "the report"
        )
        return Row(name, metric, *fmt, "–", threshold, "skipped", why)
    if bo.get("n") != co.get("n") or bo.get("eval_fingerprint") != co.get("eval_fingerprint"):
        return Row(
            name, metric, *fmt, "–", threshold, "REGRESSION", "per-example outcomes over other examples"
        )
    test = mcnemar_worse(unpack_bits(bo[metric]), unpack_bits(co[metric]))
    drop_pt = 100.0 * test.net_drop
    if test.p_value < alpha and drop_pt > min_pt + 1e-9:
        verdict, p = "REGRESSION", test.p_value
    elif test.p_gain < alpha and -drop_pt > min_pt + 1e-9:
        verdict, p = "improved", test.p_gain
    else:
        verdict, p = "ok", min(test.p_value, test.p_gain)
    detail = f"{len(test.lost)} lost, {len(test.gained)} gained of {test.n}, p={p:.2g}"
    if test.lost:
        detail += f"; lost {_fmt_ids(test.lost)}"
    if test.gained:
        detail += f"; gained {_fmt_ids(test.gained)}"
    return Row(name, metric, *fmt, f"{-drop_pt:+.2f} pt", threshold, verdict, detail)


def compare(
    report: dict[str, Any],
    baseline: dict[str, Any],
    *,
    overrides: dict[str, dict[str, float]] | None = None,
    alpha: float = DEFAULT_ALPHA,
    only: Sequence[str] | None = None,
) -> CheckResult:
    """Compare ``report`` against ``baseline`` (both validated dicts); see the module docstring.

    Args:
        overrides: thresholds by target (``"*"`` for all), from ``parse_threshold_overrides``.
        alpha: one-sided significance level of every latency and accuracy test (the false-alarm rate
            when the true change sits exactly at the threshold).
        only: compare only entries whose id starts with one of these (e.g. ``"executorch/"``,
            ``"teacher"``); default every baseline entry.
    """
    overrides = overrides or {}
    result = CheckResult()
    _require_outcomes(report, baseline, only)
    _require_same_references(report, baseline, only)
    absolute_ok, result.notes = _machine_notes(report, baseline)
    result.notes.append(
        f"false-alarm rate: every latency and accuracy test runs at alpha={alpha:g} (one-sided) and also "
        "needs an effect beyond its threshold; latency: shifted Mann-Whitney on per-block log-ratios; "
        "accuracy: exact McNemar on the examples that flipped"
    )
    result.comparable_machine = absolute_ok

    def in_scope(eid: str) -> bool:
        return not only or any(eid == o or eid.startswith(o) for o in only)

    if only and not any(in_scope(e["id"]) for e in all_entries(baseline)):
        raise UsageError(
            f"--only {', '.join(only)} matches no baseline entry; ids look like 'executorch/fp32/...'"
        )
    current = {e["id"]: e for e in all_entries(report) if in_scope(e["id"])}
    fb, fr = baseline.get("eval_fingerprint"), report.get("eval_fingerprint")
    same_data = not (fb and fr and fb != fr)
    if not same_data:
        result.rows.append(
            Row(
                "evaluation set",
                "data",
                fb[:12],
                fr[:12],
                "changed",
                "identical",
                "REGRESSION",
                "the evaluation data differs from the baseline's: accuracy is not comparable and was not judged; "
                "if the change is intended, write a new baseline (kdmobile baseline update)",
            )
        )
    for base in all_entries(baseline):
        if not in_scope(base["id"]):
            continue
        eid = base["id"]
        name = display_name(base)
        th = target_thresholds(base.get("target") if base.get("kind") in ("artifact", "browser") else None)
        th.update(overrides.get("*", {}))
        th.update(overrides.get(base.get("target") or "", {}))
        cur = current.get(eid)
        bstat = base.get("status")
        if cur is None:
            verdict = "REGRESSION" if bstat in OK_STATUSES else "ok"
            result.rows.append(
                Row(
                    name,
                    "status",
                    bstat,
                    "missing",
                    "",
                    "present",
                    verdict,
                    f"no entry {eid!r} in the report",
                )
            )
            continue
        cstat = cur.get("status")
        if bstat in OK_STATUSES and cstat != bstat:
            detail = cur.get("reason") or ""
            result.rows.append(Row(name, "status", bstat, cstat, "", bstat, "REGRESSION", detail))
            continue
        measured = bstat == "ok" and cstat == "ok"
        if not measured:
            result.rows.append(
                Row(name, "status", bstat, cstat, "", "", "ok", "not measured here: status and size only")
            )
        # Latency (artifacts and browser runs; the eager student is the reference, the teacher is not shipped).
        if measured and base.get("kind") in ("artifact", "browser"):
            result.rows.append(_latency_row(name, base, cur, th, alpha, absolute_ok))
        for metric in ACCURACY_METRICS if measured and same_data else ():
            if base.get(metric) is not None and cur.get(metric) is not None:
                result.rows.append(_accuracy_row(name, metric, base, cur, th["accuracy_pt"], alpha))
        bs, cs = base.get("size_bytes"), cur.get("size_bytes")
        if bs and cs is not None:
            growth = cs / bs - 1.0
            verdict = "REGRESSION" if growth > th["size_pct"] / 100.0 + 1e-12 else "ok"
            result.rows.append(
                Row(
                    name,
                    "size",
                    fmt_bytes(bs),
                    fmt_bytes(cs),
                    _fmt_pct_change(growth),
                    f"+{th['size_pct']:g}%",
                    verdict,
                )
            )
    base_ids = {e["id"] for e in all_entries(baseline) if in_scope(e["id"])}
    for eid, cur in current.items():
        if eid not in base_ids:
            result.rows.append(
                Row(display_name(cur), "status", "–", cur.get("status"), "", "", "new", "not in the baseline")
            )
    return result


def format_table(result: CheckResult, *, verbose: bool = False) -> str:
    """The check's table: every regression and every moved figure (all rows with ``verbose``)."""
    rows = [r for r in result.rows if verbose or r.verdict != "ok" or r.metric == "latency ratio"]
    head = ("entry", "metric", "baseline", "now", "change", "threshold", "verdict", "detail")
    cells = [head] + [
        (r.entry, r.metric, r.baseline, r.current, r.change, r.threshold, r.verdict, r.detail) for r in rows
    ]
    widths = [max(len(str(c[i])) for c in cells) for i in range(len(head) - 1)]
    lines = []
    for i, c in enumerate(cells):
        lines.append(
            "  ".join(str(v).ljust(w) for v, w in zip(c[:-1], widths, strict=True)) + "  " + str(c[-1])
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ------")
    out = []
    out += [f"NOTE: {n}" for n in result.notes]
    out += lines
    n = len(result.regressions)
    out.append(
        f"{n} regression{'s' if n != 1 else ''} in {len({r.entry for r in result.regressions})} entr"
        f"{'ies' if len({r.entry for r in result.regressions}) != 1 else 'y'}"
        if n
        else f"no regression ({len(result.rows)} figures compared)"
    )
    return "\n".join(out)
