"""Export specs of the email student: ``ids: int64[1, L]`` (0 = padding) → ``logits: float32[1, C]``.

    kdmobile export build/email/student.safetensors --all --bundle -o build/export

Real samples come from :func:`kdmobile.tasks.email.sample_inputs` (``heldout`` for validation, ``generated``
for calibration), tokenised with the checkpoint's ``HashTokenizer``. Seeded random ids cover every content length from 1 to ``L``. Also the bundle extras:
``tokenizer.json``, ``replies.json`` (a reply-act student's: the acts' replies and its abstain rule), ``teacher_predictions.json`` and the README paragraph.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kdmobile.errors import UsageError
from kdmobile.export.api import forward_input_names
from kdmobile.export.base import ModelSpec, TensorSpec

REPLIES = Path(__file__).resolve().parent / "replies.json"


def _email_tokenizer_config(model: Any, meta: dict[str, Any]) -> Any:
    from kdmobile.tasks.email.tokenizer import TokenizerConfig

    tok = dict(meta.get("tokenizer") or {})
    if not tok:
        return TokenizerConfig(num_buckets=int(model.embed.num_embeddings))
    tok.pop("type", None)
    tok.pop("separators", None)
    if "char_ngrams" in tok:
        tok["char_ngrams"] = tuple(tok["char_ngrams"])
    return TokenizerConfig(**tok)


def random_ids(n: int, length: int, vocab: int, seed: int) -> np.ndarray:
    """Seeded random ids; content lengths sweep 1..length (always including 1 and ``length``)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, length), dtype=np.int64)
    lengths = np.linspace(1, length, num=n).round().astype(int) if n > 1 else np.array([length])
    for i, k in enumerate(lengths):
        out[i, :k] = rng.integers(1, vocab, size=k)
    return out


def _email_samples(cfg: Any, n: int, split: str, seed: int) -> np.ndarray:
    """Real emails tokenised with ``cfg``: the hand-written held-out ones (all of them when fewer than
    ``n``) or freshly generated ones."""
    from kdmobile.tasks.email import load_heldout, sample_inputs

    if split == "heldout":
        n = min(n, len(load_heldout()))
    return np.asarray(sample_inputs(cfg, n, split=split, seed=seed), dtype=np.int64)


def email_spec(
    model: Any, meta: dict[str, Any], *, n_heldout: int, n_random: int, n_calibration: int, seed: int
) -> ModelSpec:
    cfg = _email_tokenizer_config(model, meta)
    num_intents = int(model.head.out_features)
    vocab = int(model.embed.num_embeddings)
    if vocab != cfg.num_buckets:
        raise UsageError(
            f"tokenizer num_buckets {cfg.num_buckets} != model embedding size {vocab}: checkpoint metadata is inconsistent"
        )
    heldout = _email_samples(cfg, n_heldout, "heldout", seed)
    calib = _email_samples(cfg, n_calibration, "generated", seed + 1)
    validation = {"heldout": (heldout,), "random": (random_ids(n_random, cfg.max_len, vocab, seed + 2),)}
    return ModelSpec(
        task="email",
        inputs=[TensorSpec(forward_input_names(model, 1, ["ids"])[0], (1, cfg.max_len), "int64")],
        outputs=[TensorSpec("logits", (1, num_intents), "float32")],
        calibration=(calib,),
        validation=validation,
        real_split="heldout",
        metadata={"tokenizer_config": cfg, "intents": list(meta.get("intents") or [])},
    )


# The browser demo's reason when it abstains (the demo shows it instead of chips).
ABSTAIN_REASON = "No reply needed — this looks like a notification, a newsletter or an FYI."


def act_replies(abstain: dict[str, Any] | None) -> str:
    """``replies.json`` of a reply-act student: every act's replies (one chip per act) and the abstain rule.

    ``{"version": 2, "intents": [{"id", "description", "replies"}], "none": "none", "abstain": {"score",
    "threshold", "reason"}}``; ``abstain`` is null for a checkpoint without a calibrated rule.
    """
    from kdmobile.tasks.email.acts import load_reply_acts

    acts = load_reply_acts()
    doc = {
        "version": 2,
        "description": acts["description"],
        "intents": [{k: a[k] for k in ("id", "description", "replies")} for a in acts["intents"]],
        "none": "none",
        "abstain": {**abstain, "reason": ABSTAIN_REASON} if abstain else None,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def bundle_files(spec: ModelSpec, meta: dict[str, Any], checkpoint: Path | None) -> dict[str, Any]:
    """``tokenizer.json`` (the JS port reads it), ``replies.json`` and, when the demo wrote it beside the
    checkpoint, ``teacher_predictions.json`` (the browser demo's teacher panel).

    ``replies.json`` of a reply-act student (``intents`` ending with ``none``) is :func:`act_replies`, with
    the checkpoint's abstain rule; of a 48-intent student, the intents' ``replies.json``. The tokenizer is
    the spec's (a checkpoint export) or the metadata's; without either (a model exported from memory with
    ``task="email"``) the bundle has no ``tokenizer.json``.
    """
    from kdmobile.tasks.email import _tokenizer

    intents = list(meta.get("intents") or spec.metadata.get("intents") or [])
    files: dict[str, Any] = {
        "replies.json": act_replies(meta.get("abstain")) if "none" in intents else REPLIES
    }
    config = spec.metadata.get("tokenizer_config") or meta.get("tokenizer")
    if config:
        files["tokenizer.json"] = _tokenizer(config).to_json() + "\n"
    teacher = checkpoint.parent / "teacher_predictions.json" if checkpoint is not None else None
    if teacher is not None and teacher.is_file():
        files["teacher_predictions.json"] = teacher
    return files


def labels(spec: ModelSpec, meta: dict[str, Any]) -> list[str]:
    """Intent ids in logit order: the checkpoint's, else the reply set's when the head size matches."""
    intents = list(meta.get("intents") or spec.metadata.get("intents") or [])
    if not intents and REPLIES.is_file():
        ids = [i["id"] for i in json.loads(REPLIES.read_text())["intents"]]
        if len(ids) == spec.outputs[0].shape[-1]:
            intents = ids
    return intents


def bundle_notes(spec: ModelSpec) -> str:
    length, classes = spec.inputs[0].shape[-1], spec.outputs[0].shape[-1]
    return "\n".join(
        [
            f"Input: the token ids of one email, `{length}` ids, `0` = padding, produced by the hashed n-gram tokenizer",
            "described in `tokenizer.json` (`type: kdmobile-hash-ngram`; exact rules in kdmobile's",
            "`kdmobile/tasks/email/tokenizer.py`, JavaScript port in `demo_app/tokenizer.js`). Output: one score per",
            f"intent, `{classes}` floats; `meta.json` → `intents` gives the intent id of each position and",
            "`replies.json` the replies of each intent (suggest replies of the top intents, one per intent).",
            "A reply-act model's last output is `none` (no reply wanted): it is never suggested, and when",
            "`replies.json` → `abstain` says so (`p_none`: softmax of `none` >= `threshold`; `max_act_prob`: best act",
            "probability < `threshold`) show no suggestion at all.",
        ]
    )
