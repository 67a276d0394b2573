"""``kdmobile export``: turn a trained student into validated on-device artifacts.

    kdmobile export build/email/student.safetensors --all --bundle -o build/export
    kdmobile export build/email/student.safetensors --target tflite --target onnx-web --precision int8 -o build/export

Exit codes: 0 every artifact passed (Core ML off macOS counts as conversion-validated), 1 an artifact
failed (the summary names the stage and why), 2 bad usage.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ExecuTorch / Core ML / TFLite / ONNX-web and validate every artifact",
        description="Export a checkpoint to on-device artifacts, validate each in its real runtime against the "
        "eager model, and write DIR/summary.json (one failing target never stops the others).",
    )
    p.add_argument("checkpoint", help="a .safetensors checkpoint with its .json metadata beside it")
    p.add_argument(
        "--target",
        "-t",
        action="append",
        dest="targets",
        metavar="NAME",
        help="target name (repeatable; see `kdmobile targets`)",
    )
    p.add_argument("--all", action="store_true", dest="all_targets", help="every registered target")
    p.add_argument(
        "--precision",
        "-p",
        nargs="+",
        action="extend",
        dest="precisions",
        metavar="P",
        help="fp32, fp16, int8 and/or int8-full (default: each target's own set)",
    )
    p.add_argument("-o", "--out", required=True, help="output directory (artifacts, sidecars, summary.json)")
    p.add_argument("--bundle", action="store_true", help="also write DIR/<target>/bundle/ hand-off folders")
    p.add_argument("--ort", action="store_true", help="onnx-web: also write the .ort format")
    p.add_argument(
        "--heldout", type=int, default=512, help="real held-out samples to validate on (default 512)"
    )
    p.add_argument("--random", type=int, default=64, help="seeded random samples to validate on (default 64)")
    p.add_argument(
        "--calibration", type=int, default=128, help="real samples for int8 calibration (default 128)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="runtime threads during validation (default 1)")
    p.add_argument(
        "--trust-unverified", action="store_true", help="accept a checkpoint whose .json has no sha256"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import time
    import warnings

    import torch

    from kdmobile.errors import UsageError
    from kdmobile.export.runner import export_checkpoint, format_table

    if args.all_targets and args.targets:
        raise UsageError("pass either --all or --target NAME, not both")
    for name, value in (
        ("--heldout", args.heldout),
        ("--random", args.random),
        ("--calibration", args.calibration),
        ("--threads", args.threads),
    ):
        if value < 1:
            raise UsageError(f"{name} must be >= 1, got {value}")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if not os.environ.get("KDMOBILE_VERBOSE"):
        # The converters warn about their own internals (deprecations, untested torch versions) on every
        # call; the summary below is what matters. KDMOBILE_VERBOSE=1 shows them.
        warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    summary = export_checkpoint(
        args.checkpoint,
        args.out,
        targets=args.targets,
        all_targets=args.all_targets,
        precisions=args.precisions,
        bundle=args.bundle,
        ort_format=args.ort,
        n_heldout=args.heldout,
        n_random=args.random,
        n_calibration=args.calibration,
        seed=args.seed,
        threads=args.threads,
        trust_unverified=args.trust_unverified,
        log=lambda m: print(m, flush=True),
    )
    print()
    print(format_table(summary))
    print(f"\nsummary: {os.path.join(args.out, 'summary.json')}  ({time.perf_counter() - t0:.1f} s)")
    return 0 if summary["ok"] else 1
