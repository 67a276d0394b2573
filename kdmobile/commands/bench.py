"""``kdmobile bench``: measure every exported artifact in its real runtime and write one report.

    kdmobile bench build/export --task email --data heldout -o build/report
    kdmobile bench build/export -o build/report --min-seconds 2 --no-browser      # a quick look

Writes ``OUT/report.json`` (versioned schema), ``OUT/report.md`` and ``OUT/report.html``. Exit 1 if an
artifact failed to load or run here, or the browser disagreed with Python (the report says which and why).
"""

from __future__ import annotations

import argparse
from typing import Any


def _threads_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated thread counts like 1,2, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return values


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="measure exported artifacts, the teacher and the eager student; write a report",
        description="Measure every artifact of ARTIFACTS_DIR (written by `kdmobile export`) in its real "
        "runtime: size, load time, batch-1 latency percentiles, peak memory, accuracy on the evaluation set, "
        "agreement with and retention of the teacher; the web bundle also in headless Chromium. Latencies "
        "are also given as ratios to the teacher and to the eager student measured in the same run.",
        epilog="example: kdmobile bench build/export --task email --data heldout -o build/report",
    )
    p.add_argument("artifacts_dir", help="directory written by `kdmobile export` (holds summary.json)")
    p.add_argument(
        "--task", default="email", help="task whose evaluation set and teacher to use (default: email)"
    )
    p.add_argument("--data", default="heldout", help="evaluation split (default: heldout)")
    p.add_argument(
        "-o",
        "--output",
        default="build/report",
        metavar="DIR",
        help="report directory (default: build/report)",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="CPU threads of every Python-side runtime (default 1)"
    )
    p.add_argument("--min-runs", type=int, default=200, help="least timed runs per entry (default 200)")
    p.add_argument(
        "--min-seconds", type=float, default=10.0, help="least measuring time per entry (default 10)"
    )
    p.add_argument(
        "--max-seconds", type=float, default=None, help="stop an entry after this long even below --min-runs"
    )
    p.add_argument(
        "--server-batch", type=int, default=32, help="the teacher's server-side batch size (default 32)"
    )
    p.add_argument(
        "--browser-threads",
        type=_threads_list,
        default=None,
        metavar="N,M",
        help="wasm thread counts (default 1,min(4,cores))",
    )
    p.add_argument("--no-browser", action="store_true", help="skip the headless-Chromium runs")
    p.add_argument(
        "--teacher", default=None, metavar="PATH", help="teacher weights (default: found by the task)"
    )
    p.add_argument(
        "--student",
        default=None,
        metavar="PATH",
        help="student checkpoint (default: the one in summary.json)",
    )
    p.add_argument("--target", action="append", default=None, help="only this target (repeatable)")
    p.add_argument(
        "--trust-unverified",
        action="store_true",
        help="accept a student checkpoint whose .json has no sha256",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kdmobile.errors import UsageError
    from kdmobile.harness.bench import BenchOptions, run_bench
    from kdmobile.harness.report import display_name, fmt_ms, fmt_pct, fmt_ratio

    for name in ("min_runs", "server_batch"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    if args.min_seconds < 0:
        raise UsageError("--min-seconds must be >= 0")
    opts = BenchOptions(
        threads=args.threads,
        min_runs=args.min_runs,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        server_batch=args.server_batch,
        browser=not args.no_browser,
        browser_threads=args.browser_threads,
        teacher=args.teacher,
        student=args.student,
        targets=tuple(args.target) if args.target else None,
        trust_unverified=args.trust_unverified,
    )
    report = run_bench(args.artifacts_dir, task=args.task, data=args.data, out=args.output, options=opts)
    from kdmobile.harness.report import all_entries, sort_key

    for e in sorted(all_entries(report), key=sort_key):
        lat = e.get("latency_ms") or {}
        line = f"{display_name(e):<32} {e['status']:<20}"
        if lat:
            line += f" p50 {fmt_ms(lat['p50']):>9}  x teacher {fmt_ratio(e.get('speedup_vs_teacher')):>7}"
        if e.get("top1") is not None:
            line += f"  top-1 {fmt_pct(e['top1'])}"
        if e.get("reason") and e["status"] != "ok":
            line += f"  ({e['reason'][:100]})"
        print(line)
    print(f"report: {args.output}/report.md, report.html, report.json ({report['seconds']:.0f} s)")
    if not report["ok"]:
        print(f"failed here: {', '.join(report['failures'])}")
        return 1
    return 0
