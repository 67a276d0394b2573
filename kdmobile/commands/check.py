"""``kdmobile check``: compare a fresh bench report with a committed baseline; exit 1 on a regression.

    kdmobile check build/report/report.json --baseline baselines/email-x86_64-amd-epyc-2c.json
    kdmobile check build/report --baseline B.json --latency-pct 25 --threshold onnx-web.latency_pct=40

Prints a table of what moved and by how much. See ``kdmobile/harness/check.py`` for the rules and
docs/ci.md for wiring it into CI.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="fail (exit 1) if a report regressed against a baseline",
        description="Compare REPORT (report.json or its directory) with a baseline written by "
        "`kdmobile baseline update`. Latency is judged on same-run per-block ratios with a one-sided shifted "
        "rank test; accuracy with an exact one-sided McNemar test on the examples that flipped (plus a "
        "minimum drop), listing them; size by relative growth; an entry that was ok and now fails "
        "or is missing is a regression. Every test runs at --alpha (the false-alarm rate at the threshold). "
        "Per-target thresholds come from targets/<name>.py "
        "(check_thresholds) unless overridden here.",
        epilog="example: kdmobile check build/report --baseline baselines/email-x86_64-amd-epyc-2c.json",
    )
    p.add_argument("report", help="report.json written by `kdmobile bench` (or its directory)")
    p.add_argument("--baseline", required=True, metavar="FILE", help="baseline JSON (or another report.json)")
    p.add_argument(
        "--latency-pct", type=float, metavar="PCT", help="allowed slowdown of the same-run ratio (default 15)"
    )
    p.add_argument(
        "--accuracy-pt",
        type=float,
        metavar="PT",
        help="least net drop of top-1/recall@3/agreement, in points, that fails when significant (default 0.5)",
    )
    p.add_argument("--size-pct", type=float, metavar="PCT", help="allowed size growth (default 5)")
    p.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="[TARGET.]KEY=VALUE",
        help="override one threshold, for one target or all (repeatable), e.g. onnx-web.latency_pct=40",
    )
    p.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="ID",
        help="compare only entries whose id starts with ID (repeatable), e.g. executorch/ or onnx-web/int8",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="one-sided significance level of the latency and accuracy tests (default 0.01)",
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", help="print every compared figure, not only what moved"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kdmobile.errors import CheckFailed, UsageError
    from kdmobile.harness.check import DEFAULT_ALPHA, compare, format_table, parse_threshold_overrides
    from kdmobile.harness.report import read_report

    overrides = parse_threshold_overrides(args.threshold)
    for key, value in (
        ("latency_pct", args.latency_pct),
        ("accuracy_pt", args.accuracy_pt),
        ("size_pct", args.size_pct),
    ):
        if value is not None:
            if not value >= 0:
                raise UsageError(f"--{key.replace('_', '-')} must be >= 0, got {value}")
            overrides.setdefault("*", {}).setdefault(key, value)
    alpha = DEFAULT_ALPHA if args.alpha is None else args.alpha
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must be in (0, 1), got {alpha}")
    report = read_report(args.report)
    baseline = read_report(args.baseline)
    result = compare(report, baseline, overrides=overrides, alpha=alpha, only=args.only)
    print(format_table(result, verbose=args.verbose))
    if not result.ok:
        names = sorted({f"{r.entry} {r.metric}" for r in result.regressions})
        raise CheckFailed(
            f"{len(result.regressions)} regression(s) against {args.baseline}: {', '.join(names)}"
        )
    return 0
