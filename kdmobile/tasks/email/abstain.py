"""Abstain (Kannan et al. 2016, "triggering"): show no suggestion when the email wants no reply.

    python -c "from kdmobile.tasks.email.abstain import abstains; import numpy as np; print(abstains(np.array([[.2, .1, .7]]), {'score': 'p_none', 'threshold': .5}))"

A model of the reply-act task scores the acts and a last ``none`` column. The rule is one of:

- ``{"score": "p_none", "threshold": t}``: abstain when the softmax probability of ``none`` is ``>= t``;
- ``{"score": "max_act_prob", "threshold": t}``: abstain when the best act's probability is ``< t``.

:func:`calibrate` picks the score and the threshold on the dev set (``heldout_ab_acts``) and the no-reply
training emails only, never on heldout_c: the score with the larger AUC (emails that want a reply vs
those that do not), then the threshold that best separates them (largest coverage of wanted replies minus
share of no-reply emails shown) while keeping at least ``min_coverage`` of the dev emails that want a reply.
``demo_app/app.js`` applies the same rule to the same softmax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kdmobile.tasks.email.metrics import softmax

SCORES = ("p_none", "max_act_prob")
REPORT_THRESHOLDS = {"p_none": (0.1, 0.2, 0.3, 0.5, 0.7, 0.9), "max_act_prob": (0.05, 0.1, 0.2, 0.3, 0.5)}


def _score(probs: np.ndarray, score: str) -> np.ndarray:
    """Higher = more reason to abstain."""
    if score == "p_none":
        return probs[:, -1]
    if score == "max_act_prob":
        return -probs[:, :-1].max(1)
    raise ValueError(f"abstain score must be one of {SCORES}, got {score!r}")


def abstains(probs: np.ndarray, rule: Mapping[str, Any]) -> np.ndarray:
    """Which emails get no suggestion under ``rule``; ``probs`` ``[N, acts + 1]`` (softmax, ``none`` last)."""
    p = np.asarray(probs, dtype=np.float64)
    if rule["score"] == "p_none":
        return p[:, -1] >= rule["threshold"]
    return p[:, :-1].max(1) < rule["threshold"]


def curve_point(
    probs: np.ndarray, acceptable: Sequence[Sequence[int]], rule: Mapping[str, Any]
) -> dict[str, float]:
    """Coverage vs precision of ``rule`` on one labelled set (``acceptable``: act indices, ``[]`` = none).

    Returns:
        ``coverage``: share of the emails that want a reply that still get suggestions; ``no_reply_shown``:
        share of the no-reply emails that still get suggestions (nan without any); ``shown``: share of all
        emails with suggestions; ``precision``: emails with suggestions whose top act is acceptable / all
        emails with suggestions (a no-reply email with suggestions counts as wrong); ``precision_always``:
        the same when every email gets suggestions.
    """
    p = np.asarray(probs, dtype=np.float64)
    has = np.array([len(a) > 0 for a in acceptable])
    top = p[:, :-1].argmax(1)
    right = np.array([int(t) in set(a) for t, a in zip(top, acceptable, strict=True)])
    shown = ~abstains(p, rule)
    return {
        **dict(rule),
        "coverage": float(shown[has].mean()) if has.any() else float("nan"),
        "no_reply_shown": float(shown[~has].mean()) if (~has).any() else float("nan"),
        "shown": float(shown.mean()),
        "precision": float((right & shown).sum() / max(1, shown.sum())),
        "precision_always": float(right.mean()),
    }


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a random ``pos`` > one of ``neg``), ties half (nan when either side is empty)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return float("nan")
    return float(
        ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / pos.size / neg.size
    )


def calibrate(
    logits: np.ndarray, acceptable: Sequence[Sequence[int]], min_coverage: float = 0.9
) -> dict[str, Any]:
    """The abstain rule of one model from its logits on the calibration emails (dev + no-reply).

    Returns:
        the rule (``score``, ``threshold``) and how it was chosen: ``auc`` of both scores, ``min_coverage``
        and the rule's ``coverage`` and ``no_reply_shown`` on the calibration emails.
    """
    p = softmax(np.asarray(logits))
    has = np.array([len(a) > 0 for a in acceptable])
    aucs = {s: auc(-_score(p, s)[has], -_score(p, s)[~has]) for s in SCORES}
    score = max(SCORES, key=lambda s: (aucs[s], s == "p_none"))
    raw = _score(p, score)
    values = np.unique(raw)
    # Candidate cut points: between neighbouring scores (abstain at or above the cut) and above them all.
    cuts = np.concatenate([(values[1:] + values[:-1]) / 2, [values[-1] + 1e-6]])
    best: tuple[float, float] | None = None
    for c in cuts:
        ab = raw >= c
        cov, shown_neg = float((~ab[has]).mean()), float((~ab[~has]).mean())
        if cov >= min_coverage and (best is None or cov - shown_neg > best[1] + 1e-12):
            best = (float(c), cov - shown_neg)
    cut = best[0] if best is not None else float(cuts[-1])
    rule = {"score": score, "threshold": round(cut if score == "p_none" else -cut, 6)}
    point = curve_point(p, acceptable, rule)
    return {
        **rule,
        "auc": aucs,
        "min_coverage": min_coverage,
        "calibration": {k: point[k] for k in ("coverage", "no_reply_shown")},
        "calibration_emails": {"want_reply": int(has.sum()), "no_reply": int((~has).sum())},
    }


def table(probs: np.ndarray, acceptable: Sequence[Sequence[int]], chosen: Mapping[str, Any]) -> list[dict]:
    """:func:`curve_point` at the report's fixed thresholds of the chosen score, and at the chosen one."""
    score = chosen["score"]
    rows = [
        curve_point(probs, acceptable, {"score": score, "threshold": t}) for t in REPORT_THRESHOLDS[score]
    ]
    rows.append({**curve_point(probs, acceptable, chosen), "chosen": True})
    return rows
