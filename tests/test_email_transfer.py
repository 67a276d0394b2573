"""The reply-act transfer set and its teacher-probability cache (kdmobile/tasks/email/transfer.py)."""

from __future__ import annotations

import numpy as np
import pytest

from kdmobile.tasks.email import transfer as X


@pytest.fixture(scope="module")
def mix():
    return X.transfer_texts(X.TransferConfig(n=1200))


def test_transfer_mix_has_every_source_in_its_share_and_the_act_rows_first(mix):
    texts, sources, info = mix
    fixed = X.act_texts()
    assert texts[: len(fixed)] == fixed and set(sources[: len(fixed)]) == {"acts"}
    assert info["n"] == len(texts) == len(sources) == 1200 - info["dropped_heldout"]
    rest = 1200 - len(fixed)
    per = info["per_source"]
    for k in ("augment", "snippet", "mix", "chat"):
        assert abs(per[k] - rest * getattr(X.TransferConfig, k)) <= 1, (k, per)
    assert per["gen"] == rest - sum(per[k] for k in ("augment", "snippet", "mix", "chat"))
    # Shuffled: the first half after the act rows already holds every source.
    assert set(sources[len(fixed) : len(fixed) + rest // 2]) == set(X.SOURCES)


def test_transfer_mix_is_deterministic_and_apart_from_every_held_out_set(mix):
    from kdmobile.tasks.email.acts import load_heldout_c
    from kdmobile.tasks.email.data import load_heldout, normalise

    texts, _, _ = mix
    assert X.transfer_texts(X.TransferConfig(n=1200))[0] == texts
    assert X.transfer_texts(X.TransferConfig(n=1200, seed=1))[0][200:] != texts[200:]
    held = {normalise(r["text"]) for r in [*load_heldout(), *load_heldout_c()]}
    assert not held & {normalise(t) for t in texts}
    # The held-out texts never come back, even when put in the generator's pool: they are dropped.
    assert X._heldout_keys() == held


@pytest.fixture(scope="module")
def zeroshot(tmp_path_factory):
    """An untrained (zero-shot) act teacher over the first 3 acts + none (cheaper to build than all 54)."""
    import torch

    from kdmobile.tasks.email.act_teacher import RUNS, build_model
    from kdmobile.tasks.email.acts import load_reply_acts
    from kdmobile.tasks.email.teacher import TeacherConfig, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(TeacherConfig(max_len=64))
    model = build_model(RUNS["zeroshot"], tok, load_reply_acts()["intents"][:3]).eval()
    path = tmp_path_factory.mktemp("teacher") / "zeroshot.pt"
    torch.save(model.state_dict(), path)
    return model, tok, path


def test_length_sorted_scoring_equals_the_act_teachers_own_scoring(zeroshot, mix):
    from kdmobile.tasks.email.act_teacher import score

    model, tok, _ = zeroshot
    texts = mix[0][130:170] + ["", "ok", "x " * 300]  # act rows, mixed lengths, empty, longer than max_len
    want = score(model, tok, texts, 64)
    got = X.score_sorted(model, tok, texts, 64, batch_size=8)
    assert got.shape == want.shape == (len(texts), 4)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_teacher_probs_cache_reuses_the_chunks_of_a_prefix(zeroshot, mix, tmp_path):
    model, tok, path = zeroshot
    texts = mix[0][300:340]
    kw = {"chunk": 8, "loaded": (model, tok, 64), "log": lambda m: None}
    p1, i1 = X.teacher_probs(path, texts[:20], tmp_path, **kw)
    assert (i1["chunks_reused"], i1["chunks_computed"]) == (0, 3)
    p2, i2 = X.teacher_probs(path, texts, tmp_path, **kw)
    # 20 texts = 2 full chunks of 8 (reused) + a chunk of 4 that is not a chunk of the longer list.
    assert (i2["chunks_reused"], i2["chunks_computed"]) == (2, 3)
    np.testing.assert_array_equal(p2[:16], p1[:16])
    np.testing.assert_allclose(p2, X.score_sorted(model, tok, texts, 64), atol=2e-5)
    # Another checkpoint (other bytes) never reads these chunks.
    other = path.with_name("other.pt")
    other.write_bytes(path.read_bytes() + b"\0")
    assert X.teacher_probs(other, texts[:8], tmp_path, **kw)[1]["chunks_computed"] == 1
