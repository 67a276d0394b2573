"""The email smart-reply task as a kdmobile task plug-in (registered when ``kdmobile.task`` discovers it).

    kdmobile bench build/export --task email --data heldout -o build/report

Each method imports its implementation lazily, so discovering the task costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdmobile.task import Task, register_task


@register_task
class EmailTask(Task):
    name = "email"
    description = (
        "Email smart reply: suggest three short replies of distinct intents (all-MiniLM-L6-v2 teacher)."
    )
    architectures = {"email-student": "kdmobile.tasks.email.model:EmailStudent"}

    def distill_setup(self, args: dict[str, Any], seed: int) -> Any:
        from kdmobile.tasks.email.task import make_email_task

        return make_email_task(args, seed)

    def model_spec(self, model: Any, meta: dict[str, Any], **kw: Any) -> Any:
        from kdmobile.tasks.email.export_spec import email_spec

        return email_spec(model, meta, **kw)

    def eval_set(self, data: str, student_meta: dict[str, Any]) -> Any:
        from kdmobile.harness.tasks import EmailBench

        return EmailBench().eval_set(data, student_meta)

    def find_teacher(self, student_meta: dict[str, Any], checkpoint: str | None) -> str | None:
        from kdmobile.harness.tasks import EmailBench

        return EmailBench().find_teacher(student_meta, checkpoint)

    def load_teacher(self, path: str, eval_set: Any, threads: int) -> Any:
        from kdmobile.harness.tasks import EmailBench

        return EmailBench().load_teacher(path, eval_set, threads)

    def bundle_files(self, spec: Any, meta: dict[str, Any], checkpoint: Path | None) -> dict[str, Any]:
        from kdmobile.tasks.email.export_spec import bundle_files

        return bundle_files(spec, checkpoint)

    def bundle_notes(self, spec: Any) -> str:
        from kdmobile.tasks.email.export_spec import bundle_notes

        return bundle_notes(spec)

    def labels(self, spec: Any, meta: dict[str, Any]) -> list[str]:
        from kdmobile.tasks.email.export_spec import labels

        return labels(spec, meta)
