"""``kdmobile compress``: distillation-aware compression of a trained student.

    kdmobile compress qat build/email/student.safetensors --target executorch -o build/qat
    kdmobile compress prune build/email/student.safetensors --dim 24 --hidden 64 -o build/pruned --export
    kdmobile compress pareto --student base=build/email/student.safetensors \\
        --student pruned=build/pruned/student.safetensors --qat base -o build/pareto --report build/report

- ``qat``: quantization-aware fine-tuning through the target's own PT2E quantizer with the ``kd`` loss
  against the float checkpoint, then the ``int8-qat`` export (trained ranges, no re-calibration),
  validated in the real runtime against the float model. Writes DIR/export/<target>/model_int8-qat.*,
  DIR/export/summary.json and DIR/qat.json (the fine-tuning history). Transfer rows: generated emails (email task) or the MNIST training images (mnist task).
- ``prune``: structured pruning of an email student (embedding columns, hidden units) with torch-pruning,
  recovered with ``kd`` against the unpruned model. Writes DIR/student.safetensors (+ .json) and
  DIR/prune.json; ``--export`` then exports it to every target (DIR/export/summary.json).
- ``pareto``: every student x setting (fp32, PTQ int8, QAT+KD int8) x target, exported through the
  validation gate, evaluated over the task's evaluation set and timed in one run
  (``kdmobile.compress.pareto``): DIR/pareto.md, .json, .svg.

Exit codes: 0 ok, 1 an artifact failed validation, 2 bad usage.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress",
        help="quantization-aware training or structured pruning, both recovered with KD",
        description="Distillation-aware compression: QAT with KD (int8-qat artifacts) or structured pruning "
        "with KD (a smaller checkpoint).",
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    q = kinds.add_parser("qat", help="QAT + KD, then export int8-qat and validate against the float model")
    q.add_argument("checkpoint")
    q.add_argument(
        "--target", default="executorch", help="whose quantizer to train with (default executorch)"
    )
    q.add_argument("--epochs", type=int, default=3)
    q.add_argument("--lr", type=float, default=1e-4)
    q.add_argument("--temperature", type=float, default=4.0)
    q.add_argument("--transfer", type=int, default=8000, help="transfer rows (default 8000)")
    q.add_argument("--heldout", type=int, default=512, help="real held-out samples to validate on")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("-o", "--out", required=True)
    q.set_defaults(func=run_qat)

    r = kinds.add_parser("prune", help="structured pruning of an email student, recovered with KD")
    r.add_argument("checkpoint")
    r.add_argument("--dim", type=int, required=True, help="embedding columns to keep")
    r.add_argument("--hidden", type=int, required=True, help="hidden units to keep")
    r.add_argument("--epochs", type=int, default=4)
    r.add_argument("--transfer", type=int, default=4000, help="generated transfer emails (default 4000)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument(
        "--distill",
        metavar="CONFIG",
        help="then distil the pruned student again with this `kdmobile distill` config (its task's teacher, "
        "data and losses; e.g. configs/email.toml): writes DIR/distilled/student.safetensors",
    )
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--distill overrides",
    )
    r.add_argument("--export", action="store_true", help="then export the pruned student to every target")
    r.add_argument("-o", "--out", required=True)
    r.set_defaults(func=run_prune)

    t = kinds.add_parser(
        "pareto",
        help="size / speed / accuracy of every compression setting, measured in one run",
        description="Export, validate, evaluate and time fp32, PTQ int8 and (with --qat) QAT+KD int8 of each "
        "student on each target; write pareto.md/.json/.svg (and the section of a bench report).",
    )
    t.add_argument(
        "--student",
        action="append",
        required=True,
        metavar="NAME=CHECKPOINT",
        help="a student checkpoint to compare (repeat; the first one's fp32 is each target's latency reference)",
    )
    t.add_argument("--task", help="the task plug-in (default: the first checkpoint's)")
    t.add_argument("--targets", nargs="+", default=["executorch", "tflite"])
    t.add_argument("--qat", nargs="*", default=[], metavar="NAME", help="also QAT+KD int8 of these students")
    t.add_argument("--qat-epochs", type=int, default=3)
    t.add_argument("--qat-transfer", type=int, default=8000, help="QAT transfer rows (default 8000)")
    t.add_argument("--data", default="heldout", help="the task's evaluation split (default heldout)")
    t.add_argument("--teacher", help="the teacher's weights (default: the task finds them)")
    t.add_argument("--blocks", type=int, default=60, help="interleaved timing blocks per target")
    t.add_argument("--calls", type=int, default=20, help="calls per timing block")
    t.add_argument("--report", help="a bench report folder: add the table and plot to its report.html")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("-o", "--out", required=True)
    t.set_defaults(func=run_pareto)


def _quiet() -> None:
    import os
    import warnings

    if not os.environ.get("KDMOBILE_VERBOSE"):
        warnings.filterwarnings("ignore")


def _log(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr)


def run_qat(args: argparse.Namespace) -> int:
    from kdmobile.compress.qat import QAT_PRECISION, qat_checkpoint
    from kdmobile.errors import CheckFailed

    _quiet()
    result = qat_checkpoint(
        args.checkpoint,
        args.target,
        args.out,
        epochs=args.epochs,
        lr=args.lr,
        temperature=args.temperature,
        transfer=args.transfer,
        heldout=args.heldout,
        seed=args.seed,
        log=_log,
    )
    res = result.result(args.target, QAT_PRECISION)
    print(result)
    if not result.ok:
        raise CheckFailed(f"{args.target} {QAT_PRECISION} failed at {res.stage}: {res.reason}")
    return 0


def run_pareto(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from kdmobile.compress.pareto import parse_students, render_markdown, run

    _quiet()
    data = run(
        parse_students(args.student),
        args.out,
        targets=args.targets,
        task=args.task,
        qat=args.qat,
        qat_epochs=args.qat_epochs,
        qat_transfer=args.qat_transfer,
        data=args.data,
        teacher=args.teacher,
        blocks=args.blocks,
        calls_per_block=args.calls,
        seed=args.seed,
        report_dir=args.report,
        command="kdmobile " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        log=_log,
    )
    print(render_markdown(data))
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from kdmobile.compress.prune import prune_checkpoint
    from kdmobile.errors import CheckFailed

    _quiet()
    path, rec = prune_checkpoint(
        args.checkpoint,
        args.out,
        dim=args.dim,
        hidden=args.hidden,
        n_transfer=args.transfer,
        epochs=args.epochs,
        seed=args.seed,
        log=_log,
    )
    print(
        f"pruned {rec['params_before']:,} -> {rec['params_after']:,} parameters "
        f"({rec['teacher_fraction']:.4f} of the teacher); held-out agreement with the unpruned student: "
        f"{rec['heldout_agreement_pruned']:.3f} pruned, {rec['heldout_agreement_recovered']:.3f} after KD; {path}"
    )
    from pathlib import Path

    if args.distill:
        from kdmobile.compress.prune import distill_checkpoint

        path, history = distill_checkpoint(
            path, args.distill, Path(args.out) / "distilled", overrides=args.overrides, log=_log
        )
        print(f"distilled after pruning: {path} ({len(history['epochs'])} epochs)")
    if not args.export:
        return 0

    from kdmobile.export.runner import export_checkpoint, format_table

    summary = export_checkpoint(path, Path(args.out) / "export", all_targets=True, log=_log)
    print(format_table(summary))
    if not summary["ok"]:
        raise CheckFailed("an artifact of the pruned student failed; see the table above")
    return 0
