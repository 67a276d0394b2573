"""The email task's public helpers: quick_student, sample_inputs, evaluate; the student's param budget.

.venv/bin/python -m pytest tests/test_email_student.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import kdmobile.tasks.email as E
from kdmobile.checkpoint import load_checkpoint
from kdmobile.errors import UsageError
from kdmobile.tasks.email.data import intent_ids
from kdmobile.tasks.email.generator import generate
from kdmobile.tasks.email.tokenizer import HashTokenizer, TokenizerConfig

TEACHER_PARAMS = 22_713_216  # all-MiniLM-L6-v2 (test_email_teacher checks the real count)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return E.quick_student(tmp_path_factory.mktemp("quick"), seed=0)


def test_quick_student_checkpoint_and_metadata(quick):
    model, meta = load_checkpoint(quick)
    assert meta["architecture"] == "email-student" and meta["task"] == "email"
    assert meta["intents"] == intent_ids()
    tok = TokenizerConfig(**{**meta["tokenizer"], "char_ngrams": tuple(meta["tokenizer"]["char_ngrams"])})
    assert tok == TokenizerConfig()
    ids = torch.from_numpy(HashTokenizer(tok).encode_batch(["Can we meet tomorrow at 3pm?"]))
    assert model(ids).shape == (1, len(intent_ids()))


def test_quick_student_beats_chance_on_fresh_generated_emails(quick):
    model, meta = load_checkpoint(quick)
    emails = generate(600, seed=424242)  # a seed quick_student never trains on
    ids = torch.from_numpy(HashTokenizer(TokenizerConfig()).encode_batch([e.text for e in emails]))
    with torch.no_grad():
        pred = model(ids).argmax(-1).numpy()
    names = intent_ids()
    acceptable = np.array([names[p] in e.targets for p, e in zip(pred, emails, strict=True)])
    # Chance: a uniform guess is acceptable with probability (number of acceptable intents) / 48.
    chance = np.mean([len(e.targets) / len(names) for e in emails])
    assert chance < 0.15
    assert acceptable.mean() > max(0.35, 3 * chance)


def test_quick_student_is_deterministic(quick, tmp_path):
    again = E.quick_student(tmp_path, seed=0)
    assert (
        json.loads(again.with_suffix(".json").read_text())["sha256"]
        == json.loads(quick.with_suffix(".json").read_text())["sha256"]
    )


def test_sample_inputs():
    cfg = TokenizerConfig(max_len=64)
    held = E.sample_inputs(cfg, n=16, split="heldout", seed=1)
    assert held.dtype == np.int64 and held.shape == (16, 64)
    assert (held[:, 0] > 0).all() and held.max() < cfg.num_buckets
    assert np.array_equal(held, E.sample_inputs(cfg, n=16, split="heldout", seed=1))
    assert not np.array_equal(held, E.sample_inputs(cfg, n=16, split="heldout", seed=2))
    # The first rows are real held-out emails, tokenised with the given config.
    rows = E.load_heldout()
    texts = {tuple(HashTokenizer(cfg).encode(r["text"])) for r in rows}
    assert all(tuple(r) in texts for r in held)
    gen = E.sample_inputs(
        {"max_len": 32, "char_ngrams": [3, 4], "type": "kdmobile-hash-ngram"}, n=8, split="generated"
    )
    assert gen.shape == (8, 32)
    with pytest.raises(UsageError, match="split"):
        E.sample_inputs(cfg, n=2, split="train")
    with pytest.raises(UsageError, match="held-out emails"):
        E.sample_inputs(cfg, n=10_000)


def test_evaluate_plugs_any_predict_fn():
    rows = [
        {"text": "Congratulations on the new job!", "intents": ["congratulate", "thanks"]},
        {"text": "Can you send me the slides?", "intents": ["send_file"]},
    ]
    intents = intent_ids()
    # A fixed "runtime": always ranks send_file, then thanks, then yes.
    order = {"send_file": 3.0, "thanks": 2.0, "yes": 1.0}
    logits = np.array([[order.get(k, 0.0) for k in intents]], dtype=np.float32)
    seen = []

    def predict(ids: np.ndarray) -> np.ndarray:
        seen.append(ids.shape)
        return np.repeat(logits, len(ids), axis=0)

    m = E.evaluate(predict, rows, tokenizer_config=TokenizerConfig(max_len=16), batch_size=1)
    assert seen == [(1, 16), (1, 16)]
    assert m == {"n": 2, "top1": 0.5, "recall_at_3": 1.0}
    with pytest.raises(UsageError, match="shape"):
        E.evaluate(lambda ids: np.zeros((len(ids), 3)), rows)


def test_default_student_fits_the_param_budget():
    from kdmobile.tasks.email.pipeline import EmailTaskConfig, count_params, new_student

    student = new_student(EmailTaskConfig(), len(intent_ids()), seed=0)
    assert count_params(student) <= TEACHER_PARAMS // 20
    ids = torch.from_numpy(HashTokenizer(TokenizerConfig()).encode_batch(["hi", "a much longer email " * 60]))
    assert student.eval()(ids).shape == (2, 48)
