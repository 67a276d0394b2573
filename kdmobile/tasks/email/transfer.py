"""Unlabelled transfer text for distilling the reply-act student, and the teacher's probabilities on it.

    OMP_NUM_THREADS=1 python -m kdmobile.tasks.email.transfer --teacher build/act_teacher/dual-lr1e-4.pt -n 30000 --out build/transfer

Distillation on teacher-labelled unlabelled text is the classic route to a student that agrees with its
teacher (Hinton et al. 2015; Bucilua et al. 2006): the student sees the teacher's whole output distribution
on text like the text it will meet. :func:`transfer_texts` mixes, in fixed shares of ``n`` (so every prefix
of the shuffled list is a smaller set of the same mix):

- ``gen``: fresh generator emails (seeds of their own: neither the teacher's training emails nor the
  pipeline's sets);
- ``augment``: paraphrase/format augmentation of generator emails
  (:func:`kdmobile.tasks.email.data.augment`: sentence drops, shuffles, mixes of two emails, first sentences
  only, case changes, typos);
- ``snippet``: one or two sentences cut from generator emails;
- ``mix``: two or three snippets of unrelated emails and chat lines joined (a thread, a forward, a
  two-topic mail);
- ``chat``: chatterbot-corpus messages, half wrapped in a greeting and a sign-off;
- ``acts``: every act's ``when`` line and examples, and the hand-written no-reply emails (always in, first).

Nothing comes from the held-out sets: a text that equals (after
:func:`~kdmobile.tasks.email.data.normalise`) an email of heldout_a/b or heldout_c is dropped and counted.

:func:`teacher_probs` scores texts with an act teacher of :mod:`kdmobile.tasks.email.act_teacher` and keeps
the result in chunks of ``<cache_dir>/probs-<key>.npz``, each key hashing the teacher checkpoint's bytes,
``max_len`` and the chunk's texts, so a rerun with the same teacher reads back every chunk already scored
(``--score N`` scores the first N texts of the mix; a larger N later scores only the rest).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SOURCES = ("gen", "augment", "snippet", "mix", "chat")


@dataclass(frozen=True)
class TransferConfig:
    """How many transfer texts, and the share of each source (:data:`SOURCES`) in them.

    ``task_args.transfer`` of ``configs/email.toml``: the pipeline adds these texts to its transfer set
    (``n = 0``, the default: none). The ``acts`` rows (act ``when`` lines and examples, no-reply emails) are always in and count towards
    ``n``; ``chat`` is capped by the corpus size (the rest goes to ``gen``).
    """

    n: int = 0
    gen: float = 0.35
    augment: float = 0.25
    snippet: float = 0.2
    mix: float = 0.1
    chat: float = 0.1
    seed: int = 0


def _heldout_keys() -> set[str]:
    from kdmobile.tasks.email.acts import load_heldout_c
    from kdmobile.tasks.email.data import load_heldout, normalise

    return {normalise(r["text"]) for r in [*load_heldout(), *load_heldout_c()]}


def act_texts() -> list[str]:
    """Each act's ``when`` line and examples, then the hand-written no-reply emails."""
    from kdmobile.tasks.email.act_teacher import load_no_reply
    from kdmobile.tasks.email.acts import load_reply_acts

    out = [x for a in load_reply_acts()["intents"] for x in [a["when"], *a.get("examples", [])]]
    return out + load_no_reply()


def _mixes(pool: list[str], n: int, seed: int) -> list[str]:
    from kdmobile.tasks.email.data import snippets

    rng = random.Random(seed)
    parts = snippets(pool, 3 * n, seed + 1)
    out = []
    for _ in range(n):
        k = rng.choice([2, 2, 3])
        out.append(rng.choice(["\n\n", " ", "\n> "]).join(rng.sample(parts, k)))
    return out


def transfer_texts(cfg: TransferConfig) -> tuple[list[str], list[str], dict[str, Any]]:
    """``(texts, source of each text, info)``: ``cfg.n`` texts (fewer if some were dropped), shuffled.

    The ``acts`` rows come first; the rest is shuffled with ``cfg.seed``, so ``texts[:m]`` for a smaller
    ``m`` keeps the mix. ``info`` counts the rows per source and the ones dropped as held-out clashes.
    """
    from kdmobile.tasks.email.data import augment, load_chatterbot, normalise, snippets, wrap_chat
    from kdmobile.tasks.email.generator import generate

    if cfg.n <= 0:
        return [], [], {"n": 0, "dropped_heldout": 0, "per_source": {}}
    s = 7000 + 100 * cfg.seed  # seeds of their own (the pipeline uses 0..99, the act teacher 1000+)
    fixed = act_texts()
    rest = max(0, cfg.n - len(fixed))
    share = {k: getattr(cfg, k) for k in SOURCES}
    total = sum(share.values()) or 1.0
    want = {k: int(round(rest * v / total)) for k, v in share.items()}
    chat_lines = load_chatterbot()
    want["chat"] = min(want["chat"], len(chat_lines))
    want["gen"] = rest - sum(v for k, v in want.items() if k != "gen")
    pool = [e.text for e in generate(max(200, want["gen"] // 2), s + 1)]
    parts = {
        "gen": [e.text for e in generate(want["gen"], s)],
        "augment": augment(pool, want["augment"], s + 2),
        "snippet": snippets(pool, want["snippet"], s + 3),
        "mix": _mixes(pool + chat_lines, want["mix"], s + 4),
        "chat": wrap_chat(random.Random(s + 5).sample(chat_lines, want["chat"]), s + 6),
    }
    rows = [(t, k) for k in SOURCES for t in parts[k]]
    random.Random(s + 7).shuffle(rows)
    rows = [(t, "acts") for t in fixed] + rows
    banned = _heldout_keys()
    kept = [(t, k) for t, k in rows if normalise(t) not in banned]
    info = {
        "n": len(kept),
        "dropped_heldout": len(rows) - len(kept),
        "per_source": {k: sum(1 for _, s_ in kept if s_ == k) for k in ("acts", *SOURCES)},
    }
    return [t for t, _ in kept], [k for _, k in kept], info


# -------------------------------------------------------------------------------------- teacher labels
def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_act_teacher(checkpoint: str | Path, run: str = "") -> tuple[Any, Any, int]:
    """``(model, tokenizer, max_len)`` of a saved act-teacher run ``<dir>/<run>.pt`` (run = file stem)."""
    import torch

    from kdmobile.errors import UsageError
    from kdmobile.tasks.email.act_teacher import RUNS, build_model
    from kdmobile.tasks.email.acts import load_reply_acts
    from kdmobile.tasks.email.teacher import TeacherConfig, load_tokenizer

    path = Path(checkpoint)
    name = run or path.stem
    if name not in RUNS or not path.is_file():
        raise UsageError(
            f"{path}: not a saved act-teacher run of {sorted(RUNS)} (python -m kdmobile.tasks.email.act_teacher --runs NAME)"
        )
    cfg = RUNS[name]
    tok = load_tokenizer(TeacherConfig(max_len=cfg.max_len))
    model = build_model(cfg, tok, load_reply_acts()["intents"])
    model.load_state_dict(torch.load(path))
    return model.eval(), tok, cfg.max_len


def score_sorted(
    model: Any, tok: Any, texts: list[str], max_len: int, *, batch_size: int = 64, log: Any = None
) -> np.ndarray:
    """Softmax ``[N, A+1]`` of ``texts`` in input order, as :func:`act_teacher.score` gives, but faster.

    Batches hold texts of similar wordpiece length and are cut to their longest text: the padding columns
    that :func:`act_teacher.score` runs through are masked out anyway, so only float rounding differs
    (the test compares the two).
    """
    import torch

    from kdmobile.tasks.email.teacher import tokenize

    if not texts:
        return np.zeros((0, 0), np.float32)
    ids, mask = tokenize(tok, texts, max_len)
    lengths = mask.sum(1).numpy()
    order = np.argsort(-lengths, kind="stable")
    out: np.ndarray | None = None
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            b = torch.as_tensor(order[s : s + batch_size])
            n = int(lengths[order[s]])
            p = torch.softmax(model(ids[b, :n], mask[b, :n]), -1).float().numpy()
            if out is None:
                out = np.zeros((len(texts), p.shape[1]), np.float32)
            out[order[s : s + batch_size]] = p
            if log is not None and (s // batch_size) % 40 == 39:
                log(f"transfer: teacher scored {s + len(b)}/{len(texts)} ({time.perf_counter() - t0:.0f} s)")
    assert out is not None
    return out


def teacher_probs(
    checkpoint: str | Path,
    texts: list[str],
    cache_dir: str | Path,
    *,
    max_len: int = 0,
    chunk: int = 1024,
    loaded: tuple[Any, Any, int] | None = None,
    log: Any = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The act teacher's softmax ``[N, A+1]`` on ``texts`` (last column ``none``), cached on disk.

    The cache holds chunks of ``chunk`` consecutive texts, ``<cache_dir>/probs-<key>.npz``, the key hashing
    the checkpoint's bytes, ``max_len`` and the chunk's texts: a longer list that starts with the same
    texts (a larger transfer set of the same mix) reuses the chunks already scored, and an interrupted
    scoring run resumes.

    ``loaded``: ``(model, tokenizer, max_len)`` of the checkpoint, already loaded (else loaded when a
    chunk is missing).

    Returns:
        ``(probs, info)``; ``info`` has the chunks ``reused`` and ``computed`` and the scoring ``seconds``.
    """
    from kdmobile.io import atomic_path

    log = log or (lambda m: print(m, file=sys.stderr))
    checkpoint = Path(checkpoint)
    base = hashlib.sha256(f"{_file_sha(checkpoint)}:{max_len}".encode())
    model, tok, own_len = loaded if loaded is not None else (None, None, 0)
    parts, reused, computed = [], 0, 0
    t0 = time.perf_counter()
    for i in range(0, len(texts), chunk):
        part = texts[i : i + chunk]
        h = base.copy()
        for t in part:
            h.update(t.encode("utf-8", "surrogatepass") + b"\0")
        path = Path(cache_dir) / f"probs-{h.hexdigest()[:20]}.npz"
        if path.is_file():
            with np.load(path) as f:
                p = f["probs"]
            if len(p) == len(part):
                parts.append(p)
                reused += 1
                continue
        if model is None:
            model, tok, own_len = load_act_teacher(checkpoint)
        p = score_sorted(model, tok, part, max_len or own_len)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, probs=p)
        parts.append(p)
        computed += 1
        log(f"transfer: teacher scored {i + len(part)}/{len(texts)} texts ({time.perf_counter() - t0:.0f} s)")
    probs = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    seconds = round(time.perf_counter() - t0, 1)
    return probs, {
        "rows": len(texts),
        "chunks_reused": reused,
        "chunks_computed": computed,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True, help="a saved act-teacher run, <dir>/<run>.pt")
    ap.add_argument("-n", type=int, default=30000, help="transfer texts in the mix")
    ap.add_argument("--score", type=int, default=0, help="score the first N texts of the mix (0 = all)")
    ap.add_argument("--max-len", type=int, default=0, help="teacher wordpieces per text (0 = the run's own)")
    ap.add_argument("--out", default="build/transfer", help="cache directory")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    texts, _, info = transfer_texts(TransferConfig(n=args.n))
    print(f"transfer texts: {info}")
    texts = texts[: args.score or len(texts)]
    _, res = teacher_probs(args.teacher, texts, args.out, max_len=args.max_len)
    print(f"teacher probabilities: {res}")


if __name__ == "__main__":
    main()
