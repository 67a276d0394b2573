"""The reusable parts of the reply-act teacher experiment (kdmobile.tasks.email.act_teacher): fast, no model.

.venv/bin/python -m pytest tests/test_act_teacher.py -q
"""

from __future__ import annotations

import collections
import math
import random

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


def test_hand_written_training_emails_are_valid_cover_every_act_and_stay_apart_from_the_held_out_sets():
    from kdmobile.tasks.email.acts import act_ids, load_heldout_ab_acts, load_heldout_c
    from kdmobile.tasks.email.data import normalise

    rows = T.load_act_train(valid=act_ids())
    assert len(rows) >= 400
    counts = collections.Counter(a for _, labels in rows for a in labels)
    assert min(counts[a] for a in act_ids()) >= 5, counts.most_common()[-5:]
    assert sum(not labels for _, labels in rows) >= 20  # no-reply rows
    texts = {normalise(t) for t, _ in rows}
    assert len(texts) == len(rows)
    held = {normalise(r["text"]) for r in [*load_heldout_c(), *load_heldout_ab_acts()]}
    assert not texts & held
    assert not texts & {normalise(t) for t in T.load_no_reply()}


def test_load_act_train_names_the_line_of_an_unknown_act(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"text": "Did it arrive?", "acts": ["yes"]}\n{"text": "Hi", "acts": ["nope"]}\n')
    with pytest.raises(UsageError, match=r"x.jsonl.*2.*'acts'"):
        T.load_act_train(f, valid=["yes"])
    assert T.load_act_train(f) == [("Did it arrive?", ["yes"]), ("Hi", ["nope"])]


def test_augment_is_seeded_and_wraps_the_text_in_what_mail_puts_around_it():
    text = "Could you send me the slides from Tuesday please"
    a = [T.augment(text, random.Random(s), ["older message"]) for s in range(200)]
    assert a == [T.augment(text, random.Random(s), ["older message"]) for s in range(200)]
    kept = [x for x in a if text in x]
    assert len(kept) >= 120  # no typo and no change of case: the text itself is there
    assert sum(x != text for x in kept) >= 100  # most of those got a greeting, signature, quote or header
    assert any("> older message" in x for x in a) and any("Forwarded message" in x for x in a)
    assert any(x.isupper() for x in a) and any(text.lower() in x for x in a)


def test_training_set_adds_hand_rows_with_split_targets_and_verbatim_first_repeat():
    import dataclasses

    cfg = dataclasses.replace(T.FINAL, gen=0, act_repeat=0, none_repeat=0, hand=2, augment=True)
    rows = T.load_act_train()
    texts, y, counts = T.training_set(cfg, load_reply_acts())
    assert counts == {"gen": 0, "acts": 0, "hand": 2 * len(rows), "none": 0}
    assert texts[: len(rows)] == [t for t, _ in rows]  # the first repeat is the text as written
    assert sum(a != b for a, (b, _) in zip(texts[len(rows) :], rows, strict=True)) > len(rows) // 2
    np.testing.assert_allclose(y.sum(1), 1.0, rtol=1e-6)
    none_rows = [i for i, (_, labels) in enumerate(rows) if not labels]
    assert (y[none_rows, -1] == 1).all()
    assert T.FINAL in T.RUNS.values()


def test_score_batches_by_length_but_returns_rows_in_input_order():
    import dataclasses

    model, tok, info = T.train(dataclasses.replace(T.FINAL, epochs=0), load_reply_acts())  # zero-shot head
    texts = ["Did the parcel arrive?", "ok", "Thanks so much for the flowers, they made my whole week! " * 3]
    together = T.score(model, tok, texts, T.FINAL.max_len)
    alone = np.concatenate([T.score(model, tok, [t], T.FINAL.max_len) for t in texts])
    assert together.shape == (3, len(load_reply_acts()["intents"]) + 1) and info["steps"] == 0
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(together.sum(1), 1.0, rtol=1e-5)
