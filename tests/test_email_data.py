"""The email task's data: generator determinism and variety, held-out set, disjointness, chatterbot loader.

.venv/bin/python -m pytest tests/test_email_data.py -q
"""

from __future__ import annotations

import collections
import json
import re

import pytest

from kdmobile.errors import UsageError
from kdmobile.tasks.email import data as D
from kdmobile.tasks.email.generator import EmailGenerator, generate
from kdmobile.tasks.email.scenarios import SCENARIOS
from kdmobile.tasks.email.templates import TemplateError, expand, slots_of
from kdmobile.tasks.email.vocab import SLOTS

INTENTS = set(D.intent_ids())


def test_reply_set_has_48_stable_intents():
    replies = D.load_replies()
    ids = [it["id"] for it in replies["intents"]]
    assert len(ids) == 48 and len(set(ids)) == 48
    assert ids[:3] == ["confirm_meeting", "decline_meeting", "propose_other_time"]  # logit order is stable
    assert all(1 <= len(it["replies"]) <= 3 for it in replies["intents"])


def test_generator_is_deterministic_per_seed():
    a = [(e.text, e.label, e.layout) for e in generate(200, seed=5)]
    b = [(e.text, e.label, e.layout) for e in generate(200, seed=5)]
    c = [(e.text, e.label, e.layout) for e in generate(200, seed=6)]
    assert a == b
    assert sum(x != y for x, y in zip(a, c, strict=True)) > 190


def test_generator_variety():
    emails = generate(3000, seed=1)
    texts = [e.text for e in emails]
    assert len(set(texts)) >= 0.99 * len(texts)
    labels = collections.Counter(e.label for e in emails)
    assert set(labels) == INTENTS, f"intents never drawn: {INTENTS - set(labels)}"
    layouts = collections.Counter(e.layout for e in emails)
    assert set(layouts) >= {"terse", "standard", "long", "automated", "reply_chain", "forward", "list", "ps"}
    words = [len(t.split()) for t in texts]
    assert min(words) <= 6 and max(words) >= 150  # very short and very long emails
    joined = "\n".join(texts)
    assert "wrote:" in joined and "\n> " in joined  # quoted threads
    assert "Forwarded message" in joined or "Begin forwarded message" in joined
    assert "Sent from my" in joined and "CONFIDENTIALITY" in joined  # signatures and disclaimers
    assert sum(t == t.lower() for t in texts) > 100  # lower-case / texting style
    assert any(ch in joined for ch in "🙂😊👍🎉🙏")  # emoji
    assert re.search(r"\d{1,2}(:\d\d)? ?(am|pm)", joined)  # times
    # Every email's targets are a distribution over valid intents that contains its label.
    for e in emails:
        assert set(e.targets) <= INTENTS and e.label in e.targets
        assert abs(sum(e.targets.values()) - 1) < 1e-9


def test_every_intent_leads_some_scenario_and_templates_expand():
    leaders = set()
    import random

    for sc in SCENARIOS:
        assert set(sc.intents) <= INTENTS, f"{sc.name}: unknown intents {set(sc.intents) - INTENTS}"
        leaders.add(max(sc.intents, key=sc.intents.get))
        for tpl in sc.core + sc.context + sc.subject:
            assert slots_of(tpl) <= set(SLOTS), f"{sc.name}: unknown slot in {tpl!r}"
            expand(tpl, random.Random(0))  # balanced brackets, known slots
    assert leaders == INTENTS, f"intents that lead no scenario: {INTENTS - leaders}"


def test_template_errors_are_clear():
    import random

    with pytest.raises(TemplateError, match="unbalanced"):
        expand("[a|b", random.Random(0))
    with pytest.raises(TemplateError, match="unknown slot"):
        expand("{nosuchslot}", random.Random(0))
    assert expand("[Hi|Hi] {name}{name}", random.Random(3)).count(" ") == 1  # a slot keeps its value


def test_normalise_golden():
    assert D.normalise("  Hello,\n\tWorld!!  ") == "hello world"
    assert D.normalise("Can't — stop… «now»?") == "can t stop now"
    assert D.normalise("Café  au LAIT") == "café au lait"


def test_heldout_set_is_large_and_valid():
    rows = D.load_heldout()
    assert len(rows) >= 300
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["text"].strip() and r["intents"] and set(r["intents"]) <= INTENTS


def test_heldout_is_disjoint_from_every_training_and_transfer_set():
    from kdmobile.tasks.email import acts

    cfg = D.DataConfig()  # the sets `make demo` builds
    # Every hand-written text: heldout_a/b, heldout_c and the examples of the reply acts.
    examples = [e for a in acts.load_reply_acts()["intents"] for e in a.get("examples", [])]
    texts = [r["text"] for r in D.load_heldout() + acts.load_heldout_c()] + examples
    heldout = {D.normalise(t) for t in texts}
    assert len(heldout) == len(texts) > 560
    train = {D.normalise(e.text) for e in D.training_set(cfg)}
    val = {D.normalise(e.text) for e in D.validation_set(cfg)}
    transfer = {D.normalise(t) for t in D.transfer_texts(cfg)}
    assert len(train) > 19_000 and len(transfer) > 10_000
    assert not heldout & train
    assert not heldout & val
    assert not heldout & transfer


def test_disjointness_check_catches_a_leak():
    from kdmobile.errors import CheckFailed
    from kdmobile.tasks.email.pipeline import check_disjoint

    rows = [{"id": "x1", "text": "Can we meet on Friday?"}]
    check_disjoint(rows, training=["Can we meet on Thursday?"])
    with pytest.raises(CheckFailed, match="x1"):
        check_disjoint(rows, training=["can we  MEET on friday"])


def test_load_heldout_rejects_bad_rows(tmp_path):
    good = {"id": "a", "text": "Hi", "intents": ["yes"], "style": "terse"}
    f = tmp_path / "heldout_x.jsonl"
    f.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "intents": ["maybe_later"]}) + "\n")
    with pytest.raises(UsageError, match=r"heldout_x.jsonl:2: .*maybe_later"):
        D.load_heldout([f])
    f.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(UsageError, match="duplicate id 'a'"):
        D.load_heldout([f])
    f.write_text("{not json\n")
    with pytest.raises(UsageError, match="not valid JSON"):
        D.load_heldout([f])
    f.write_text(json.dumps(good) + "\n")
    assert D.load_heldout([f]) == [good]


def test_chatterbot_loader_skips_malformed_entries(tmp_path):
    (tmp_path / "a.yml").write_text(
        "categories:\n- test\nconversations:\n"
        "- - Hello there\n  - Hi!\n"
        "- A bare string entry, not a list\n"  # malformed: skipped
        "- - How are you?\n  - 42\n  - Fine, thanks.\n"  # a non-string item is skipped, the rest kept
        "- - Hello there\n  - Hi!\n"  # duplicates appear once
    )
    (tmp_path / "b.yml").write_text("just a string\n")  # a file without conversations is skipped
    assert D.load_chatterbot(tmp_path) == ["Hello there", "Hi!", "How are you?", "Fine, thanks."]


def test_chatterbot_loader_on_the_real_package():
    import yaml

    root = D.chatterbot_dir()
    lines = D.load_chatterbot()
    assert len(lines) > 1000 and all(isinstance(t, str) and t for t in lines)
    # The known malformed trivia entry (a string, not a list) exists in the package and is skipped.
    trivia = yaml.safe_load((root / "trivia.yml").read_text())["conversations"]
    bad = [c for c in trivia if not isinstance(c, list)]
    assert bad, "expected the malformed entry of trivia.yml"
    assert not any(b in lines for b in bad)
    assert "Who was the 37th President of the United States?" in lines


def test_transfer_set_mixes_generated_augmented_and_chatterbot():
    cfg = D.DataConfig(n_train=500, n_transfer=300, n_augment=200, n_sentences=150)
    texts = D.transfer_texts(cfg)
    chat = D.load_chatterbot()
    assert len(texts) == 300 + 200 + 150 + len(chat)
    gen = {e.text for e in generate(300, cfg.seed + 2)}
    assert gen <= set(texts)
    assert len(set(texts[300:500]) - gen) > 150  # the augmentations are new texts
    snippets = texts[500:650]
    source = "\n".join(e.text for e in generate(50, cfg.seed + 5))
    assert all(s.split(" ")[0] in source for s in snippets)  # cut from generated emails
    assert max(map(len, snippets)) < 0.5 * max(map(len, texts[:300]))  # and much shorter than them
    assert sum(any(c in t for c in chat[:200]) for t in texts[650:850]) > 150


def test_augment_is_deterministic():
    texts = [e.text for e in EmailGenerator(2).generate(100)]
    assert D.augment(texts, 50, seed=1) == D.augment(texts, 50, seed=1)
    assert D.augment(texts, 50, seed=1) != D.augment(texts, 50, seed=2)
