"""Tasks: what ``kdmobile distill CONFIG`` builds from the config's ``task`` name.

    kdmobile distill configs/mnist_quick.toml      # task = "mnist" -> kdmobile.tasks.mnist.task

A task module registers a factory ``(args: dict, seed: int) -> Task``::

    from kdmobile.distill.tasks import TASKS, Task

    @TASKS.register("email")
    def make_email_task(args: dict, seed: int) -> Task:
        cfg = kdmobile.config.build(EmailTaskConfig, args, where="task_args")  # bad key -> exit 2
        return Task(student=..., teacher=..., train=..., eval=..., architecture="email-student", model_config={...})

``get_task("email")`` imports ``kdmobile.tasks.email.task`` on first use; ``"pkg.module:function"``
names a factory anywhere.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdmobile.errors import UsageError
from kdmobile.registry import Registry


@dataclass
class Task:
    """What a task factory returns.

    Attributes:
        student: the module to train (already initialised from the factory's ``seed``).
        train: transfer set; items ``{"student": ..., "teacher": ..., "label": ...}``.
        teacher: ``nn.Module`` or callable returning logits; None if no loss needs one.
        eval: optional labelled set, evaluated after each epoch (errors, accuracy).
        architecture: ``kdmobile.models`` name for the student checkpoint.
        model_config: keyword arguments that rebuild the student.
        teacher_id: identity of a teacher without a ``state_dict`` (cache key).
        extra: free-form information for the caller (e.g. the resolved task settings).
    """

    student: Any
    train: Any
    teacher: Any = None
    eval: Any = None
    architecture: str | None = None
    model_config: dict[str, Any] = field(default_factory=dict)
    teacher_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


TaskFactory = Callable[..., Task]
TASKS: Registry[TaskFactory] = Registry("task")


def _known() -> list[str]:
    root = Path(__file__).resolve().parent.parent / "tasks"
    found = {p.parent.name for p in root.glob("*/task.py")}
    return sorted(found | set(TASKS.names()))


def get_task(name: str) -> TaskFactory:
    """The factory of task ``name`` (importing ``kdmobile.tasks.<name>.task``) or of ``"module:function"``."""
    if not name:
        raise UsageError(f"the config names no task: set task = one of {', '.join(_known()) or '(none)'}")
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise UsageError(f"task {name!r} cannot be loaded: {e}") from None
    if name not in TASKS:
        modname = f"kdmobile.tasks.{name}.task"
        try:
            importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name is None or not modname.startswith(e.name):
                raise
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}; valid: {', '.join(_known()) or '(none)'}")
    return TASKS.get(name)
