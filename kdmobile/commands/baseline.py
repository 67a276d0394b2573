"""``kdmobile baseline update``: write a baseline from a bench report (tool versions and machine included).

kdmobile baseline update build/report/report.json -o baselines/email-x86_64-amd-epyc-2c.json
kdmobile baseline update build/report -o baselines/email-$(python -m kdmobile.harness.machine).json
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "baseline",
        help="manage the baselines `kdmobile check` compares against",
        description="Baselines are committed JSON files, one per task and device class "
        "(baselines/<task>-<machine_class>.json); see docs/ci.md.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    u = actions.add_parser(
        "update",
        help="write a baseline from a report",
        description="Write the figures of REPORT (report.json or its directory) as a baseline: per entry the "
        "status, size, accuracy, retention, latency and its per-run same-run ratios; plus the machine "
        "and every tool version.",
        epilog="example: kdmobile baseline update build/report -o baselines/email-x86_64-amd-epyc-2c.json",
    )
    u.add_argument("report", help="report.json written by `kdmobile bench` (or its directory)")
    u.add_argument("-o", "--output", required=True, metavar="FILE", help="baseline file to write")
    u.add_argument("--note", default=None, help="why this baseline was taken (shown by `kdmobile check`)")
    u.set_defaults(func=run_update)


def run_update(args: argparse.Namespace) -> int:
    from kdmobile.harness.baseline import update_baseline
    from kdmobile.harness.report import read_report

    path = update_baseline(args.report, args.output, note=args.note)
    b = read_report(path)
    m = b["machine"]
    print(f"wrote {path}: {len(b['artifacts'])} artifact entries, machine class {m.get('machine_class')}")
    return 0
