"""Compare a fresh bench report with a committed baseline; a regression fails the check (exit 1).

    kdmobile check build/report/report.json --baseline baselines/email-x86_64-amd-epyc-2c.json

What counts as a regression, per entry (matched on ``id``, e.g. ``executorch/int8/executorch``):

- **status**: ok (or ``conversion_validated``) in the baseline, now failing or missing;
- **latency**: judged on the *same-run ratio* (each run of the artifact divided by the reference measured in
  the same run, interleaved), never on absolute time, so a slower machine does not fail the check but a
  slower artifact does. The test is one-sided Mann-Whitney U over the per-run log-ratios: regression if
  the evidence says the ratio grew by more than ``latency_pct`` (p < ``alpha``), so noise alone does not
  fail it however many samples there are (in-browser runs use ``browser_latency_pct``, default 30 %);
- **accuracy** (top-1, recall@3, teacher agreement) and **retention**: absolute drop > ``accuracy_pt``
  percentage points;
- **size**: relative growth > ``size_pct``.

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
from kdmobile.harness.stats import shifted_mann_whitney

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
MIN_SAMPLES = 20  # fewer per-run ratios than this: latency is not judged (and the row says so)


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
    if xr.size < MIN_SAMPLES or yr.size < MIN_SAMPLES:
        return Row(
            name,
            "latency ratio",
            "–",
            "–",
            "–",
            threshold,
            "skipped",
            f"too few per-run samples ({xr.size}, {yr.size})",
        )
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
        alpha: significance level of the latency rank test.
        only: compare only entries whose id starts with one of these (e.g. ``"executorch/"``,
            ``"teacher"``); default every baseline entry.
    """
    overrides = overrides or {}
    result = CheckResult()
    absolute_ok, result.notes = _machine_notes(report, baseline)
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
            b, c = base.get(metric), cur.get(metric)
            if b is None or c is None:
                continue
            drop_pt = 100.0 * (b - c)
            verdict = (
                "REGRESSION"
                if drop_pt > th["accuracy_pt"] + 1e-9
                else ("improved" if drop_pt < -th["accuracy_pt"] else "ok")
            )
            fmt = (lambda v: f"{v:.4f}") if metric == "retention" else (lambda v: f"{100 * v:.2f}%")
            result.rows.append(
                Row(
                    name, metric, fmt(b), fmt(c), f"{-drop_pt:+.2f} pt", f"-{th['accuracy_pt']:g} pt", verdict
                )
            )
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
