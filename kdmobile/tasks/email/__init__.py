"""The email smart-reply task: given an email, suggest three short replies of distinct intents.

    kdmobile demo                                   # data -> teacher -> cache -> students -> report
    python -c "import kdmobile.tasks.email as E; print(len(E.load_heldout()), 'held-out emails')"

What other parts of kdmobile call (every import here is lazy, so this module stays light):

- :func:`load_heldout`, :func:`load_replies`: the hand-written held-out set and the reply set.
- :func:`sample_inputs`: real tokenised emails (held-out or generated) for export validation and int8
  calibration.
- :func:`evaluate`: top-1, recall@3 (diversity rule), teacher agreement and KL of any runtime, given as a
  function from int64 ids ``[N, L]`` to logits ``[N, C]``.
- :func:`quick_student`: a small deterministic student checkpoint in seconds, for tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "evaluate",
    "heldout_teacher_logits",
    "load_heldout",
    "load_replies",
    "quick_student",
    "sample_inputs",
]


def load_heldout() -> list[dict[str, Any]]:
    """The hand-written held-out emails: ``[{"id", "text", "intents", "style"}]`` (validated)."""
    from kdmobile.tasks.email.data import load_heldout as _load

    return _load()


def load_replies() -> dict[str, Any]:
    """The reply set: ``{"intents": [{"id", "description", "replies"}], ...}``; intent order = logit order."""
    from kdmobile.tasks.email.data import load_replies as _load

    return _load()


def _tokenizer(tokenizer_config: Any = None) -> Any:
    from kdmobile.tasks.email.tokenizer import HashTokenizer, TokenizerConfig

    if tokenizer_config is None:
        return HashTokenizer(TokenizerConfig())
    if isinstance(tokenizer_config, dict):
        d = {k: v for k, v in tokenizer_config.items() if k not in ("type", "separators")}
        if "char_ngrams" in d:
            d["char_ngrams"] = tuple(d["char_ngrams"])
        return HashTokenizer(TokenizerConfig(**d))
    return HashTokenizer(tokenizer_config)


def sample_inputs(
    tokenizer_config: Any = None, n: int = 64, split: str = "heldout", seed: int = 0
) -> np.ndarray:
    """``n`` real emails tokenised for the student: int64 ``[N, max_len]``.

    Args:
        tokenizer_config: a ``TokenizerConfig`` (or its dict, as in a checkpoint's metadata); default: the
            student's default tokenizer.
        n: how many (the held-out split has a few hundred; asking for more raises).
        split: ``"heldout"`` (hand-written, a seeded random choice) or ``"generated"`` (fresh generated
            emails, never the training corpus's seed).
        seed: which emails.
    """
    from kdmobile.errors import UsageError

    tok = _tokenizer(tokenizer_config)
    if split == "heldout":
        rows = load_heldout()
        if n > len(rows):
            raise UsageError(f"sample_inputs: asked for {n} held-out emails, there are {len(rows)}")
        order = np.random.default_rng(seed).permutation(len(rows))[:n]
        return tok.encode_batch([rows[i]["text"] for i in order])
    if split == "generated":
        from kdmobile.tasks.email.generator import generate

        return tok.encode_batch([e.text for e in generate(n, seed=10_000 + seed)])
    raise UsageError(f"sample_inputs: split must be 'heldout' or 'generated', got {split!r}")


def heldout_teacher_logits(workdir: str | Path = "build") -> np.ndarray:
    """The teacher's held-out logits ``[N, C]`` that ``kdmobile demo`` saved in ``email/heldout_eval.npz``."""
    from kdmobile.errors import UsageError

    path = Path(workdir) / "email" / "heldout_eval.npz"
    if not path.is_file():
        raise UsageError(f"{path} not found: run `kdmobile demo` (or `make demo`) first")
    with np.load(path) as f:
        z = f["teacher_logits"]
    n = len(load_heldout())
    if len(z) != n:
        raise UsageError(
            f"{path} has {len(z)} teacher rows but the held-out set has {n}: rerun `kdmobile demo`"
        )
    return z


def evaluate(
    predict_fn: Callable[[np.ndarray], np.ndarray],
    rows: list[dict[str, Any]] | None = None,
    *,
    tokenizer_config: Any = None,
    teacher_logits: np.ndarray | None = None,
    batch_size: int = 256,
    labels: list[str] | None = None,
) -> dict[str, float]:
    """Smart-reply metrics of ``predict_fn`` on the held-out set (or ``rows``).

    Args:
        predict_fn: int64 ids ``[B, L]`` → logits ``[B, C]`` (C intents in ``load_replies()`` order); any
            runtime (eager, ONNX Runtime, ExecuTorch, TFLite …) can be wrapped this way. For a batch-1
            artifact pass ``batch_size=1``.
        rows: emails ``{"text", "intents"}`` (``{"text", "acts"}`` with act ``labels``); default: the
            hand-written held-out set (relabelled onto acts with act ``labels``).
        tokenizer_config: the student's tokenizer (``TokenizerConfig`` or its dict); default: the defaults.
        teacher_logits: ``[N, C]`` for ``teacher_agreement`` and ``kl`` (e.g. :func:`heldout_teacher_logits`).
        batch_size: rows per ``predict_fn`` call.
        labels: the model's output names (a checkpoint's ``intents``); default: the 48 intents. With reply
            acts (the last label is ``none``) the figures are :func:`~kdmobile.tasks.email.metrics.compute_acts`:
            on the emails that want a reply, ranking the act columns only.

    Returns:
        ``{"n", "top1", "recall_at_3"}`` plus ``"teacher_agreement"`` and ``"kl"`` with teacher logits.
    """
    from kdmobile.errors import UsageError
    from kdmobile.tasks.email.data import intent_ids
    from kdmobile.tasks.email.metrics import compute

    acts = labels is not None and "none" in labels
    if acts:
        from kdmobile.tasks.email.pipeline import load_eval_rows

        rows = load_eval_rows("heldout") if rows is None else rows
    else:
        rows = load_heldout() if rows is None else rows
    index = {k: i for i, k in enumerate(labels if labels is not None else intent_ids())}
    try:
        acceptable = [[index[i] for i in r["acts" if acts else "intents"]] for r in rows]
    except KeyError as e:
        raise UsageError(f"evaluate: unknown intent id {e.args[0]!r} in rows") from None
    ids = _tokenizer(tokenizer_config).encode_batch([r["text"] for r in rows])
    out = []
    for s in range(0, len(ids), batch_size):
        z = np.asarray(predict_fn(ids[s : s + batch_size]))
        if z.ndim != 2 or z.shape[0] != len(ids[s : s + batch_size]) or z.shape[1] != len(index):
            raise UsageError(
                f"evaluate: predict_fn returned shape {z.shape}, expected [{len(ids[s : s + batch_size])}, {len(index)}]"
            )
        out.append(z)
    if acts:
        from kdmobile.tasks.email.metrics import compute_acts

        return compute_acts(np.concatenate(out), acceptable, teacher_logits)
    return compute(np.concatenate(out), acceptable, teacher_logits)


def quick_student(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n: int = 3000,
    epochs: int = 4,
    tokenizer_config: Any = None,
    acts: bool = False,
) -> Path:
    """Train an :class:`EmailStudent` on hard labels of ``n`` generated emails (seconds, deterministic).

    Writes ``out_dir/student.safetensors`` + ``.json`` (architecture ``email-student``; metadata ``task``,
    ``tokenizer``, ``intents``) and returns the weights path. Single-threaded while training, so a seed gives
    the same weights on a machine. Meant for tests of exports and the browser demo, not for quality.

    With ``acts``, the outputs are ``make demo``'s: the 54 reply acts and ``none``; the emails are
    relabelled onto acts, the acts' examples and the no-reply emails are added, and the metadata carries
    an abstain rule calibrated as the pipeline does (:func:`kdmobile.tasks.email.abstain.calibrate`).
    """
    import dataclasses

    import torch

    from kdmobile.checkpoint import save_checkpoint
    from kdmobile.tasks.email.data import intent_ids
    from kdmobile.tasks.email.generator import generate
    from kdmobile.tasks.email.model import EmailStudent

    tok = _tokenizer(tokenizer_config)
    emails = generate(n, seed=20_000 + seed)
    if acts:
        from kdmobile.tasks.email.acts import load_reply_acts
        from kdmobile.tasks.email.pipeline import act_labels, act_rows, hand_written_rows

        reply_acts = load_reply_acts()
        intents = act_labels(reply_acts)
        texts, targets = act_rows(emails, reply_acts)
        hand_texts, hand_y = hand_written_rows(reply_acts, 2, 4, act_train=False)
        x = torch.from_numpy(tok.encode_batch(texts + hand_texts))
        y = torch.as_tensor([int(t.argmax()) for t in targets] + hand_y)
    else:
        intents = intent_ids()
        col = {k: i for i, k in enumerate(intents)}
        x = torch.from_numpy(tok.encode_batch([e.text for e in emails]))
        y = torch.as_tensor([col[e.label] for e in emails])
    mc = {
        "num_buckets": tok.config.num_buckets,
        "dim": 64,
        "hidden": 128,
        "num_intents": len(intents),
        "dropout": 0.0,
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        model = EmailStudent(**mc)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(len(y), generator=g)
            for s in range(0, len(y), 64):
                b = perm[s : s + 64]
                loss = torch.nn.functional.cross_entropy(model(x[b]), y[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    cfg = dataclasses.asdict(tok.config)
    cfg["char_ngrams"] = list(tok.config.char_ngrams)
    extra: dict[str, Any] = {}
    if acts:
        extra["abstain"] = _quick_abstain(model.eval(), tok, intents)
    return save_checkpoint(
        Path(out_dir) / "student.safetensors",
        model.eval(),
        architecture="email-student",
        model_config=mc,
        metadata={
            "task": "email",
            "tokenizer": cfg,
            "intents": intents,
            "quick_student": {"seed": seed, "n": n, "epochs": epochs, "acts": acts},
            **extra,
        },
    )


def _quick_abstain(model: Any, tok: Any, labels: list[str]) -> dict[str, Any]:
    """The abstain rule of a reply-act model, calibrated on the dev set + the no-reply training emails."""
    import torch

    from kdmobile.tasks.email.abstain import calibrate
    from kdmobile.tasks.email.act_teacher import load_no_reply
    from kdmobile.tasks.email.pipeline import load_eval_rows

    col = {k: i for i, k in enumerate(labels)}
    dev = load_eval_rows("heldout")
    no_reply = load_no_reply()
    with torch.no_grad():
        z = model(torch.from_numpy(tok.encode_batch([r["text"] for r in dev] + no_reply))).numpy()
    rule = calibrate(z, [[col[a] for a in r["acts"]] for r in dev] + [[] for _ in no_reply])
    return {k: rule[k] for k in ("score", "threshold")}
