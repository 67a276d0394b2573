"""MNIST task: the real data, the jitter, the nets, and a quick Hinton et al. 2015 run (distilled < scratch).

.venv/bin/python -m pytest tests/test_mnist.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdmobile.tasks.mnist.data import load_mnist, make_set, shift_images, split
from kdmobile.tasks.mnist.model import MLP


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_real_mnist_splits():
    data = load_mnist()
    assert {k: tuple(v[0].shape) for k, v in data.items()} == {
        "train": (50000, 784), "val": (10000, 784), "test": (10000, 784),
    }  # fmt: skip
    x, y = data["test"]
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) < 1.0
    # the published class counts of the MNIST test set
    assert np.bincount(y.numpy()).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    xs, ys = split("train+val", 0)
    assert len(xs) == 60000 and torch.equal(xs[50000:], data["val"][0])
    assert len(split("train", 123)[0]) == 123


def test_shift_images_moves_pixels_and_fills_zeros():
    img = np.zeros((28, 28), np.float32)
    img[10, 12] = 1.0
    img[27, 0] = 0.5
    x = torch.from_numpy(img.reshape(1, 784)).repeat(2, 1)
    out = shift_images(x, torch.tensor([[2, -1], [1, 0]]), 2).numpy().reshape(2, 28, 28)
    first = np.zeros((28, 28), np.float32)
    first[12, 11] = 1.0  # down 2, left 1; the bottom-row pixel falls off
    second = np.zeros((28, 28), np.float32)
    second[11, 12] = 1.0
    np.testing.assert_array_equal(out[0], first)
    np.testing.assert_array_equal(out[1], second)


def test_fixed_copies_are_deterministic_and_epoch_jitter_changes():
    x, y = split("train", 50)
    a = make_set(x, y, augment="fixed", copies=3, seed=1)
    b = make_set(x, y, augment="fixed", copies=3, seed=1)
    assert len(a) == 150
    ba, bb = a.get_batch([0, 50, 100, 7]), b.get_batch([0, 50, 100, 7])
    assert torch.equal(ba["student"][0], bb["student"][0]) and ba["student"][0] is ba["teacher"][0]
    assert ba["label"].tolist() == [int(y[0]), int(y[0]), int(y[0]), int(y[7])]
    assert (
        a.fingerprint() == b.fingerprint() != make_set(x, y, augment="fixed", copies=3, seed=2).fingerprint()
    )
    e = make_set(x, y, augment="epoch")
    first = e.get_batch(range(50))["student"][0].clone()
    e.set_epoch(1)
    assert not torch.equal(first, e.get_batch(range(50))["student"][0])
    assert not hasattr(a, "set_epoch")


def test_mlp_sizes_of_the_paper_and_max_norm():
    teacher, student = MLP(hidden=[1200, 1200]), MLP(hidden=[800, 800])
    # 784*1200+1200 + 1200*1200+1200 + 1200*10+10 ; 784*800+800 + 800*800+800 + 800*10+10
    assert sum(p.numel() for p in teacher.parameters()) == 2_395_210
    assert sum(p.numel() for p in student.parameters()) == 1_276_810
    assert student(torch.zeros(3, 784)).shape == (3, 10)
    m = MLP(hidden=[16], max_norm=0.5)
    with torch.no_grad():
        m.net[0].weight.mul_(10)
    m.after_step()
    assert float(m.net[0].weight.detach().norm(dim=1).max()) <= 0.5 + 1e-6


@pytest.mark.slow
def test_quick_hinton_distillation_beats_the_scratch_student(tmp_path):
    from kdmobile.tasks.mnist.hinton import Schedule, run

    schedule = Schedule(subset=3000, teacher_epochs=10, student_epochs=8, threads=1, train_split="train")
    r = run(schedule, tmp_path, progress=False, log=lambda m: None)
    assert r["test_size"] == 10000 and r["train_size"] == 3000
    assert r["teacher_errors"] < r["scratch_errors"], r
    assert r["distilled_errors"] < r["scratch_errors"], r  # same seeds, same initial student weights
    assert r["recovered_fraction"] == pytest.approx(
        (r["scratch_errors"] - r["distilled_errors"]) / (r["scratch_errors"] - r["teacher_errors"]), abs=1e-4
    )
