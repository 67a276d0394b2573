"""Reproduce the MNIST table of Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network", §3.

    python -m kdmobile.tasks.mnist.hinton -o build/bench/hinton_mnist.json          # make bench-mnist
    python -m kdmobile.tasks.mnist.hinton -o /tmp/quick.json --subset 5000 --teacher-epochs 10 --student-epochs 10

Three nets, all trained with ``kdmobile.distill.Distiller`` (SGD + Nesterov, one-cycle schedule, batch 128):

1. teacher 784-1200-1200-10, dropout 0.2 (input) / 0.5 (hidden), max-norm, inputs jittered by up to
   2 px (fresh shifts every epoch) -- the paper's regularised net (67 test errors);
2. scratch student 784-800-800-10 on the plain images and hard labels, no regularisation (paper: 146);
3. the same student distilled at T=20 (``kd`` loss, small hard-label weight), teacher online, with
   *consistent augmentation*: teacher and student see the same jittered images (paper: 74).

The paper trains on all 60,000 training images (here ``train+val`` of Nielsen's split) and reports errors
on the 10,000 test images; recovered fraction = (scratch - distilled) / (scratch - teacher) (paper: 0.91).
Our schedule is much shorter than the paper's (tens of epochs, not thousands); the JSON records it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PAPER = {"teacher_errors": 67, "scratch_errors": 146, "distilled_errors": 74, "recovered_fraction": 0.91}


@dataclass(frozen=True)
class Schedule:
    """Settings of one run of the experiment (recorded in the JSON)."""

    train_split: str = "train+val"
    subset: int = 0
    test_subset: int = 0
    teacher_epochs: int = 80
    student_epochs: int = 60
    batch_size: int = 128
    teacher_lr: float = 0.1
    student_lr: float = 0.1
    max_norm: float = 3.5
    jitter: int = 2
    temperature: float = 20.0
    alpha: float = 0.1
    teacher_mode: str = "online"  # "online": fresh consistent jitter every epoch; "cache": fixed copies
    copies: int = 8
    seed: int = 0
    threads: int = 2


def run(
    schedule: Schedule,
    out_dir: str | Path = "build/bench/hinton",
    *,
    progress: bool = True,
    log: Any = None,
    teacher_checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Train teacher, scratch student and distilled student; return the result table as a dict."""
    import torch

    from kdmobile.distill import CacheConfig, DistillConfig, Distiller, OptimConfig, TrainConfig, evaluate
    from kdmobile.tasks.mnist.data import make_set, split
    from kdmobile.tasks.mnist.model import MLP

    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    s = schedule
    torch.set_num_threads(s.threads)
    out_dir = Path(out_dir)
    x, y = split(s.train_split, s.subset)
    xt, yt = split("test", s.test_subset)
    test = make_set(xt, yt)
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}

    def train(name: str, model: torch.nn.Module, teacher: Any, data: Any, loss: dict, epochs: int, lr: float,
              cache: bool = False, model_config: dict | None = None) -> torch.nn.Module:  # fmt: skip
        cfg = DistillConfig(
            loss=loss,
            train=TrainConfig(epochs=epochs, batch_size=s.batch_size, seed=s.seed, progress=progress),
            optim=OptimConfig(name="sgd", lr=lr, momentum=0.9, nesterov=True, schedule="onecycle"),
            cache=CacheConfig(enabled=cache, dtype="float32"),
        )
        say(f"hinton: training {name} ({epochs} epochs, {len(data)} examples)")
        t0 = time.perf_counter()
        d = Distiller(
            model, teacher, cfg, run_dir=out_dir / name, architecture="mlp", model_config=model_config
        )
        model, _ = d.fit(data, on_existing="discard")
        seconds[name] = round(time.perf_counter() - t0, 1)
        return model

    t_cfg = {"hidden": [1200, 1200], "dropout_input": 0.2, "dropout_hidden": 0.5, "max_norm": s.max_norm}
    s_cfg = {"hidden": [800, 800]}

    if teacher_checkpoint:
        from kdmobile.checkpoint import load_checkpoint

        say(f"hinton: reusing the teacher {teacher_checkpoint} (not trained in this run)")
        teacher, _ = load_checkpoint(teacher_checkpoint)
    else:
        torch.manual_seed(s.seed + 1)
        teacher = train(
            "teacher", MLP(**t_cfg), None, make_set(x, y, augment="epoch", jitter=s.jitter, seed=s.seed + 1),
            {"ce": {}}, s.teacher_epochs, s.teacher_lr, model_config=t_cfg,
        )  # fmt: skip
    teacher_errors = evaluate(teacher, test)["errors"]
    say(f"hinton: teacher {teacher_errors} test errors")

    torch.manual_seed(s.seed)
    scratch = train("scratch", MLP(**s_cfg), None, make_set(x, y), {"ce": {}}, s.student_epochs, s.student_lr,
                    model_config=s_cfg)  # fmt: skip
    scratch_errors = evaluate(scratch, test)["errors"]
    say(f"hinton: scratch student {scratch_errors} test errors")

    kd = {"kd": {"temperature": s.temperature, "alpha": s.alpha}}
    if s.teacher_mode == "cache":
        transfer = make_set(x, y, augment="fixed", jitter=s.jitter, copies=s.copies, seed=s.seed)
    else:
        transfer = make_set(x, y, augment="epoch", jitter=s.jitter, seed=s.seed)
    torch.manual_seed(s.seed)  # the same initial weights as the scratch student
    distilled = train("distilled", MLP(**s_cfg), teacher, transfer, kd, s.student_epochs, s.student_lr,
                      cache=s.teacher_mode == "cache", model_config=s_cfg)  # fmt: skip
    distilled_errors = evaluate(distilled, test)["errors"]
    say(f"hinton: distilled student {distilled_errors} test errors")

    gap = scratch_errors - teacher_errors
    recovered = (scratch_errors - distilled_errors) / gap if gap > 0 else float("nan")
    return {
        "teacher_errors": teacher_errors,
        "scratch_errors": scratch_errors,
        "distilled_errors": distilled_errors,
        "recovered_fraction": round(recovered, 4) if math.isfinite(recovered) else None,
        "test_size": len(test),
        "train_size": len(x),
        "minutes": round((time.perf_counter() - t_start) / 60.0, 2),
        "seconds": seconds,
        "schedule": asdict(s),
        "teacher_reused_from": str(teacher_checkpoint) if teacher_checkpoint else None,
        "paper": PAPER,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": s.threads,
        },
    }


def main(argv: list[str] | None = None) -> int:
    # On a shared CPU, OpenMP threads that spin while waiting thrash (measured here: 3 vs 42 steps/s with
    # 2 threads and other jobs running). Must be set before torch (and its OpenMP runtime) is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    d = Schedule()
    p = argparse.ArgumentParser(
        prog="python -m kdmobile.tasks.mnist.hinton",
        description="Hinton et al. 2015 §3 on MNIST: teacher, scratch student, distilled student (test errors).",
    )
    p.add_argument("-o", "--output", default="build/bench/hinton_mnist.json", help="result JSON")
    p.add_argument("--run-dir", default="build/bench/hinton", help="checkpoints of the three nets")
    p.add_argument("--train-split", default=d.train_split, choices=["train", "train+val"])
    p.add_argument("--subset", type=int, default=d.subset, help="first N training images (0 = all)")
    p.add_argument("--test-subset", type=int, default=d.test_subset, help="first N test images (0 = all 10k)")
    p.add_argument("--teacher-epochs", type=int, default=d.teacher_epochs)
    p.add_argument("--student-epochs", type=int, default=d.student_epochs, help="scratch and distilled alike")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--teacher-lr", type=float, default=d.teacher_lr)
    p.add_argument("--student-lr", type=float, default=d.student_lr)
    p.add_argument("--max-norm", type=float, default=d.max_norm, help="teacher max-norm (0 = off)")
    p.add_argument("--jitter", type=int, default=d.jitter)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--alpha", type=float, default=d.alpha, help="weight of the hard-label term")
    p.add_argument("--teacher-mode", choices=["online", "cache"], default=d.teacher_mode)
    p.add_argument("--copies", type=int, default=d.copies, help="fixed jittered copies (cache mode)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument(
        "--teacher", metavar="CKPT", help="reuse a trained teacher checkpoint instead of training one"
    )
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    schedule = Schedule(
        train_split=a.train_split, subset=a.subset, test_subset=a.test_subset, teacher_epochs=a.teacher_epochs,
        student_epochs=a.student_epochs, batch_size=a.batch_size, teacher_lr=a.teacher_lr,
        student_lr=a.student_lr, max_norm=a.max_norm, jitter=a.jitter, temperature=a.temperature,
        alpha=a.alpha, teacher_mode=a.teacher_mode, copies=a.copies, seed=a.seed, threads=a.threads,
    )  # fmt: skip
    from kdmobile.io import write_json

    result = run(schedule, a.run_dir, progress=not a.no_progress, teacher_checkpoint=a.teacher)
    write_json(a.output, result)
    print(json.dumps({k: result[k] for k in ("teacher_errors", "scratch_errors", "distilled_errors",
                                             "recovered_fraction", "test_size", "minutes")}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
