"""Baselines: the figures ``kdmobile check`` compares against, taken from one real bench report.

    kdmobile baseline update build/report/report.json -o baselines/email-x86_64-amd-epyc-2c.json

A baseline keeps, per entry, what the check judges (status, size, accuracy, retention, the per-example
``outcomes`` for the paired accuracy test, the latency summary and up to ``MAX_RATIO_SAMPLES`` per-block
same-run ratios for the rank test, with the reference they divide by: ``ratio_reference``, and the
report's ``reference`` record with each exported reference's sha256) plus the machine and every tool
version, so a check against a baseline from another machine class or other versions can say so. A
baseline written before per-example outcomes existed is refused by ``kdmobile check``: re-take it.
Keep one baseline per device class (see docs/ci.md): ``baselines/<task>-<machine_class>.json``.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from kdmobile.errors import UsageError
from kdmobile.harness.report import ENTRY_KEYS, SCHEMA_VERSION, all_entries, read_report, validate_report
from kdmobile.harness.stats import thin
from kdmobile.io import write_json

BASELINE_SCHEMA = "kdmobile.baseline"
MAX_RATIO_SAMPLES = 1500
# A baseline keeps every report field the check reads; per-run timings (thinned ratio samples aside),
# paths, memory and the per-artifact details stay in the report.
_DROP = frozenset(
    {
        "path", "load_ms", "ratio_to_teacher", "ratio_to_student", "speedup_vs_student", "flops",
        "compute_floor_ms", "p50_over_floor", "peak_memory_bytes", "measurement", "samples_ms",
        "ratio_samples", "details",
    }
)  # fmt: skip


def _slim(entry: dict[str, Any]) -> dict[str, Any]:
    out = {k: entry.get(k) for k in ENTRY_KEYS if k not in _DROP}
    out["ratio_samples"] = thin(entry.get("ratio_samples") or [], MAX_RATIO_SAMPLES)
    return out


def make_baseline(
    report: dict[str, Any], source: str | None = None, note: str | None = None
) -> dict[str, Any]:
    """A baseline dict from a validated report dict; ``note`` (why it was taken) is shown by the check."""
    validate_report(report)
    if not report["artifacts"]:
        raise UsageError(
            f"{source or 'report'}: has no artifact entries, so a baseline from it would check nothing; "
            "bench an export folder that holds artifacts"
        )
    teacher = report.get("teacher")
    student = report.get("student")
    return {
        "schema": BASELINE_SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source_report": source,
        "note": note,
        "report_created": report.get("created"),
        "task": report.get("task"),
        "data": report.get("data"),
        "n_examples": report.get("n_examples"),
        "eval_fingerprint": report.get("eval_fingerprint"),
        "machine": report["machine"],
        "versions": report["versions"],
        "settings": report.get("settings", {}),
        # What the latency ratios divide by (the exported references' sha256 and converter versions).
        "reference": report.get("reference"),
        "teacher": _slim(teacher) if teacher else None,
        "student": _slim(student) if student else None,
        "artifacts": [_slim(e) for e in report["artifacts"]],
        "n_entries": len(all_entries(report)),
    }


def update_baseline(report_path: str | Path, out: str | Path, note: str | None = None) -> Path:
    """Read ``report_path`` (a report.json or its directory) and write a baseline to ``out`` atomically."""
    if Path(out).is_dir():
        raise UsageError(
            f"-o {out}: is a directory; name the baseline file to write (e.g. {Path(out) / 'baseline.json'})"
        )
    report = read_report(report_path)
    baseline = make_baseline(report, source=str(report_path), note=note)
    validate_report(baseline, f"the baseline made from {report_path}")  # never write one check cannot use
    return write_json(out, baseline)
