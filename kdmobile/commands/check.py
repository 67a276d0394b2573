"""``kdmobile check``: compare a fresh bench report with a committed baseline; exit 1 on a regression.

    kdmobile check build/report/report.json --baseline baselines/email-x86_64-amd-epyc-2c.json
    kdmobile check build/report --baseline B.json --latency-pct 25 --threshold onnx-web.latency_pct=40

Prints a table of what moved and by how much. See ``kdmobile/harness/check.py`` for the rules and
docs/ci.md for wiring it into CI. Exit 2 on a report or baseline that is not JSON or not of the schema
(wrong types, NaN, duplicate ids, a baseline without artifacts or ratio samples; see docs/bench.md), or
whose artifacts changed since they were benched (their sha256 no longer matches the report); exit 1 on a
regression or on an artifact the bench found damaged.
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
    from kdmobile.harness.report import all_entries, read_report

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
    verify_benched_artifacts(report, args.report)
    result = compare(report, baseline, overrides=overrides, alpha=alpha, only=args.only)
    print(format_table(result, verbose=args.verbose))
    damaged = [
        e
        for e in all_entries(report)
        if e["status"] == "corrupt" and (not args.only or e["id"].startswith(tuple(args.only)))
    ]
    for e in damaged:
        print(f"damaged: {e['id']}: {e.get('reason')}")
    if not result.ok or damaged:
        names = sorted(
            {f"{r.entry} {r.metric}" for r in result.regressions} | {f"{e['id']} damaged" for e in damaged}
        )
        raise CheckFailed(
            f"{len(result.regressions)} regression(s) and {len(damaged)} damaged artifact(s) against "
            f"{args.baseline}: {', '.join(names)}"
        )
    return 0


def verify_benched_artifacts(report: dict[str, Any], where: str) -> None:
    """The artifacts a report measured must still be the files it measured (sha256 recorded by the bench),
    where they are still there: a report checked against swapped artifacts would vouch for the wrong ones."""
    from pathlib import Path

    from kdmobile.errors import UsageError
    from kdmobile.io import sha256_file

    for e in report["artifacts"]:
        sha, path = (e.get("details") or {}).get("sha256"), e.get("path")
        if e["kind"] != "artifact" or not isinstance(sha, str) or not path or not Path(path).exists():
            continue
        if sha256_file(path) != sha:
            raise UsageError(
                f"{where}: {path} changed since it was benched (sha256 differs from the report's {e['id']}); "
                "re-run `kdmobile bench` on the export folder"
            )
