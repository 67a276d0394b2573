"""The abstain rule of the reply-act models: golden values of abstains, curve_point and calibrate.

.venv/bin/python -m pytest tests/test_email_abstain.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from kdmobile.tasks.email.abstain import abstains, calibrate, curve_point
from kdmobile.tasks.email.metrics import compute_acts


def _probs(rows: list[list[float]]) -> np.ndarray:
    p = np.asarray(rows, dtype=np.float64)
    return p / p.sum(1, keepdims=True)


def test_rules_abstain_as_documented():
    # columns: act 0, act 1, none
    p = _probs([[0.6, 0.1, 0.3], [0.2, 0.2, 0.6], [0.35, 0.35, 0.3]])
    assert abstains(p, {"score": "p_none", "threshold": 0.3}).tolist() == [True, True, True]
    assert abstains(p, {"score": "p_none", "threshold": 0.5}).tolist() == [False, True, False]
    assert abstains(p, {"score": "max_act_prob", "threshold": 0.3}).tolist() == [False, True, False]
    assert abstains(p, {"score": "max_act_prob", "threshold": 0.4}).tolist() == [False, True, True]


def test_curve_point_counts_a_shown_no_reply_email_as_wrong():
    p = _probs([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.1, 0.1, 0.8], [0.6, 0.1, 0.3]])
    acceptable = [[0], [0], [0], [], []]  # right, wrong, right; two no-reply emails
    row = curve_point(p, acceptable, {"score": "p_none", "threshold": 0.35})
    # shown: emails 0, 1, 4 (p_none 0.1, 0.1, 0.3); right among them: email 0 only
    assert row["coverage"] == pytest.approx(2 / 3)
    assert row["no_reply_shown"] == pytest.approx(1 / 2)
    assert row["shown"] == pytest.approx(3 / 5)
    assert row["precision"] == pytest.approx(1 / 3)
    assert row["precision_always"] == pytest.approx(2 / 5)


def test_calibrate_picks_the_separating_score_and_keeps_the_coverage():
    # p(none) separates perfectly (0.1-0.2 vs 0.35-0.9); the best act's probability does not.
    want = [[0.5, 0.4, 0.1], [0.3, 0.5, 0.2], [0.8, 0.05, 0.15], [0.45, 0.45, 0.1]]
    none = [[0.05, 0.05, 0.9], [0.6, 0.05, 0.35], [0.1, 0.1, 0.8]]
    logits = np.log(_probs(want + none))
    rule = calibrate(logits, [[0], [1], [0], [1], [], [], []])
    assert rule["score"] == "p_none"
    assert rule["auc"]["p_none"] == 1.0 and rule["auc"]["max_act_prob"] < 1.0
    assert 0.2 < rule["threshold"] <= 0.35  # between the two groups
    assert rule["calibration"] == {"coverage": 1.0, "no_reply_shown": 0.0}


def test_calibrate_never_drops_below_the_minimum_coverage():
    # One email that wants a reply looks like a notification: abstaining on it would cost 25% coverage.
    want = [[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.05, 0.85]]
    none = [[0.1, 0.1, 0.8], [0.05, 0.05, 0.9]]
    p = _probs(want + none)
    rule = calibrate(np.log(p), [[0], [0], [0], [0], [], []], min_coverage=0.9)
    assert rule["calibration"]["coverage"] == 1.0
    assert abstains(p, rule).tolist() == [False, False, False, False, False, True]


def test_compute_acts_ranks_acts_only_on_emails_that_want_a_reply():
    # "none" (last column) is the largest logit of email 0; its best act is still act 1.
    z = np.array([[0.0, 1.0, 5.0], [2.0, 1.0, 0.0], [0.0, 0.0, 9.0]])
    m = compute_acts(
        z, [[1], [1], []], teacher_logits=np.array([[0.0, 2.0, 0.0], [0.0, 3.0, 0.0], [1, 0, 0]])
    )
    assert m["n"] == 2 and m["top1"] == 0.5 and m["teacher_agreement"] == 0.5
