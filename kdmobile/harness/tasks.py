"""What the bench needs from a task: the evaluation set, its metrics, and the teacher to measure.

    kdmobile bench build/export --task email --data heldout -o build/report

A bench task is looked up by name (``BENCH_TASKS``, lazily imported). It gives

- ``eval_set(data, student_meta) -> EvalSet``: the texts, the student's input ids (Python tokenizer, with
  the tokenizer config recorded in the student checkpoint), the index of the example timed for latency,
  and ``metrics(logits, teacher_logits)`` (the task's own metric code);
- ``load_teacher(path, eval_set, threads) -> TeacherModel`` (called inside a bench worker process).

``email`` uses the email task's held-out set, ``kdmobile.tasks.email.metrics.compute`` and the fine-tuned
all-MiniLM-L6-v2 teacher; ``selftest`` (``kdmobile.harness.selftest``) the same held-out set with a small
stand-in teacher, for the harness's own tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdmobile.errors import UsageError

# task name -> "module:factory" (imported only when used, so `kdmobile --help` stays instant).
BENCH_TASKS = {
    "email": "kdmobile.harness.tasks:EmailBench",
    "selftest": "kdmobile.harness.selftest:SelftestBench",
}


@dataclass
class EvalSet:
    """The evaluation data of one bench run."""

    task: str
    data: str
    texts: list[str]
    ids: np.ndarray  # int64 [N, L]: the student's inputs, from the Python tokenizer
    acceptable: list[list[int]]  # acceptable class indices per example
    latency_index: int  # the example timed at batch 1 (the one of median length)
    tokenizer_json: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """sha256 of the texts and their labels: a baseline measured on other data is not comparable."""
        import hashlib
        import json

        blob = json.dumps([self.texts, self.acceptable], ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def metrics(self, logits: np.ndarray, teacher_logits: np.ndarray | None) -> dict[str, float]:
        """``top1``, ``recall_at_3`` and, with the teacher's logits, ``teacher_agreement`` and ``kl``."""
        from kdmobile.tasks.email.metrics import compute

        return compute(logits, self.acceptable, teacher_logits)


@dataclass
class TeacherModel:
    """A loaded teacher, ready to time and to predict (inside a worker)."""

    name: str
    path: str
    size_bytes: int
    call: Callable[[list[int]], Callable[[], Any]]  # example indices -> zero-arg call on pre-tokenised inputs
    logits: Callable[[], np.ndarray]  # [N, C] over the whole eval set
    flops: Callable[[list[int]], int]


def get_bench_task(name: str) -> Any:
    try:
        target = BENCH_TASKS[name]
    except KeyError:
        raise UsageError(
            f"unknown task {name!r} for bench; valid: {', '.join(sorted(BENCH_TASKS))}"
        ) from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)()


def median_length_index(ids: np.ndarray) -> int:
    """The example whose non-padding length is the median one (ties: the first)."""
    lengths = (np.asarray(ids) != 0).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    return int(order[len(order) // 2])


def tokenizer_from_meta(meta: dict[str, Any]) -> Any:
    """The student's ``HashTokenizer`` from its checkpoint metadata (``tokenizer``), else the defaults."""
    from kdmobile.tasks.email.tokenizer import HashTokenizer, TokenizerConfig

    tok = dict(meta.get("tokenizer") or {})
    tok.pop("type", None)
    tok.pop("separators", None)
    if "char_ngrams" in tok:
        tok["char_ngrams"] = tuple(tok["char_ngrams"])
    if not tok and meta.get("model_config", {}).get("num_buckets"):
        tok["num_buckets"] = int(meta["model_config"]["num_buckets"])
    try:
        return HashTokenizer(TokenizerConfig(**tok))
    except (TypeError, ValueError) as e:
        raise UsageError(f"student checkpoint metadata has an unusable tokenizer config {tok}: {e}") from None


def email_eval_set(task: str, data: str, student_meta: dict[str, Any]) -> EvalSet:
    """The email task's held-out set, tokenised with the student's tokenizer."""
    from kdmobile.tasks.email.data import intent_ids, load_heldout

    if data != "heldout":
        raise UsageError(f"--data {data!r}: the email task benches on 'heldout' (the hand-written emails)")
    rows = load_heldout()
    index = {name: i for i, name in enumerate(intent_ids())}
    tok = tokenizer_from_meta(student_meta)
    texts = [r["text"] for r in rows]
    ids = tok.encode_batch(texts)
    return EvalSet(
        task=task,
        data=data,
        texts=texts,
        ids=ids,
        acceptable=[[index[i] for i in r["intents"]] for r in rows],
        latency_index=median_length_index(ids),
        tokenizer_json=tok.to_json(),
        info={"n_classes": len(index)},
    )


class EmailBench:
    """The email smart-reply task: held-out emails, the fine-tuned all-MiniLM-L6-v2 teacher."""

    name = "email"

    def eval_set(self, data: str, student_meta: dict[str, Any]) -> EvalSet:
        return email_eval_set(self.name, data, student_meta)

    def find_teacher(self, student_meta: dict[str, Any], checkpoint: str | None) -> str | None:
        """The teacher's weights: ``teacher_checkpoint`` in the student's metadata, else the newest
        ``build/email/teacher-*/teacher.safetensors``."""
        named = student_meta.get("teacher_checkpoint") or (student_meta.get("teacher") or {}).get(
            "checkpoint"
        )
        if isinstance(named, str) and Path(named).is_file():
            return named
        roots = [Path("build") / "email"]
        if checkpoint:
            roots.insert(0, Path(checkpoint).resolve().parent)
        for root in roots:
            found = sorted(
                root.glob("teacher-*/teacher.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True
            )
            if found:
                return str(found[0])
        return None

    def load_teacher(self, path: str, eval_set: EvalSet, threads: int) -> TeacherModel:
        import torch
        from safetensors.torch import load_file

        from kdmobile.checkpoint import read_metadata
        from kdmobile.tasks.email import teacher as T

        meta = read_metadata(path)
        cfg_fields = {
            k: v
            for k, v in (meta.get("teacher_config") or {}).items()
            if k in T.TeacherConfig.__dataclass_fields__
        }
        cfg = T.TeacherConfig(**cfg_fields)
        num = int(meta.get("model_config", {}).get("num_intents") or eval_set.info["n_classes"])
        model = T.build_teacher(cfg, num, pretrained=False)
        model.load_state_dict(load_file(str(path)))
        model.eval().requires_grad_(False)
        tokenizer = T.load_tokenizer(cfg)
        all_ids, all_mask = T.tokenize(tokenizer, eval_set.texts, cfg.max_len)

        def inputs(idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            ids, mask = T.tokenize(tokenizer, [eval_set.texts[i] for i in idx], cfg.max_len)
            return ids, mask

        def call(idx: list[int]) -> Callable[[], Any]:
            ids, mask = inputs(idx)

            def run() -> Any:
                with torch.inference_mode():
                    return model(ids, mask)

            return run

        def logits() -> np.ndarray:
            return T.predict_logits(model, all_ids, all_mask, batch_size=32)

        def flops(idx: list[int]) -> int:
            from kdmobile.harness.machine import model_flops

            return model_flops(model, inputs(idx))

        size = Path(path).stat().st_size
        return TeacherModel("all-MiniLM-L6-v2 (fine-tuned)", str(path), size, call, logits, flops)
