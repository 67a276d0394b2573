"""The ``ModelSpec`` of a checkpoint: its task plug-in builds it (names, shapes, real samples).

    python -c "from kdmobile.export.specs import model_spec_for; from kdmobile.checkpoint import load_checkpoint; \
m, meta = load_checkpoint('build/email/student.safetensors'); print(model_spec_for(m, meta).inputs)"

The checkpoint metadata's ``task`` (or, without one, the task that owns its ``architecture``) is looked up
through ``kdmobile.task.get_task``; its ``model_spec`` gives the spec. A model without a task is exported
through ``kdmobile.export(model, example_inputs, validation=...)`` instead.
"""

from __future__ import annotations

from typing import Any

from kdmobile.errors import UsageError
from kdmobile.export.base import ModelSpec


def checkpoint_task(meta: dict[str, Any]) -> str | None:
    """The task a checkpoint names, or the task that owns its bare architecture name."""
    from kdmobile.task import task_for_architecture

    arch = meta.get("architecture") or ""
    return meta.get("task") or (task_for_architecture(arch) if ":" not in arch else None)


def model_spec_for(
    model: Any,
    meta: dict[str, Any],
    *,
    n_heldout: int = 512,
    n_random: int = 64,
    n_calibration: int = 128,
    seed: int = 0,
) -> ModelSpec:
    """The task plug-in's ``ModelSpec`` for a checkpoint (UsageError when it names no task)."""
    from kdmobile.task import get_task, task_names

    task = checkpoint_task(meta)
    if not task:
        raise UsageError(
            f"checkpoint metadata names no task and architecture {meta.get('architecture')!r} belongs to none; "
            f'add "task": one of {", ".join(task_names())} to its JSON, or give real samples '
            "(kdmobile export CKPT --validation FILE.npz)"
        )
    return get_task(task).model_spec(
        model, meta, n_heldout=n_heldout, n_random=n_random, n_calibration=n_calibration, seed=seed
    )
