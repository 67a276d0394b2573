"""What ``kdmobile bench`` needs from the email task: the held-out set, its metrics and the teacher.

    kdmobile bench build/export --task email --data heldout -o build/report

    kdmobile bench build/export --task email --data heldout_c -o build/report_c

The evaluation set is a hand-written held-out set, tokenised with the student's own tokenizer (its
config is recorded in the student checkpoint). A reply-act student (54 acts + ``none``) is benched on
the emails that want a reply of ``heldout`` (the dev set) or ``heldout_c``, with
``kdmobile.tasks.email.metrics.compute_acts`` (top-1 and recall@3 over the act columns); its teacher is
the reply-act dual encoder. A 48-intent student (``quick_student``) still benches on ``heldout``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kdmobile.errors import UsageError
from kdmobile.harness.tasks import EvalSet, TeacherModel, median_length_index


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


def is_act_model(student_meta: dict[str, Any]) -> bool:
    """A reply-act model (54 acts + ``none``), not one of the 48 intents of ``replies.json``."""
    return "none" in (student_meta.get("intents") or [])


def email_eval_set(task: str, data: str, student_meta: dict[str, Any]) -> EvalSet:
    """The email task's held-out set, tokenised with the student's tokenizer, with the email metrics.

    A reply-act student (its checkpoint's ``intents`` end with ``none``) is benched on ``heldout`` (the dev
    set: heldout_a/b relabelled onto acts) or ``heldout_c``, on the emails that want a reply, ranking the
    act columns only (``info["score_columns"]``); a 48-intent student on ``heldout`` with its intents.
    """
    import functools

    from kdmobile.tasks.email.metrics import compute, compute_acts

    tok = tokenizer_from_meta(student_meta)
    if is_act_model(student_meta):
        from kdmobile.tasks.email.pipeline import EVAL_SETS, load_eval_rows

        if data not in EVAL_SETS:
            raise UsageError(f"--data {data!r}: the {task} task benches on one of {list(EVAL_SETS)}")
        labels = list(student_meta["intents"])
        index = {name: i for i, name in enumerate(labels)}
        rows = [r for r in load_eval_rows(data) if r["acts"]]
        acceptable = [[index[a] for a in r["acts"]] for r in rows]
        n_acts = len(labels) - 1
        metric: Any = functools.partial(compute_acts, n_acts=n_acts)
        info = {"n_classes": len(labels), "score_columns": n_acts, "labels": "reply acts"}
    else:
        from kdmobile.tasks.email.data import intent_ids, load_heldout

        if data != "heldout":
            raise UsageError(f"--data {data!r}: a 48-intent {task} student benches on 'heldout'")
        rows = load_heldout()
        index = {name: i for i, name in enumerate(intent_ids())}
        acceptable = [[index[i] for i in r["intents"]] for r in rows]
        metric, info = compute, {"n_classes": len(index)}
    texts = [r["text"] for r in rows]
    ids = tok.encode_batch(texts)
    return EvalSet(
        task=task,
        data=data,
        inputs=(ids,),
        acceptable=acceptable,
        latency_index=median_length_index(ids),
        texts=texts,
        tokenizer_json=tok.to_json(),
        metric=metric,
        info=info,
    )


def find_teacher(student_meta: dict[str, Any], checkpoint: str | None) -> str | None:
    """The teacher's weights: ``teacher_checkpoint`` in the student's metadata, else the newest
    ``build/email/teacher-*/teacher.safetensors`` (beside the student first)."""
    named = student_meta.get("teacher_checkpoint") or (student_meta.get("teacher") or {}).get("checkpoint")
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


def load_teacher(path: str, eval_set: EvalSet, threads: int) -> TeacherModel:
    """The teacher from its safetensors and metadata (in a bench worker): the reply-act dual encoder, or
    the fine-tuned all-MiniLM-L6-v2 intent classifier of a 48-intent student."""
    import torch
    from safetensors.torch import load_file

    from kdmobile.checkpoint import read_metadata
    from kdmobile.tasks.email import teacher as T

    meta = read_metadata(path)
    if meta.get("architecture") == T.ACT_ARCHITECTURE:
        model, tokenizer, run = T.load_act_teacher(path)
        max_len, name = run.max_len, "all-MiniLM-L6-v2 (reply-act dual encoder)"
    else:
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
        max_len, name = cfg.max_len, "all-MiniLM-L6-v2 (fine-tuned)"
    texts = eval_set.texts or []
    all_ids, all_mask = T.tokenize(tokenizer, texts, max_len)

    def inputs(idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = T.tokenize(tokenizer, [texts[i] for i in idx], max_len)
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
    return TeacherModel(name, str(path), size, call, logits, flops)
