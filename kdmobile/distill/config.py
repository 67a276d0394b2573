"""Distillation settings: frozen dataclasses, read from TOML by ``kdmobile.config``.

    kdmobile distill configs/mnist_quick.toml --set train.epochs=2 --set loss.kd.temperature=4

TOML layout (every table optional)::

    task = "mnist"                 # the task plug-in (kdmobile.task) builds teacher, student and data
    [task_args]                    # passed to the task factory, which checks its own keys
    [loss.kd]                      # term name -> settings; "type" defaults to the term name
    weight = 1.0
    temperature = 20.0
    [train]   epochs, batch_size, seed, checkpoint_every, ...
    [optim]   name = "sgd" | "adamw", lr, schedule = "constant" | "cosine" | "linear" | "onecycle", ...
    [cache]   enabled, topk, dtype, dir
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

CONFIG_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """The training loop.

    Attributes:
        epochs: passes over the transfer set.
        batch_size: per process (under DDP the global batch is ``batch_size * world_size``).
        seed: seeds the student's initial RNG stream, the shuffling and dropout.
        checkpoint_every: also checkpoint every N optimizer steps (0 = only at the end of each epoch).
        keep_checkpoints: how many step checkpoints to keep (the newest ones).
        num_threads: ``torch.set_num_threads`` (0 = leave as is).
        eval_batch_size: batch size for ``eval_set`` (0 = ``2 * batch_size``).
        progress: tqdm progress bars (rank 0 only).
        drop_last: drop the last incomplete batch of each epoch.
    """

    epochs: int = 1
    batch_size: int = 64
    seed: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    num_threads: int = 0
    eval_batch_size: int = 0
    progress: bool = True
    drop_last: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            raise ValueError("train.checkpoint_every must be >= 0 and train.keep_checkpoints >= 1")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule (stepped once per optimizer step).

    Attributes:
        name: ``adamw`` or ``sgd``.
        lr: peak learning rate.
        weight_decay: decoupled for AdamW, L2 for SGD.
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        betas: AdamW betas.
        schedule: ``constant``, ``cosine`` (to ``min_lr_ratio * lr``), ``linear`` (to 0) or ``onecycle``
            (``torch.optim.lr_scheduler.OneCycleLR``, cosine annealing).
        warmup: fraction of all steps spent warming up linearly (constant/cosine/linear; for onecycle it
            is ``pct_start``, default 0.3 when 0).
        min_lr_ratio: final lr of ``cosine`` as a fraction of ``lr``.
        grad_clip: clip the global gradient norm (0 = off).
    """

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["constant", "cosine", "linear", "onecycle"] = "constant"
    warmup: float = 0.0
    min_lr_ratio: float = 0.0
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"optim.warmup is a fraction of the steps in [0, 1), got {self.warmup}")


@dataclass(frozen=True)
class CacheConfig:
    """Teacher-output cache.

    Attributes:
        enabled: run the teacher once and read its logits from disk every epoch (False: teacher online).
        dir: cache directory (empty: ``<run_dir>/teacher_cache``).
        topk: 0 stores all logits; k > 0 stores the top-k logits (fp16), indices and the remaining mass.
        dtype: dtype of full logits (top-k values are always fp16).
        batch_size: batch size of the teacher pass (0 = ``2 * train.batch_size``).
    """

    enabled: bool = False
    dir: str = ""
    topk: int = 0
    dtype: Literal["float32", "float16"] = "float32"
    batch_size: int = 0

    def __post_init__(self) -> None:
        if self.topk < 0:
            raise ValueError(f"cache.topk must be >= 0, got {self.topk}")


@dataclass(frozen=True)
class DistillConfig:
    """Everything ``kdmobile distill`` needs.

    Attributes:
        task: a task plug-in name (``kdmobile.task``), ``"pkg.module:Class"`` or ``"pkg.module:function"``; used by the
            CLI only (the Python API takes the student, teacher and datasets directly).
        task_args: passed to the task factory, which validates its own keys.
        loss: term name -> settings (``type``, ``weight`` and the loss's own keyword arguments).
        train: the training loop.
        optim: optimizer and schedule.
        cache: teacher-output cache.
        run_dir: where checkpoints and the final student go (the CLI's ``-o`` overrides it).
        version: config schema version.
    """

    task: str = ""
    task_args: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, dict[str, Any]] = field(default_factory=lambda: {"kd": {}})
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    run_dir: str = ""
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        if not self.loss:
            raise ValueError("loss: at least one loss term is needed, e.g. [loss.kd]")
        if self.version != CONFIG_VERSION:
            raise ValueError(
                f"version {self.version} is not supported (this kdmobile reads {CONFIG_VERSION})"
            )
