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


def test_trimmed_batches_give_the_students_untrimmed_outputs():
    import torch

    from kdmobile.tasks.email.model import EmailStudent
    from kdmobile.tasks.email.tx_student import _trim

    torch.manual_seed(0)
    model = EmailStudent(num_buckets=64, dim=8, hidden=16, num_intents=5, gated=True).eval()
    torch.nn.init.normal_(model.gate.weight)  # a gate far from a plain mean
    ids = np.zeros((3, 12), np.int64)
    ids[0, :5], ids[1, :2], ids[2, :7] = [1, 2, 3, 4, 5], [9, 9], [7, 1, 8, 2, 6, 3, 5]
    assert _trim(ids).shape == (3, 7) and _trim(np.zeros((2, 4), np.int64)).shape == (2, 1)
    with torch.no_grad():
        full, cut = model(torch.from_numpy(ids)), model(torch.from_numpy(_trim(ids)))
    torch.testing.assert_close(cut, full, rtol=1e-6, atol=1e-6)


def test_dev_figures_on_a_hand_computed_case():
    from kdmobile.tasks.email.tx_student import dev_figures

    ids = ["yes", "no", "thanks"]
    rows = [{"acts": ["yes"]}, {"acts": ["thanks", "no"]}, {"acts": []}]
    # columns: yes, no, thanks, none
    student = np.array([[0.5, 0.2, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.2, 0.5, 0.2, 0.1]])
    teacher = np.array([[0.6, 0.1, 0.2, 0.1], [0.1, 0.5, 0.3, 0.1], [0.1, 0.5, 0.1, 0.3]])
    f = dev_figures(student, teacher, rows, ids)
    # top-1 on the two emails with acts: yes (right), thanks (right); agreement over acts: yes=yes,
    # thanks!=no, no=no; over all four columns: yes=yes, none!=no, no=no.
    assert (f["top1"], f["recall_at_3"]) == (1.0, 1.0)
    assert f["agreement"] == pytest.approx(2 / 3) and f["agreement_none"] == pytest.approx(2 / 3)
    kl = np.mean((teacher * np.log(teacher / student)).sum(1))
    assert f["kl"] == pytest.approx(kl, abs=1e-6)
