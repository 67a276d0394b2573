"""Golden-value tests of the distillation losses: hand values and plain numpy/math re-implementations.

    .venv/bin/python -m pytest tests/test_losses.py -q

No expected value here comes from kdmobile itself: each is computed by hand (math) or by a second,
straightforward implementation (numpy loops) inside this file.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from kdmobile.distill import LOSSES, build_losses
from kdmobile.errors import ConfigError, UsageError


@pytest.fixture(autouse=True)
def _one_thread():
    """Two cores are shared: one intra-op thread avoids oversubscription (and keeps runs deterministic)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def ref_kd(s: np.ndarray, t: np.ndarray, y: np.ndarray, T: float, alpha: float) -> float:
    """Hinton et al. 2015 written row by row."""
    rows = s.shape[0]
    kl = 0.0
    for i in range(rows):
        p = np.exp(np_log_softmax(t[i] / T))
        logq = np_log_softmax(s[i] / T)
        kl += float(np.sum(p * (np.log(p) - logq)))
    soft = kl / rows * T * T
    labelled = [i for i in range(rows) if y[i] >= 0]
    hard = 0.0
    if labelled:
        hard = -sum(float(np_log_softmax(s[i])[y[i]]) for i in labelled) / len(labelled)
    return alpha * hard + (1 - alpha) * soft


def loss(name: str, **kw):
    return LOSSES.get(name)(**kw)


def test_kd_hand_value_two_classes():
    # teacher logits (ln 3, 0) -> p = (3/4, 1/4); student (0, 0) -> q = (1/2, 1/2)
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    kl_t1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert loss("kd", temperature=1.0, alpha=0.0)(s, t, torch.tensor([-1])).item() == pytest.approx(
        kl_t1, rel=1e-6
    )
    # T = 2: p = (sqrt3, 1) / (sqrt3 + 1), q unchanged, times T^2 = 4
    r3 = math.sqrt(3.0)
    p = (r3 / (r3 + 1), 1 / (r3 + 1))
    kl_t2 = 4.0 * (p[0] * math.log(p[0] / 0.5) + p[1] * math.log(p[1] / 0.5))
    assert loss("kd", temperature=2.0)(s, t, torch.tensor([0])).item() == pytest.approx(kl_t2, rel=1e-6)
    # alpha = 0.5 with label 0: hard CE of a uniform student is ln 2
    got = loss("kd", temperature=2.0, alpha=0.5)(s, t, torch.tensor([0])).item()
    assert got == pytest.approx(0.5 * math.log(2.0) + 0.5 * kl_t2, rel=1e-6)


@pytest.mark.parametrize("T,alpha", [(1.0, 0.0), (4.0, 0.3), (20.0, 0.1), (0.5, 1.0)])
def test_kd_matches_rowwise_reference(T, alpha):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(7, 5)).astype(np.float32) * 3
    t = rng.normal(size=(7, 5)).astype(np.float32) * 3
    y = np.array([0, 4, -1, 2, -1, 1, 3])
    got = loss("kd", temperature=T, alpha=alpha)(
        torch.from_numpy(s), torch.from_numpy(t), torch.from_numpy(y)
    )
    assert got.item() == pytest.approx(ref_kd(s, t, y, T, alpha), rel=1e-5, abs=1e-6)


def test_kd_batch_of_only_unlabelled_rows_trains_on_soft_targets():
    s = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, -1.0]], requires_grad=True)
    t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([-1, -1])
    out = loss("kd", temperature=2.0, alpha=0.5)(s, t, y)
    expected = ref_kd(s.detach().numpy(), t.numpy(), y.numpy(), 2.0, 0.5)  # hard part is 0
    assert out.item() == pytest.approx(expected, rel=1e-6)
    out.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_ce_skips_unlabelled_rows():
    z = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 3.0, 0.0]], dtype=np.float32)
    y = np.array([0, -1, 1])
    expected = -(np_log_softmax(z[0])[0] + np_log_softmax(z[2])[1]) / 2
    got = loss("ce")(torch.from_numpy(z), None, torch.from_numpy(y)).item()
    assert got == pytest.approx(float(expected), rel=1e-6)
    zero = loss("ce")(torch.from_numpy(z), None, torch.tensor([-1, -1, -1]))
    assert zero.item() == 0.0


def test_logit_mse_hand_value():
    s = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    t = torch.tensor([[0.0, 2.0], [2.0, 1.0]])
    # squared errors 1, 0, 4, 4 -> mean 9/4
    assert loss("logit_mse")(s, t, torch.tensor([0, 1])).item() == pytest.approx(2.25)


def test_hidden_mse_projection_only_when_widths_differ():
    rng = np.random.default_rng(1)
    hs = torch.from_numpy(rng.normal(size=(4, 3)).astype(np.float32))
    ht = torch.from_numpy(rng.normal(size=(4, 5)).astype(np.float32))
    term = loss("hidden_mse", student_layer="a", teacher_layer="b")
    term.setup(hs, ht, torch.zeros(4))
    assert isinstance(term.proj, nn.Linear) and term.proj.weight.shape == (5, 3)
    w, b = term.proj.weight.detach().numpy(), term.proj.bias.detach().numpy()
    expected = np.mean((hs.numpy() @ w.T + b - ht.numpy()) ** 2)
    assert term(hs, ht, torch.zeros(4)).item() == pytest.approx(float(expected), rel=1e-5)

    same = loss("hidden_mse", student_layer="a", teacher_layer="b")
    same.setup(hs, hs * 2, torch.zeros(4))
    assert same.proj is None
    assert same(hs, hs * 2, torch.zeros(4)).item() == pytest.approx(float(np.mean(hs.numpy() ** 2)), rel=1e-6)
    with pytest.raises(UsageError, match="projection='none'"):
        loss("hidden_mse", student_layer="a", teacher_layer="b", projection="none").setup(
            hs, ht, torch.zeros(4)
        )


def test_attention_masks_scores_and_averages_heads():
    rng = np.random.default_rng(2)
    a_s = rng.normal(size=(2, 2, 3, 3)).astype(np.float32)
    a_t = rng.normal(size=(2, 4, 3, 3)).astype(np.float32)
    a_t[:, :, :, 2] = -1e4  # masked key position in the teacher
    term = loss("attention", student_layer="a", teacher_layer="b")
    term.setup(torch.from_numpy(a_s), torch.from_numpy(a_t), None)
    ref_s = np.where(a_s <= -100, 0.0, a_s).mean(axis=1)
    ref_t = np.where(a_t <= -100, 0.0, a_t).mean(axis=1)
    expected = float(np.mean((ref_s - ref_t) ** 2))
    assert term(torch.from_numpy(a_s), torch.from_numpy(a_t), None).item() == pytest.approx(
        expected, rel=1e-5
    )
    with pytest.raises(UsageError, match="sequence lengths"):
        term.setup(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 4, 4), None)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_token_kd_masks_padding(direction):
    rng = np.random.default_rng(3)
    s = rng.normal(size=(2, 4, 6)).astype(np.float32)
    t = rng.normal(size=(2, 4, 6)).astype(np.float32)
    y = np.array([[3, 1, -100, -100], [0, 5, 2, -1]])
    T = 2.0
    total, count = 0.0, 0
    for b in range(2):
        for i in range(4):
            if y[b, i] < 0:
                continue
            p, q = np.exp(np_log_softmax(t[b, i] / T)), np.exp(np_log_softmax(s[b, i] / T))
            a, c = (p, q) if direction == "forward" else (q, p)
            total += float(np.sum(a * np.log(a / c)))
            count += 1
    expected = total / count * T * T
    term = loss("token_kd", temperature=T, direction=direction)
    term.setup(torch.from_numpy(s), torch.from_numpy(t), torch.from_numpy(y))
    got = term(torch.from_numpy(s), torch.from_numpy(t), torch.from_numpy(y)).item()
    assert got == pytest.approx(expected, rel=1e-5)
    # changing a padded position's logits changes nothing
    s2 = s.copy()
    s2[0, 2] += 10.0
    assert term(torch.from_numpy(s2), torch.from_numpy(t), torch.from_numpy(y)).item() == pytest.approx(
        got, rel=1e-6
    )


def test_token_kd_vocab_mismatch_is_a_clear_setup_error():
    term = loss("token_kd")
    with pytest.raises(UsageError, match=r"teacher vocabulary has 7 tokens but the student's has 6"):
        term.setup(torch.zeros(1, 3, 6), torch.zeros(1, 3, 7), torch.zeros(1, 3, dtype=torch.long))


def test_build_losses_weights_types_and_errors():
    terms, weights = build_losses(
        {"kd": {"weight": 0.7, "temperature": 3.0}, "mse": {"type": "logit_mse", "weight": 0.3}}
    )
    assert list(terms) == ["kd", "mse"] and weights == {"kd": 0.7, "mse": 0.3}
    assert terms["kd"].temperature == 3.0 and type(terms["mse"]).__name__ == "LogitMSELoss"
    with pytest.raises(ConfigError, match=r"loss\.kd\.temprature"):
        build_losses({"kd": {"temprature": 3.0}})
    with pytest.raises(ConfigError, match=r"unknown loss type 'kld'"):
        build_losses({"kld": {}})
    with pytest.raises(ConfigError, match=r"loss\.kd: alpha must be in \[0, 1\]"):
        build_losses({"kd": {"alpha": 2.0}})
    with pytest.raises(ConfigError, match="student_layer"):
        build_losses({"h": {"type": "hidden_mse"}})


def test_every_registered_loss_has_a_paper_or_formula_docstring():
    for name in LOSSES.names():
        doc = LOSSES.get(name).__doc__ or ""
        assert "L = " in doc or "``L" in doc, f"loss {name!r} lacks its formula"
