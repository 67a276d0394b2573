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


def test_bucket_vectors_golden():
    from kdmobile.tasks.email.wordvec import bucket_vectors, init_embedding

    tok = HashTokenizer(TokenizerConfig(num_buckets=1 << 20, max_len=64, word_ngrams=1, char_ngrams=(3, 3)))
    words = ["cat", "car", "dog", "ego"]
    # Variance 9 along axis 0, 1 along axis 1, none along axis 2: the principal components are the axes.
    vecs = np.array([[3.0, 0, 5], [-3.0, 0, 5], [0, 1.0, 5], [0, -1.0, 5]])
    rows, values = bucket_vectors(tok, 2, words, vecs)
    got = dict(zip(rows.tolist(), values, strict=True))
    # After centring, PC1 = +-(3,-3,0,0)/std and PC2 = +-(0,0,1,-1)/std with std over the 4 words.
    pc1 = np.array([3.0, -3.0, 0, 0]) / np.std([3.0, -3.0, 0, 0])
    pc2 = np.array([0, 0, 1.0, -1.0]) / np.std([0, 0, 1.0, -1.0])
    for i, w in enumerate(words):
        np.testing.assert_allclose(
            np.abs(got[tok.feature_id("w:" + w)]), [abs(pc1[i]), abs(pc2[i])], atol=1e-5
        )
    # "<ca" is shared by cat and car: the mean of their vectors, (0, 0).
    np.testing.assert_allclose(got[tok.feature_id("c:<ca")], [0.0, 0.0], atol=1e-6)
    # "dog" alone has "<do": its own vector.
    np.testing.assert_allclose(got[tok.feature_id("c:<do")], got[tok.feature_id("w:dog")], atol=1e-6)
    embed = torch.nn.Embedding(1 << 20, 2, padding_idx=0)
    assert init_embedding(embed, rows, values) == len(rows)
    torch.testing.assert_close(embed.weight[torch.as_tensor(rows)], torch.as_tensor(values))
    assert float(embed.weight[0].abs().sum()) == 0.0


def test_pretrained_word_vectors_carry_meaning():
    from kdmobile.tasks.email.teacher import TeacherConfig
    from kdmobile.tasks.email.wordvec import embed_words

    v = embed_words(TeacherConfig(), ["funeral", "condolences", "invoice", "payment"], progress=False)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert v[0] @ v[1] > v[0] @ v[2] and v[2] @ v[3] > v[2] @ v[1]


def test_gated_student_reads_the_start_and_can_ignore_the_rest():
    from kdmobile.tasks.email.model import EmailStudent

    torch.manual_seed(0)
    m = EmailStudent(num_buckets=64, dim=8, hidden=8, num_intents=3, gated=True).eval()
    ids = torch.tensor([[5, 6, 7, 8, 0, 0]])
    with torch.no_grad():
        m.gate.weight.fill_(-30.0)  # scores ~0: a plain masked mean
        plain = EmailStudent(num_buckets=64, dim=8, hidden=8, num_intents=3).eval()
        plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("gate")})
        torch.testing.assert_close(m(ids), plain(ids))
        m.gate.weight[6] = 30.0  # feature 6 stops the reading: only 5 and 6 count
        torch.testing.assert_close(m(ids), plain(torch.tensor([[5, 6, 0, 0, 0, 0]])), atol=1e-5, rtol=1e-5)
    m.train()
    m.token_dropout = 0.5
    torch.manual_seed(1)
    assert not torch.equal(m(ids), m(ids))  # token dropout is random in training
