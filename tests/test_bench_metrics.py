"""The bench's generic metrics and evaluation sets: golden values, and agreement with the email task's own
metric code where both apply (one logit per class)."""

from __future__ import annotations

import numpy as np
import pytest

from kdmobile.errors import UsageError
from kdmobile.harness.tasks import classification_metrics, fidelity, npz_eval_set

SPECS = [
    {"name": "x", "shape": [1, 3], "dtype": "float32"},
    {"name": "mask", "shape": [1, 2], "dtype": "int64"},
]


def test_classification_metrics_golden():
    logits = np.array([[3.0, 1.0, 2.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 0.0, 0.0]])
    teacher = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    m = classification_metrics(logits, [[0], [1], [1]], teacher)
    # top-1: 0 ok; 3 not 1; 0 (tie, lower index) not 1 -> 1/3. top-3: {0,2,1} yes; {3,2,1} yes; {0,1,2} yes.
    assert m["top1"] == pytest.approx(1 / 3) and m["recall_at_3"] == 1.0
    assert m["teacher_agreement"] == pytest.approx(2 / 3) and m["n"] == 3 and m["kl"] > 0
    assert "top1" not in classification_metrics(logits, None)


def test_classification_metrics_match_the_email_metrics():
    from kdmobile.tasks.email.metrics import compute

    rng = np.random.default_rng(0)
    logits, teacher = rng.normal(size=(200, 12)), rng.normal(size=(200, 12))
    acceptable = [list(rng.choice(12, size=rng.integers(1, 3), replace=False)) for _ in range(200)]
    a, b = classification_metrics(logits, acceptable, teacher), compute(logits, acceptable, teacher)
    assert a == pytest.approx(b)


def test_fidelity_golden():
    ref = np.array([[1.0, -1.0], [2.0, 0.0]])
    f = fidelity(ref + np.array([[0.1, 0.0], [0.0, -0.1]]), ref)
    # signal 6/4 = 1.5, noise 0.02/4 = 0.005: 10 log10(300) = 24.77 dB
    assert f["sqnr_db"] == pytest.approx(24.771, abs=1e-3) and f["max_abs"] == pytest.approx(0.1)
    assert fidelity(ref, ref)["sqnr_db"] == 200.0


def test_npz_by_name_or_position_with_labels(tmp_path):
    x, mask = np.ones((4, 3), np.float64), np.zeros((4, 2), np.int32)
    np.savez(tmp_path / "a.npz", x=x, mask=mask, labels=np.arange(4))
    np.savez(tmp_path / "b.npz", x0=x, x1=mask)
    a, b = npz_eval_set(tmp_path / "a.npz", SPECS), npz_eval_set(tmp_path / "b.npz", SPECS)
    assert a.inputs[0].dtype == np.float32 and a.inputs[1].dtype == np.int64  # cast to the model's dtypes
    assert a.acceptable == [[0], [1], [2], [3]] and b.acceptable is None
    assert a.fingerprint() != b.fingerprint() and len(b) == 4


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"x": np.ones((4, 3))}, "expected one array per model input named x, mask"),
        ({"x": np.ones((4, 5)), "mask": np.zeros((4, 2))}, "array 'x' has shape (4, 5)"),
        ({"x": np.ones((4, 3)), "mask": np.zeros((3, 2))}, "same, non-zero number"),
        ({"x": np.ones((4, 3)), "mask": np.zeros((4, 2)), "labels": np.ones(4)}, "'labels' must be int[4]"),
    ],
)
def test_npz_that_does_not_fit(tmp_path, arrays, needle):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(UsageError, match="d.npz") as e:
        npz_eval_set(tmp_path / "d.npz", SPECS)
    assert needle in str(e.value)


def test_not_an_npz(tmp_path):
    (tmp_path / "d.npz").write_text("hello")
    with pytest.raises(UsageError, match="d.npz: not a readable .npz"):
        npz_eval_set(tmp_path / "d.npz", SPECS)
