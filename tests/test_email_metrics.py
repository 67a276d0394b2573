"""Smart-reply metrics against hand-computed golden values.

.venv/bin/python -m pytest tests/test_email_metrics.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdmobile.tasks.email.metrics import compute, suggest


def test_suggest_intent_scores_best_first_with_stable_ties():
    assert suggest(np.array([0.1, 0.7, 0.2, 0.5]), k=3) == [1, 3, 2]
    assert suggest(np.array([1.0, 2.0, 2.0, 0.0]), k=2) == [1, 2]  # tie: the lower index first
    assert suggest(np.array([3.0, 1.0]), k=3) == [0, 1]  # fewer candidates than k


def test_suggest_diversity_rule_on_reply_level_scores():
    # Six candidate replies; replies 0, 1, 4 belong to intent 7, reply 2 to intent 3, 3 and 5 to intent 9.
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.85, 0.1])
    owners = [7, 7, 3, 9, 7, 9]
    # By score: r0 (7), r4 (7, skipped), r1 (7, skipped), r3 (9), r2 (3).
    assert suggest(scores, k=3, candidate_intents=owners) == [7, 9, 3]
    with pytest.raises(ValueError, match="candidate intents"):
        suggest(scores, candidate_intents=[1, 2])


def test_top1_and_recall_at_3_with_multi_label_acceptance():
    logits = np.array(
        [
            [5.0, 4.0, 3.0, 2.0, 1.0],  # suggestions 0,1,2
            [1.0, 2.0, 3.0, 4.0, 5.0],  # suggestions 4,3,2
            [0.0, 9.0, 0.0, 8.0, 7.0],  # suggestions 1,3,4
            [2.0, 2.0, 1.0, 0.0, 0.0],  # suggestions 0,1,2 (tie broken by index)
        ]
    )
    acceptable = [[1, 0], [0], [4, 2], [1]]
    # top-1: row0 0 in {0,1} yes; row1 4 no; row2 1 no; row3 0 no -> 1/4.
    # recall@3: row0 yes; row1 {4,3,2} vs {0} no; row2 4 yes; row3 1 yes -> 3/4.
    m = compute(logits, acceptable)
    assert m == {"n": 4, "top1": 0.25, "recall_at_3": 0.75}


def test_teacher_agreement_and_kl_golden():
    # p_teacher = softmax([0, 0]) = (1/2, 1/2); p_model = softmax([0, ln 3]) = (1/4, 3/4).
    t = np.array([[0.0, 0.0], [2.0, 0.0]])
    s = np.array([[0.0, math.log(3.0)], [5.0, 1.0]])
    m = compute(s, [[1], [0]], t)
    kl_row0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    # Row 1: p_t = (e^2, 1)/(e^2 + 1), p_s = (e^5, e)/(e^5 + e) = (e^4, 1)/(e^4 + 1).
    pt = np.array([math.e**2, 1.0]) / (math.e**2 + 1)
    ps = np.array([math.e**4, 1.0]) / (math.e**4 + 1)
    kl_row1 = float((pt * np.log(pt / ps)).sum())
    assert m["teacher_agreement"] == 0.5  # row 0: teacher argmax 0 (tie), model 1; row 1: both 0
    assert m["kl"] == pytest.approx((kl_row0 + kl_row1) / 2, rel=1e-12)
    assert m["top1"] == 1.0


def test_identical_models_have_zero_kl_and_full_agreement():
    z = np.random.default_rng(0).normal(size=(20, 48))
    m = compute(z, [[0]] * 20, z)
    assert m["teacher_agreement"] == 1.0 and abs(m["kl"]) < 1e-12


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        compute(np.zeros((3, 4)), [[0], [1]])
    with pytest.raises(ValueError, match="differ in shape"):
        compute(np.zeros((2, 4)), [[0], [1]], np.zeros((2, 5)))
