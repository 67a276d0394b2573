"""False alarms and detection power of ``kdmobile check``, measured on real bench runs of the selftest student.

    python -m kdmobile.tasks.selftest.power -o build/power             # 20 + 20 checks (quiet, 2 CPU hogs)
    python -m kdmobile.tasks.selftest.power -o build/power --checks 3  # a reduced run

One baseline is benched first (ExecuTorch fp32, LiteRT fp32, onnxruntime fp32 in Python and
onnxruntime-web fp32 in headless Chromium, 1 thread; 3 s timing windows, 10 s in the browser, whose
per-block ratios are the noisiest: the bench's default is 10 s for all). Then, for each condition (no deliberate load; two
processes burning a CPU each, started and stopped here; the two alternate check by check), ``--checks``
fresh bench runs of the *unchanged* artifacts are each checked against it. "Quiet" means no hogs of ours:
on a shared machine other jobs still run beside it (the report says how loaded it was).

- **unchanged**: any regression is a false alarm;
- **slowed, injected**: the run's real per-block ratios multiplied by 1.2, 1.5, 2.0 (the artifact's
  measured noise kept, its centre moved): detection = the latency row says REGRESSION;
- **degraded, injected**: ``ceil(pt x n / 100)`` examples the run got right turned wrong in its real
  top-1 outcomes (1, 2, 5 points; nothing else changed): detection = the top-1 row says REGRESSION;
- **slowed, real**: the same student as an ExecuTorch program without the XNNPACK delegate (portable
  kernels: really more work per call), benched like the others.

Writes ``power.json`` (every verdict) and ``power.md`` (the table in the README); exits 1 when a goal is
missed (zero false alarms; >= 95 % detection of +50 % latency and of a 2-point drop).
"""

from __future__ import annotations

import argparse
import copy
import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

SLOWDOWNS = (0.2, 0.5, 1.0)
DROPS_PT = (1.0, 2.0, 5.0)
GOAL_SLOWDOWN, GOAL_DROP_PT, GOAL_DETECTION = 0.5, 2.0, 0.95
ET_FP32 = "executorch/fp32/executorch (XNNPACK)"


def _burn() -> None:  # pragma: no cover - runs in the hog processes
    while True:
        pass


@contextmanager
def cpu_hogs(n: int) -> Iterator[None]:
    """``n`` processes spinning on a CPU each for the duration of the block (stopped by their handles)."""
    procs = [mp.get_context("spawn").Process(target=_burn, daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        time.sleep(0.5 if n else 0.0)  # let the scheduler see them before timing starts
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(5)


def slowed(report: dict[str, Any], factor: float) -> dict[str, Any]:
    """A copy of ``report`` whose every measured latency entry is ``factor`` times slower (injected)."""
    out = copy.deepcopy(report)
    for e in out["artifacts"]:
        if e.get("ratio_samples"):
            e["ratio_samples"] = [r * factor for r in e["ratio_samples"]]
            e["latency_ms"] = {
                k: v if k == "n" else v * factor for k, v in (e.get("latency_ms") or {}).items()
            }
    return out


def degraded(report: dict[str, Any], drop_pt: float, seed: int) -> tuple[dict[str, Any], int]:
    """A copy of ``report`` whose entries each lost ``ceil(drop_pt x n / 100)`` right top-1 examples."""
    from kdmobile.harness.stats import pack_bits, unpack_bits

    out = copy.deepcopy(report)
    k = 0
    rng = np.random.default_rng(seed)
    for e in out["artifacts"]:
        o = e.get("outcomes") or {}
        if "top1" not in o:
            continue
        top1 = unpack_bits(o["top1"]).copy()
        k = math.ceil(drop_pt * top1.size / 100 - 1e-9)
        top1[rng.choice(np.flatnonzero(top1), k, replace=False)] = False
        o["top1"] = pack_bits(top1)
        e["top1"] = float(top1.mean())
    return out, k


def _rows(result: Any, metric: str) -> dict[str, str]:
    return {r.entry: r.verdict for r in result.rows if r.metric == metric}


def run(
    out: Path,
    *,
    checks: int = 20,
    hogs: int = 2,
    min_seconds: float = 3.0,
    browser_min_seconds: float = 10.0,
    real: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the benchmark into ``out`` (see the module docstring); returns the summary dict."""
    from kdmobile.harness.baseline import make_baseline
    from kdmobile.harness.bench import run_bench
    from kdmobile.harness.check import DEFAULT_ALPHA, compare
    from kdmobile.io import write_json, write_text
    from kdmobile.tasks.selftest import fixture as selftest

    work = out / "work"
    paths = selftest.train(work)
    export = selftest.export(
        paths["student"], work / "export", targets=("executorch", "tflite", "onnx-web"), precisions=("fp32",)
    )
    portable = None
    if real:
        portable = selftest.export(
            paths["student"], work / "portable", targets=("executorch",), precisions=("fp32",), bundle=False
        )
        selftest.write_portable_pte(paths["student"], portable / "executorch" / "model_fp32.pte")
    opts = selftest.bench_options(
        min_seconds=min_seconds,
        browser_min_seconds=browser_min_seconds,
        browser_threads=(1,),
        include_teacher=False,
        include_student=False,
    )
    quiet = lambda m: None  # noqa: E731
    log("power: baseline bench (quiet) ...")
    baseline = make_baseline(run_bench(export, task="selftest", options=opts, log=quiet), source="power")
    write_json(out / "baseline.json", baseline)
    records: list[dict[str, Any]] = []
    # The conditions alternate check by check, so a run stopped midway (power.json is written after every
    # check) still has as many checks of each, and a slow drift of the shared machine hits both alike.
    conditions = (("quiet", 0), (f"{hogs} CPU hogs", hogs))
    for i in range(checks):
        for condition, n_hogs in conditions:
            with cpu_hogs(n_hogs):
                load = os.getloadavg()[0]  # the machine is shared: how busy it was besides our hogs
                report = run_bench(export, task="selftest", options=opts, log=quiet)
                slow_report = (
                    run_bench(portable, task="selftest", options=opts, log=quiet) if portable else None
                )
            res = compare(report, baseline)
            rec: dict[str, Any] = {
                "condition": condition,
                "check": i,
                "load_1min": round(load, 1),
                "unchanged": {
                    "ok": res.ok,
                    "regressions": [f"{r.entry} {r.metric}: {r.change} {r.detail}" for r in res.regressions],
                    "latency_change": {r.entry: r.change for r in res.rows if r.metric == "latency ratio"},
                    "latency_detail": {r.entry: r.detail for r in res.rows if r.metric == "latency ratio"},
                },
            }
            for s in SLOWDOWNS:
                rec[f"+{s:.0%} latency (injected)"] = _rows(
                    compare(slowed(report, 1 + s), baseline), "latency ratio"
                )
            for pt in DROPS_PT:
                rep, k = degraded(report, pt, seed=1000 * i + int(10 * pt))
                rec[f"-{pt:g} pt top-1 (injected)"] = _rows(compare(rep, baseline), "top1")
                rec[f"-{pt:g} pt top-1 (injected)"]["_examples"] = str(k)
            if slow_report is not None:
                r = compare(slow_report, baseline, only=[ET_FP32])
                rec["no XNNPACK (real)"] = _rows(r, "latency ratio")
                rec["no XNNPACK (real)"]["_change"] = next(
                    (x.change for x in r.rows if x.metric == "latency ratio"), "–"
                )
            records.append(rec)
            # Written after every check, so a long run can be read (or stopped) midway.
            write_json(
                out / "power.json", {"summary": summarize(records, alpha=DEFAULT_ALPHA), "records": records}
            )
            log(
                f"power: {condition} check {i + 1}/{checks}: "
                + ("ok" if res.ok else "FALSE ALARM: " + "; ".join(rec["unchanged"]["regressions"]))
            )
    summary = summarize(records, alpha=DEFAULT_ALPHA)
    summary["settings"] = {
        "checks": checks,
        "hogs": hogs,
        "min_seconds": min_seconds,
        "browser_min_seconds": browser_min_seconds,
        "real": real,
    }
    write_json(out / "power.json", {"summary": summary, "records": records})
    write_text(out / "power.md", render(summary))
    return summary


def summarize(records: list[dict[str, Any]], alpha: float) -> dict[str, Any]:
    """Per condition and case: how many checks (or entry-checks) raised a regression."""
    rows = []
    for condition in dict.fromkeys(r["condition"] for r in records):
        recs = [r for r in records if r["condition"] == condition]
        alarms = sum(not r["unchanged"]["ok"] for r in recs)
        loads = [r["load_1min"] for r in recs if "load_1min" in r]
        rows.append(
            {
                "condition": condition,
                "case": "unchanged",
                "kind": "real",
                "flagged": alarms,
                "of": len(recs),
                "note": f"1-min load average {min(loads):g} to {max(loads):g} at the start" if loads else "",
            }
        )
        for case in [k for k in recs[0] if k not in ("condition", "check", "unchanged", "load_1min")]:
            verdicts = [v for r in recs for e, v in r[case].items() if not e.startswith("_")]
            note = recs[0][case].get("_examples") or ""
            if case.startswith("no XNNPACK"):
                note = "measured change " + ", ".join(r[case].get("_change", "–") for r in recs)
            rows.append(
                {
                    "condition": condition,
                    "case": case,
                    "kind": "injected" if "injected" in case else "real",
                    "flagged": sum(v == "REGRESSION" for v in verdicts),
                    "of": len(verdicts),
                    "note": f"{note} of 320 examples made wrong" if note.isdigit() else note,
                }
            )
    goals = {
        "no false alarm": all(r["flagged"] == 0 for r in rows if r["case"] == "unchanged"),
        f"+{GOAL_SLOWDOWN:.0%} latency detected >= {GOAL_DETECTION:.0%}": all(
            r["flagged"] >= GOAL_DETECTION * r["of"]
            for r in rows
            if r["case"] == f"+{GOAL_SLOWDOWN:.0%} latency (injected)"
        ),
        f"-{GOAL_DROP_PT:g} pt detected >= {GOAL_DETECTION:.0%}": all(
            r["flagged"] >= GOAL_DETECTION * r["of"]
            for r in rows
            if r["case"] == f"-{GOAL_DROP_PT:g} pt top-1 (injected)"
        ),
    }
    return {"alpha": alpha, "rows": rows, "goals": goals, "ok": all(goals.values())}


def render(summary: dict[str, Any]) -> str:
    lines = [
        f"`kdmobile check` at alpha={summary['alpha']:g}: unchanged = false alarms per check (any "
        "regression); other cases = entries flagged REGRESSION / entries checked.",
        "",
        "| condition | case | kind | flagged | rate | note |",
        "|---|---|---|---:|---:|---|",
    ]
    for r in summary["rows"]:
        rate = r["flagged"] / r["of"] if r["of"] else float("nan")
        lines.append(
            f"| {r['condition']} | {r['case']} | {r['kind']} | {r['flagged']} / {r['of']} | {rate:.0%} | "
            f"{r.get('note', '')} |"
        )
    lines += ["", *(f"- {'met' if ok else 'MISSED'}: {g}" for g, ok in summary["goals"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m kdmobile.tasks.selftest.power", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("-o", "--output", default="build/power", help="output directory (default build/power)")
    ap.add_argument("--checks", type=int, default=20, help="checks per condition (default 20)")
    ap.add_argument("--hogs", type=int, default=2, help="CPU-burning processes in the loaded condition")
    ap.add_argument(
        "--min-seconds", type=float, default=3.0, help="timing window per entry (default 3 s: ~100 blocks)"
    )
    ap.add_argument(
        "--browser-min-seconds",
        type=float,
        default=10.0,
        help="timing window of the in-browser entry (default 10 s, the bench's default: its per-block "
        "ratios are the noisiest, and its margin the widest)",
    )
    ap.add_argument("--no-real", action="store_true", help="skip the real slowed variant (no XNNPACK)")
    args = ap.parse_args(argv)
    if args.checks < 1 or args.hogs < 0:
        ap.error("--checks must be >= 1 and --hogs >= 0")
    out = Path(args.output)
    summary = run(
        out,
        checks=args.checks,
        hogs=args.hogs,
        min_seconds=args.min_seconds,
        browser_min_seconds=args.browser_min_seconds,
        real=not args.no_real,
    )
    print((out / "power.md").read_text())
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
