"""``kdmobile compress``: distillation-aware compression of a trained student.

    kdmobile compress qat build/email/student.safetensors --target executorch -o build/qat
    kdmobile compress prune build/email/student.safetensors --dim 24 --hidden 64 -o build/pruned --export

- ``qat``: quantization-aware fine-tuning through the target's own PT2E quantizer with the ``kd`` loss
  against the float checkpoint, then the ``int8-qat`` export (trained ranges, no re-calibration),
  validated in the real runtime against the float model. Writes DIR/export/<target>/model_int8-qat.*,
  DIR/export/summary.json and DIR/qat.json (the fine-tuning history). Transfer rows: generated emails (email task) or the MNIST training images (mnist task).
- ``prune``: structured pruning of an email student (embedding columns, hidden units) with torch-pruning,
  recovered with ``kd`` against the unpruned model. Writes DIR/student.safetensors (+ .json) and
  DIR/prune.json; ``--export`` then exports it to every target (DIR/export/summary.json).

Exit codes: 0 ok, 1 an artifact failed validation, 2 bad usage.
"""

from __future__ import annotations

import argparse

from kdmobile.errors import UsageError


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
    r.add_argument("--export", action="store_true", help="then export the pruned student to every target")
    r.add_argument("-o", "--out", required=True)
    r.set_defaults(func=run_prune)


def _quiet() -> None:
    import os
    import warnings

    if not os.environ.get("KDMOBILE_VERBOSE"):
        warnings.filterwarnings("ignore")


def _log(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr)


def run_qat(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    import kdmobile
    from kdmobile.checkpoint import load_checkpoint
    from kdmobile.compress.qat import DEFAULT_LOSS, QAT_PRECISION, check_target, qat_distill
    from kdmobile.distill import CacheConfig, DistillConfig, OptimConfig, TrainConfig
    from kdmobile.errors import CheckFailed
    from kdmobile.export.specs import model_spec_for
    from kdmobile.io import write_json

    _quiet()
    check_target(args.target)
    out = Path(args.out)
    model, meta = load_checkpoint(args.checkpoint)
    model.eval()
    spec = model_spec_for(model, meta, n_heldout=args.heldout, seed=args.seed)
    if spec.real_split is None:
        raise UsageError(f"{args.checkpoint}: its task has no real held-out samples to validate QAT on")
    heldout = spec.validation[spec.real_split]
    train_set = _transfer_set(spec.task, meta, args.transfer, args.seed)
    cfg = DistillConfig(
        loss={**DEFAULT_LOSS, "kd": {**DEFAULT_LOSS["kd"], "temperature": args.temperature}},
        train=TrainConfig(epochs=args.epochs, batch_size=64, seed=args.seed, progress=False),
        optim=OptimConfig(name="adamw", lr=args.lr, weight_decay=0.0, schedule="cosine"),
        cache=CacheConfig(enabled=True),
    )
    torch.manual_seed(args.seed)
    example = tuple(torch.from_numpy(x[:2].copy()) for x in heldout)
    qat = qat_distill(
        model,
        train_set,
        example_inputs=example,
        target=args.target,
        config=cfg,
        run_dir=out / "run",
        log=_log,
    )
    result = kdmobile.export(
        qat.converted,
        tuple(torch.from_numpy(x[:1].copy()) for x in heldout),
        targets=args.target,
        precisions=[QAT_PRECISION],
        validation=heldout,
        input_names=spec.input_names,
        output_names=spec.output_names,
        reference=model,  # validated against the float checkpoint
        out_dir=out / "export",
        log=_log,
    )
    res = result.result(args.target, QAT_PRECISION)
    write_json(out / "qat.json", {"checkpoint": str(args.checkpoint), "history": qat.history["epochs"]})
    print(result)
    if not result.ok:
        raise CheckFailed(f"{args.target} {QAT_PRECISION} failed at {res.stage}: {res.reason}")
    return 0


def _transfer_set(task: str, meta: dict, n: int, seed: int):
    if task == "email":
        from kdmobile.compress.prune import email_transfer_set

        return email_transfer_set(meta.get("tokenizer"), n, seed)
    if task == "mnist":
        from kdmobile.tasks.mnist.data import make_set, split

        return make_set(*split("train", subset=n), hide_labels=True)
    raise UsageError(f"kdmobile compress qat has transfer data for the email and mnist tasks, not {task!r}")


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
    if not args.export:
        return 0
    from pathlib import Path

    from kdmobile.export.runner import export_checkpoint, format_table

    summary = export_checkpoint(path, Path(args.out) / "export", all_targets=True, log=_log)
    print(format_table(summary))
    if not summary["ok"]:
        raise CheckFailed("an artifact of the pruned student failed; see the table above")
    return 0
