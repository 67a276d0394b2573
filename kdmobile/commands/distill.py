"""``kdmobile distill``: train a student from a config's task, teacher online or from the cache.

kdmobile distill configs/mnist_quick.toml --set train.epochs=2 -o build/runs/mnist
kdmobile distill configs/mnist_quick.toml -o build/runs/mnist --resume
kdmobile distill configs/mnist_quick.toml -o build/runs/mnist --overwrite    # the old run moved aside
torchrun --nproc_per_node 2 -m kdmobile.cli distill configs/mnist_quick.toml -o build/runs/ddp
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "distill",
        help="distil a teacher into a student (config: TOML)",
        description="Train the student of the config's task to match its teacher. Runs unchanged under "
        "torchrun (PyTorch DDP). Writes RUN_DIR/student.safetensors + .json, RUN_DIR/history.json and "
        "resumable checkpoints in RUN_DIR/checkpoints/.",
        epilog="example: kdmobile distill configs/mnist_quick.toml --set train.epochs=2 --set loss.kd.temperature=4",
    )
    p.add_argument("config", help="TOML config file (see configs/mnist_quick.toml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 (repeatable; values are TOML literals)",
    )
    p.add_argument("-o", "--output", metavar="RUN_DIR", help="run directory (default: the config's run_dir)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest valid checkpoint in RUN_DIR/checkpoints (an error if there is none)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in a RUN_DIR that holds an earlier run: its checkpoints, student and history move to "
        "RUN_DIR/previous-TIME/ (without --resume or --overwrite, such a RUN_DIR is an error)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Spinning OpenMP threads thrash on a shared CPU; set before torch (and libgomp) is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from kdmobile import config as C
    from kdmobile.distill import distributed as D
    from kdmobile.distill.config import DistillConfig
    from kdmobile.distill.losses import build_losses
    from kdmobile.distill.tasks import get_task
    from kdmobile.distill.trainer import Distiller, check_run_dir

    cfg = C.load(DistillConfig, args.config, args.overrides)
    build_losses(cfg.loss)  # a bad loss setting or an unknown task fails before anything heavy runs
    factory = get_task(cfg.task)
    run_dir = args.output or cfg.run_dir or f"build/runs/{cfg.task.replace(':', '_')}"
    on_existing = "move" if args.overwrite else "error"
    check_run_dir(run_dir, resume=args.resume, on_existing=on_existing)  # before the task builds a teacher
    if cfg.train.num_threads:
        import torch

        torch.set_num_threads(cfg.train.num_threads)
    env = D.setup()
    try:
        task = factory(dict(cfg.task_args), seed=cfg.train.seed)
        distiller = Distiller(
            task.student,
            task.teacher,
            cfg,
            run_dir=run_dir,
            architecture=task.architecture,
            model_config=task.model_config,
            teacher_id=task.teacher_id,
        )
        _, history = distiller.fit(task.train, task.eval, resume=args.resume, on_existing=on_existing)
    finally:
        D.teardown(env)
    if env.is_main:
        last = history.epochs[-1] if history.epochs else {}
        summary = f"student: {run_dir}/student.safetensors ({history.steps} steps"
        if "eval" in last:
            summary += f", eval errors {last['eval']['errors']}/{last['eval']['n']}"
        print(summary + ")", file=sys.stderr)
    return 0
