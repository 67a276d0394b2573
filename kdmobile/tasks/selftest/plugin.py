"""The ``selftest`` task as a kdmobile task plug-in: the email held-out set, the stand-in teacher.

    kdmobile bench build/selftest/export --task selftest -o build/selftest/report

Each method imports its implementation lazily, so discovering the task costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdmobile.task import Task, register_task


@register_task
class SelftestTask(Task):
    name = "selftest"
    description = (
        "The harness's own tests: a small email student memorising the held-out set, a stand-in teacher."
    )

    def eval_set(self, data: str, student_meta: dict[str, Any]) -> Any:
        from kdmobile.tasks.email.bench import email_eval_set

        return email_eval_set(self.name, data, student_meta)

    def find_teacher(self, student_meta: dict[str, Any], checkpoint: str | None) -> str | None:
        path = student_meta.get("teacher_checkpoint")
        return path if path and Path(path).is_file() else None

    def load_teacher(self, path: str, eval_set: Any, threads: int) -> Any:
        from kdmobile.tasks.selftest.fixture import load_teacher

        return load_teacher(path, eval_set, threads)
