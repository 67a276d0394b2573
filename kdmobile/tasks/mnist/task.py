"""The ``mnist`` task for ``kdmobile distill``: MLP teacher and student on the real MNIST.

    kdmobile distill configs/mnist_quick.toml -o build/runs/mnist_quick

``task_args`` (checked; a misspelt key exits 2):

- ``teacher_checkpoint``: a ``kdmobile.checkpoint`` file of the teacher (e.g. the one
  ``python -m kdmobile.tasks.mnist.hinton`` writes to ``build/bench/hinton/teacher/student.safetensors``).
  Empty: a teacher is trained here with ``teacher_*`` settings, saved under ``build/mnist/teachers/<hash>/``
  and reused by later runs with the same settings.
- ``train_split`` / ``subset``: the transfer set (``train``, ``train+val``; first ``subset`` rows).
- ``eval_split`` / ``eval_subset``: evaluated after each epoch (``test`` by default).
- ``augment`` (``none``, ``fixed``, ``epoch``), ``jitter``, ``copies``: consistent augmentation, i.e. teacher
  and student see the same jittered image (``fixed`` copies work with the cache, ``epoch`` needs the
  teacher online).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from kdmobile import config as C
from kdmobile.distill.tasks import Task
from kdmobile.errors import UsageError
from kdmobile.tasks.mnist.data import make_set, split
from kdmobile.tasks.mnist.model import MLP


@dataclass(frozen=True)
class MnistTaskConfig:
    teacher_checkpoint: str = ""
    train_split: Literal["train", "train+val", "val"] = "train"
    subset: int = 0
    eval_split: Literal["test", "val"] = "test"
    eval_subset: int = 0
    augment: Literal["none", "fixed", "epoch"] = "none"
    jitter: int = 2
    copies: int = 1
    hide_labels: bool = False
    student_hidden: list[int] = field(default_factory=lambda: [800, 800])
    student_dropout: float = 0.0
    teacher_hidden: list[int] = field(default_factory=lambda: [1200, 1200])
    teacher_epochs: int = 3
    teacher_lr: float = 0.1
    teacher_batch_size: int = 128
    teacher_dropout_input: float = 0.2
    teacher_dropout_hidden: float = 0.5
    teacher_root: str = "build/mnist/teachers"


def student_config(cfg: MnistTaskConfig) -> dict[str, Any]:
    return {"hidden": list(cfg.student_hidden), "dropout_hidden": cfg.student_dropout}


def train_teacher(cfg: MnistTaskConfig, seed: int, progress: bool = True) -> torch.nn.Module:
    """Train (or reuse) a teacher on hard labels with dropout and ±jitter px shifts each epoch."""
    from kdmobile.checkpoint import load_checkpoint
    from kdmobile.distill import DistillConfig, Distiller, OptimConfig, TrainConfig

    settings = {k: v for k, v in asdict(cfg).items() if k.startswith("teacher_") and k != "teacher_root"}
    settings.update(train_split=cfg.train_split, subset=cfg.subset, jitter=cfg.jitter, seed=seed, version=1)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    run_dir = Path(cfg.teacher_root) / digest
    ckpt = run_dir / "student.safetensors"
    if ckpt.is_file():
        model, _ = load_checkpoint(ckpt)
        return model
    model_config = {
        "hidden": list(cfg.teacher_hidden),
        "dropout_input": cfg.teacher_dropout_input,
        "dropout_hidden": cfg.teacher_dropout_hidden,
    }
    torch.manual_seed(seed + 1)
    teacher = MLP(**model_config)
    x, y = split(cfg.train_split, cfg.subset)
    dcfg = DistillConfig(
        loss={"ce": {}},
        train=TrainConfig(
            epochs=cfg.teacher_epochs, batch_size=cfg.teacher_batch_size, seed=seed + 1, progress=progress
        ),
        optim=OptimConfig(name="sgd", lr=cfg.teacher_lr, nesterov=True, schedule="onecycle"),
    )
    distiller = Distiller(teacher, None, dcfg, run_dir=run_dir, architecture="mlp", model_config=model_config)
    teacher, _ = distiller.fit(
        make_set(x, y, augment="epoch" if cfg.jitter else "none", jitter=cfg.jitter, seed=seed + 1)
    )
    return teacher.eval()


def make_mnist_task(args: dict[str, Any], seed: int = 0) -> Task:
    """Build teacher, student and data of the MNIST task from ``task_args``."""
    from kdmobile.checkpoint import load_checkpoint

    cfg = C.build(MnistTaskConfig, args, where="task_args")
    if cfg.teacher_checkpoint:
        path = Path(cfg.teacher_checkpoint)
        if not path.is_file():
            raise UsageError(
                f"task_args.teacher_checkpoint: {path} not found (train one with "
                "python -m kdmobile.tasks.mnist.hinton, or leave it empty to train a quick teacher here)"
            )
        teacher, _ = load_checkpoint(path)
    else:
        teacher = train_teacher(cfg, seed)
    x, y = split(cfg.train_split, cfg.subset)
    xe, ye = split(cfg.eval_split, cfg.eval_subset)
    train = make_set(
        x,
        y,
        augment=cfg.augment,
        jitter=cfg.jitter,
        copies=cfg.copies,
        seed=seed,
        hide_labels=cfg.hide_labels,
    )
    torch.manual_seed(seed)
    model_config = student_config(cfg)
    return Task(
        student=MLP(**model_config),
        teacher=teacher.eval(),
        train=train,
        eval=make_set(xe, ye),
        architecture="mlp",
        model_config=model_config,
        extra={"task_args": asdict(cfg)},
    )
