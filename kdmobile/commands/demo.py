"""``kdmobile demo``: the email smart-reply pipeline end to end (what ``make demo`` runs).

    kdmobile demo
    kdmobile demo --workdir build --set task_args.demo.seeds=[0] --set train.epochs=4

Stages: data → train the reply-act teacher (cached) → cache its outputs → distil the student (per seed) → train
the scratch baseline (per seed) → time online vs cached epochs → report. Writes ``WORKDIR/report/task.json``
and ``task.md``, ``WORKDIR/email/student.safetensors`` (+ ``.json``) and ``teacher_predictions.json``.
The stage list is ``kdmobile.tasks.email.pipeline.default_stages()``: later stages (export, bench) append
to it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the email smart-reply pipeline end to end (make demo)",
        description="Generate the data, fine-tune the teacher (cached), cache its outputs, distil the student "
        "and train the scratch baseline over several seeds, evaluate on the hand-written held-out set, and "
        "write WORKDIR/report/task.json + task.md.",
        epilog="example: kdmobile demo --set task_args.demo.seeds=[0] --set train.epochs=4",
    )
    p.add_argument(
        "--workdir", default=None, help="output root (default: task_args.workdir of the config, build)"
    )
    p.add_argument("--config", default=None, help="TOML config (default: configs/email.toml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=4 or --set task_args.demo.seeds=[0] (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from kdmobile.tasks.email.pipeline import Context, default_stages, load_config, run_stages

    cfg, task = load_config(args.config, args.overrides)
    if args.workdir:
        task = dataclasses.replace(task, workdir=args.workdir)
    stages = default_stages()
    ctx = Context(config=cfg, task=task, workdir=Path(task.workdir), progress=not args.no_progress)

    def done(stage: Any, seconds: float) -> None:
        print(
            f"[{stages.index(stage) + 1}/{len(stages)}] {stage.name}: {stage.description} ({seconds:.0f} s)",
            file=sys.stderr,
        )

    run_stages(ctx, stages, on_stage=done)
    report = ctx.results.get("report")
    if report:
        print(summary(report, ctx.report_dir))
    return 0


def summary(report: dict[str, Any], report_dir: Any) -> str:
    """A short plain-text summary of ``task.json``: per held-out set, then the abstain rule."""

    def ok(flag: bool) -> str:
        return "ok" if flag else "NOT MET"

    c = report["checks"]
    lines = ["", f"email smart-reply on reply acts (students: mean over {len(report['seeds'])} seeds)"]
    for name, s in report["sets"].items():
        t, d, sc, k = s["teacher"], s["distilled"], s["scratch"], s["checks"]
        lines += [
            f" {name}: {s['want_reply']} of {s['emails']} emails want a reply",
            f"  teacher   {t['params']:>11,} params  top-1 {t['top1']:.3f}  recall@3 {t['recall_at_3']:.3f}",
            f"  distilled {d['params']:>11,} params  top-1 {d['top1']:.3f} ± {d['top1_std']:.3f}  recall@3 "
            f"{d['recall_at_3']:.3f}  agreement {d['teacher_agreement']:.3f}",
            f"  scratch   {sc['params']:>11,} params  top-1 {sc['top1']:.3f} ± {sc['top1_std']:.3f}  recall@3 "
            f"{sc['recall_at_3']:.3f}  agreement {sc['teacher_agreement']:.3f}",
            f"  top-1 ratio {k['top1_ratio']:.3f} ({ok(k['top1_ok'])}), recall@3 ratio {k['recall_at_3_ratio']:.3f} "
            f"({ok(k['recall_at_3_ok'])}), agreement >= 0.7 ({ok(k['agreement_ok'])}), beats scratch by > std "
            f"({ok(k['beats_scratch_by_std'])})",
        ]
    rule = report["abstain"]["student"]["rule"]
    lines += [
        f" student abstains when {rule['score']} {'>=' if rule['score'] == 'p_none' else '<'} {rule['threshold']:.3g}",
        f" student/teacher params {c['params_ratio']:.4f} ({ok(c['params_ok'])}), cache speedup "
        f"{report['cache_speedup']:.1f}x ({ok(c['cache_speedup_ok'])})",
        f" wrote {report_dir}/task.json and task.md",
    ]
    return "\n".join(lines)
