"""What ``kdmobile distill CONFIG`` builds from the config's ``task`` name: the task plug-in's set-up.

    kdmobile distill configs/mnist_quick.toml      # task = "mnist" -> kdmobile.task.get_task("mnist")

A task plug-in (``kdmobile.task.Task``) returns a :class:`Task` from ``distill_setup(args, seed)``::

    class EmailTask(kdmobile.task.Task):
        def distill_setup(self, args: dict, seed: int) -> Task:
            cfg = kdmobile.config.build(EmailTaskConfig, args, where="task_args")  # bad key -> exit 2
            return Task(student=..., teacher=..., train=..., eval=..., architecture="email-student", ...)

There is one task registry (``kdmobile.task``); ``"pkg.module:function"`` still names a bare factory.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kdmobile.errors import UsageError


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


def get_task(name: str) -> TaskFactory:
    """The distillation factory ``(args, seed) -> Task`` of task ``name``.

    ``name`` is a registered task plug-in (``kdmobile.task``), a ``"package.module:Class"`` plug-in, or a
    ``"package.module:function"`` factory.
    """
    from kdmobile import task as seam

    if not name:
        raise UsageError(
            f"the config names no task: set task = one of {', '.join(seam.task_names()) or '(none)'}"
        )
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise UsageError(f"task {name!r} cannot be loaded: {e}") from None
        if not (isinstance(obj, seam.Task) or (isinstance(obj, type) and issubclass(obj, seam.Task))):
            return obj  # a factory function
    return seam.get_task(name).distill_setup
