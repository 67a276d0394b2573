"""The reusable parts of the reply-act teacher experiment (kdmobile.tasks.email.act_teacher): fast, no model.

.venv/bin/python -m pytest tests/test_act_teacher.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdmobile.errors import UsageError
from kdmobile.tasks.email import act_teacher as T
from kdmobile.tasks.email.acts import load_reply_acts
from kdmobile.tasks.email.data import intent_ids


def test_relabel_splits_an_intent_over_its_acts_and_drops_dropped_ones():
    mig = {"thanks": ["thanks", "noted"], "yes": ["yes"], "out_of_office": []}
    assert T.relabel({"thanks": 0.5, "yes": 0.5}, mig) == {"thanks": 0.25, "noted": 0.25, "yes": 0.5}
    assert T.relabel({"yes": 0.2, "out_of_office": 0.8}, mig) == {"yes": 1.0}
    assert T.relabel({"out_of_office": 1.0}, mig) == {}
    with pytest.raises(UsageError, match="'nope' is not in the migration"):
        T.relabel({"nope": 1.0}, mig)


def test_migration_map_of_the_real_acts_covers_every_old_intent():
    mig = T.migration_map(load_reply_acts())
    assert set(mig) == set(intent_ids())
    assert mig["out_of_office"] == [] and mig["job_application"] == []
    assert mig["lunch_invite"] == ["accept_invitation", "decline_invitation", "propose_other_time"]


def test_evaluate_top1_recall_and_abstain_curve_on_a_hand_computed_case():
    ids = ["a", "b", "c", "d"]
    scores = np.array(
        [
            [0.9, 0.1, 0.0, 0.0],  # top-1 a: right
            [0.9, 0.8, 0.7, 0.1],  # top-3 a, b, c; only d acceptable: wrong, not in top-3
            [0.1, 0.2, 0.9, 0.3],  # top-1 c wrong, d (2nd) acceptable: recall@3 hit
            [0.5, 0.1, 0.1, 0.1],  # no reply wanted
        ]
    )
    labels = [["a"], ["d"], ["d", "b"], []]
    reply = np.array([0.9, 0.4, 0.8, 0.5])
    r = T.evaluate(scores, reply, labels, ids)
    assert (r["emails"], r["with_acts"]) == (4, 3)
    assert r["top1"] == pytest.approx(1 / 3) and r["recall_at_3"] == pytest.approx(2 / 3)
    assert r["abstain_auc"] == pytest.approx(2 / 3)  # 0.9 and 0.8 above 0.5, 0.4 below
    full = r["curve"][0]
    assert full["coverage_all"] == 1.0 and full["coverage"] == 1.0 and full["no_reply_shown"] == 1.0
    assert full["precision"] == pytest.approx(1 / 4)
    by = {c["coverage_all"]: c for c in r["curve"]}
    # Keeping 60% of 4 emails: the threshold is the 40% quantile of the reply scores (index 0.4*3 = 1.2: 0.5 + 0.2*0.3 = 0.56):
    # shown are rows 0 and 2, of which row 0 is right.
    assert by[0.6]["threshold"] == pytest.approx(0.56)
    assert by[0.6]["coverage"] == pytest.approx(2 / 3) and by[0.6]["no_reply_shown"] == 0.0
    assert by[0.6]["precision"] == pytest.approx(1 / 2)


def test_auc_used_counts_ties_half_and_is_nan_without_negatives():
    assert T.auc(np.array([1.0, 0.5]), np.array([0.5])) == pytest.approx(0.75)
    assert math.isnan(T.auc(np.array([1.0]), np.array([])))


def test_no_reply_training_emails_load_and_stay_apart_from_the_held_out_sets():
    from kdmobile.tasks.email.acts import load_heldout_ab_acts, load_heldout_c
    from kdmobile.tasks.email.data import normalise

    texts = T.load_no_reply()
    assert len(texts) >= 30 and len(set(texts)) == len(texts)
    held = {normalise(r["text"]) for r in [*load_heldout_c(), *load_heldout_ab_acts()]}
    assert not {normalise(t) for t in texts} & held


def test_chat_pairs_are_consecutive_messages_and_skip_non_list_entries(tmp_path):
    (tmp_path / "a.yml").write_text(
        "conversations:\n- - Hi\n  - Hello!\n  - How are you?\n- just a string\n- - One\n  - 3\n  - Two\n"
    )
    (tmp_path / "b.yml").write_text("categories: [x]\n")
    assert T.chat_pairs(tmp_path) == [("Hi", "Hello!"), ("Hello!", "How are you?"), ("One", "Two")]
