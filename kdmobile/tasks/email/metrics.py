"""Smart-reply metrics: top-1, recall@3 under the diversity rule, agreement with and KL to the teacher.

    python -c "from kdmobile.tasks.email.metrics import suggest; import numpy as np; print(suggest(np.array([.1, .7, .2, .5]), k=3))"

- **Suggestions** are the ``k`` best-scoring candidates with *distinct intents* (the diversity rule of
  Smart Reply, Kannan et al. 2016): when candidates are replies, a reply whose intent is already shown is
  skipped. With one logit per intent the rule holds by construction.
- **top-1**: the best suggestion's intent is acceptable for the email (an email may accept several).
- **recall@3**: an acceptable intent is among the three suggestions.
- **teacher agreement**: the top intent equals the teacher's top intent.
- **KL to the teacher**: mean ``KL(p_teacher || p_model)`` at temperature 1, in nats.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def suggest(scores: np.ndarray, k: int = 3, candidate_intents: Sequence[int] | None = None) -> list[int]:
    """The intents of the ``k`` suggestions for one email, best first, never two of one intent.

    Args:
        scores: one score per candidate, ``[K]``.
        k: how many suggestions.
        candidate_intents: the intent of each candidate (for reply-level scores); default: candidate i is
            intent i.

    Ties are broken by the lower candidate index (a stable sort), so results are deterministic.
    """
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise ValueError(f"suggest() takes one email's scores [K], got shape {scores.shape}")
    intents = list(range(len(scores))) if candidate_intents is None else list(candidate_intents)
    if len(intents) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(intents)} candidate intents")
    out: list[int] = []
    for c in np.argsort(-scores, kind="stable"):
        if intents[c] not in out:
            out.append(intents[c])
            if len(out) == k:
                break
    return out


def compute(
    logits: np.ndarray,
    acceptable: Sequence[Sequence[int]],
    teacher_logits: np.ndarray | None = None,
    *,
    k: int = 3,
) -> dict[str, float]:
    """Metrics of intent ``logits`` ``[N, C]`` against the acceptable intent indices of each email.

    Returns:
        ``{"n", "top1", "recall_at_3", "teacher_agreement", "kl"}``; the last two only with
        ``teacher_logits``.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] != len(acceptable):
        raise ValueError(f"logits must be [N, C] with N = {len(acceptable)} emails, got shape {logits.shape}")
    top1 = hit = 0
    for row, ok in zip(logits, acceptable, strict=True):
        sug = suggest(row, k)
        ok = set(ok)
        top1 += sug[0] in ok
        hit += any(s in ok for s in sug)
    n = len(acceptable)
    out: dict[str, float] = {"n": n, "top1": top1 / n, "recall_at_3": hit / n}
    if teacher_logits is not None:
        t = np.asarray(teacher_logits, dtype=np.float64)
        if t.shape != logits.shape:
            raise ValueError(f"teacher logits {t.shape} and logits {logits.shape} differ in shape")
        out["teacher_agreement"] = float(np.mean(t.argmax(-1) == logits.argmax(-1)))
        pt = softmax(t)
        out["kl"] = float(np.mean((pt * (log_softmax(t) - log_softmax(logits))).sum(-1)))
    return out


def compute_acts(
    logits: np.ndarray,
    acceptable: Sequence[Sequence[int]],
    teacher_logits: np.ndarray | None = None,
    *,
    n_acts: int | None = None,
    k: int = 3,
) -> dict[str, float]:
    """:func:`compute` over reply acts, on the emails that want a reply.

    Emails whose ``acceptable`` is empty (no reply wanted) are left out; the ``none`` column (and any
    column from ``n_acts`` on) is not a suggestion, so only the first ``n_acts`` columns are ranked, for
    the model and the teacher alike (agreement = same best act; KL over the act columns, renormalised).

    Args:
        n_acts: how many leading columns are acts; default: every column but the last.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] != len(acceptable):
        raise ValueError(f"logits must be [N, C] with N = {len(acceptable)} emails, got shape {z.shape}")
    n_acts = z.shape[1] - 1 if n_acts is None else n_acts
    keep = [i for i, ok in enumerate(acceptable) if len(ok)]
    t = None if teacher_logits is None else np.asarray(teacher_logits, dtype=np.float64)[keep, :n_acts]
    return compute(z[keep, :n_acts], [acceptable[i] for i in keep], t, k=k)
