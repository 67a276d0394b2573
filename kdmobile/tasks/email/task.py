"""The ``email`` task for ``kdmobile distill``: the fine-tuned MiniLM teacher, the hashed n-gram student.

    kdmobile distill configs/email.toml -o build/runs/email

``task_args`` is :class:`kdmobile.tasks.email.pipeline.EmailTaskConfig` (``data``, ``teacher``,
``student``, ``demo``, ``workdir``, ``num_threads``); a misspelt key exits 2. The teacher is fine-tuned
once and reused from ``<workdir>/email/teacher-<key>/``; the transfer set is the labelled corpus plus the
unlabelled generated, augmented and chatterbot emails; the generated validation set is evaluated after
each epoch. ``kdmobile demo`` runs the full pipeline (several seeds, baseline, held-out metrics, report).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdmobile import config as C
from kdmobile.distill.tasks import Task


def make_email_task(args: dict[str, Any], seed: int = 0) -> Task:
    """Build teacher, student and data of the email task from ``task_args``."""
    from kdmobile.distill import DistillConfig
    from kdmobile.tasks.email.pipeline import (
        ARCHITECTURE,
        Context,
        EmailTaskConfig,
        new_student,
        stage_data,
        stage_teacher,
        stage_word_vectors,
        student_model_config,
        tokenizer_dict,
    )

    task = C.build(EmailTaskConfig, dict(args), where="task_args")
    ctx = Context(config=DistillConfig(task="email"), task=task, workdir=Path(task.workdir))
    stage_data(ctx)
    stage_teacher(ctx)
    stage_word_vectors(ctx)
    intents = ctx.state["intents"]
    return Task(
        student=new_student(task, len(intents), seed, ctx.state["student_init"]),
        train=ctx.state["transfer"],
        teacher=ctx.state["teacher"],
        eval=ctx.state["val"],
        architecture=ARCHITECTURE,
        model_config=student_model_config(task, len(intents)),
        extra={"task": "email", "tokenizer": tokenizer_dict(task.student.tokenizer), "intents": intents},
    )
