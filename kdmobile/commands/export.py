"""``kdmobile export``: turn a model into validated on-device artifacts.

    kdmobile export build/email/student.safetensors --all --bundle -o build/export
    kdmobile export model.pt2 --all --validation val.npz -o build/my-export
    kdmobile export build/email/student.safetensors --target tflite --target onnx-web --precision int8 -o build/export

MODEL is a program saved with ``torch.export.save`` (``.pt2``: its example inputs are the samples,
``ep.module()`` is the model) or a kdmobile checkpoint (``.safetensors`` + ``.json``) whose architecture is a
task's name or an importable ``package.module:Class``. A checkpoint that names a task gets the task's real
samples; any other model validates on ``--validation FILE.npz`` (arrays named after the model's inputs, or
``x0``, ``x1``...; ``labels`` ignored), or, without it, on seeded synthetic inputs, with a loud warning.

Exit codes: 0 every artifact passed (Core ML off macOS counts as conversion-validated), 1 an artifact
failed (the summary names the stage and why), 2 bad usage (a file that does not load, a module path that
does not import, npz arrays that do not match the inputs).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ExecuTorch / Core ML / TFLite / ONNX-web and validate every artifact",
        description="Export a checkpoint or a torch.export program (.pt2) to on-device artifacts, validate "
        "each in its real runtime against the eager model, and write DIR/summary.json (one failing target "
        "never stops the others).",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a torch.export program (.pt2) or a .safetensors checkpoint with its .json metadata beside it",
    )
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
        "--calibration",
        default=None,
        metavar="FILE.npz|N",
        help="int8 calibration samples: a .npz of real inputs, or how many of the task's real samples "
        "(default 128; without a task: the validation samples)",
    )
    p.add_argument(
        "--validation",
        default=None,
        metavar="FILE.npz",
        help="real validation inputs (arrays named after the model's inputs, or x0, x1, ...); without it a "
        "model without a task is validated on synthetic inputs only",
    )
    p.add_argument(
        "--fidelity-only",
        action="store_true",
        help="the --validation inputs are stand-ins, not real data (random-init model, generated inputs): "
        "judge artifacts by output fidelity (SQNR, max error), not top-1 agreement",
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
    from kdmobile.export.runner import format_table

    if args.all_targets and args.targets:
        raise UsageError("pass either --all or --target NAME, not both")
    n_calibration, calibration = 128, None
    if args.calibration is not None:
        if args.calibration.isdigit():
            n_calibration = int(args.calibration)
        else:
            calibration = args.calibration
    for name, value in (
        ("--heldout", args.heldout),
        ("--random", args.random),
        ("--calibration", n_calibration),
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
    from kdmobile.interrupt import sigterm_as_interrupt

    with sigterm_as_interrupt():
        summary = export_model_file(args, calibration, n_calibration, log=lambda m: print(m, flush=True))
    print()
    for w in summary.get("warnings", []):
        print(f"! {w}")
    print(format_table(summary))
    print(f"\nsummary: {os.path.join(args.out, 'summary.json')}  ({time.perf_counter() - t0:.1f} s)")
    return 0 if summary["ok"] else 1


def export_model_file(
    args: argparse.Namespace, calibration: str | None, n_calibration: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Export ``args.model`` by its kind (``.pt2`` program, task checkpoint, other checkpoint); the summary."""
    from pathlib import Path

    from kdmobile.checkpoint import load_checkpoint, read_metadata
    from kdmobile.errors import UsageError
    from kdmobile.export.api import example_from_npz, export
    from kdmobile.export.runner import export_checkpoint, resolve_selection
    from kdmobile.export.specs import checkpoint_task

    resolve_selection(args.targets, args.precisions, args.all_targets)  # bad names exit 2 before any load
    path, validation = Path(args.model), args.validation
    if args.fidelity_only and validation is None:
        raise UsageError(
            "--fidelity-only says how to judge --validation inputs: pass --validation FILE.npz too"
        )
    common = {
        "precisions": args.precisions,
        "bundle": args.bundle,
        "seed": args.seed,
        "threads": args.threads,
    }
    if path.suffix == ".pt2":
        model, example = load_program(path)
    else:
        meta = read_metadata(path)  # UsageError: missing checkpoint or metadata
        if checkpoint_task(meta) and calibration is None and validation is None:
            # the task's own real samples (held-out set, calibration corpus) and bundle extras
            return export_checkpoint(
                path,
                args.out,
                targets=args.targets,
                all_targets=args.all_targets,
                ort_format=args.ort,
                n_heldout=args.heldout,
                n_random=args.random,
                n_calibration=n_calibration,
                trust_unverified=args.trust_unverified,
                log=log,
                **common,
            )
        model, _ = load_checkpoint(path, trust_unverified=args.trust_unverified)
        example = None
    if example is None:
        if validation is None and calibration is None:
            raise UsageError(
                f"{path} carries no example inputs and names no task: pass --validation FILE.npz (real "
                "inputs, arrays named after the model's inputs; its first sample is the export example)"
            )
        example = example_from_npz(model, validation or calibration)
    res = export(
        model,
        example,
        targets="all" if args.all_targets else args.targets,
        calibration=calibration,
        validation=validation,
        out_dir=args.out,
        log=log,
        options={"ort": args.ort},
        checkpoint=path,
        fidelity_only=args.fidelity_only,
        **common,
    )
    return res.summary


def load_program(path: Any) -> tuple[Any, tuple[Any, ...] | None]:
    """``(ep.module(), example args)`` of a ``torch.export.save`` file; UsageError when it does not load."""
    from pathlib import Path

    import torch

    from kdmobile.errors import UsageError

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model file not found: {path}")
    try:
        ep = torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001 - any unreadable program is a usage error
        raise UsageError(
            f"{path} does not load as a torch.export program ({type(e).__name__}: {e}); save one with "
            "torch.export.save(torch.export.export(model, example_inputs), 'model.pt2')"
        ) from None
    example = None
    if ep.example_inputs is not None:
        args, kwargs = ep.example_inputs
        if kwargs:
            raise UsageError(
                f"{path}: the program takes keyword inputs {sorted(kwargs)}; export it positionally"
            )
        example = tuple(args)
    return ep.module(), example
