"""The teacher-output cache: build, reuse, stale key, corrupt files, top-k reconstruction, cache == online.

.venv/bin/python -m pytest tests/test_cache.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from kdmobile.distill import (
    CacheConfig,
    CacheError,
    DistillConfig,
    Distiller,
    OptimConfig,
    TeacherCache,
    TrainConfig,
)
from kdmobile.errors import UsageError


@pytest.fixture(autouse=True)
def _one_thread():
    """Two cores are shared: one intra-op thread avoids oversubscription (and keeps runs deterministic)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class Toy:
    """Teacher and student take different inputs: the teacher sees x, the student sees 2x as float64->32."""

    def __init__(self, n: int = 96, dim: int = 6, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {
            "student": (self.x[i] * 2,),
            "teacher": (self.x[i],),
            "label": int(self.y[i]) if i % 4 else -1,
        }


class CountingTeacher(nn.Module):
    def __init__(self, dim: int = 6, classes: int = 12) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.lin = nn.Linear(dim, classes)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.lin(x) * 3.0


def build(path, teacher, data, **kw):
    return TeacherCache.open_or_build(
        path, teacher, data, batch_size=32, progress=False, log=lambda m: None, **kw
    )


def test_build_stores_the_teacher_logits_and_reuses_them(tmp_path):
    data, teacher = Toy(), CountingTeacher()
    cache, info = build(tmp_path / "c", teacher, data)
    assert info["status"] == "built" and len(cache) == len(data)
    with torch.no_grad():
        direct = teacher.lin(data.x) * 3.0  # computed here, not by the cache
    idx = torch.tensor([5, 0, 95, 17])
    torch.testing.assert_close(cache.logits(idx), direct[idx], rtol=1e-6, atol=1e-6)
    header = json.loads((tmp_path / "c" / "header.json").read_text())
    assert (
        header["key"] == info["key"]
        and header["n"] == 96
        and header["files"]["logits.npy"]["shape"] == [96, 12]
    )
    assert isinstance(np.load(tmp_path / "c" / "logits.npy", mmap_mode="r"), np.memmap)

    calls = teacher.calls
    again, info2 = build(tmp_path / "c", teacher, data)
    assert info2["status"] == "reused" and teacher.calls == calls  # the teacher did not run again
    torch.testing.assert_close(again.logits(idx), direct[idx], rtol=1e-6, atol=1e-6)


def test_stale_key_is_detected_and_rebuilt(tmp_path):
    data, teacher = Toy(), CountingTeacher()
    _, first = build(tmp_path / "c", teacher, data)
    with torch.no_grad():
        teacher.lin.bias[0] += 1.0  # new teacher weights
    messages: list[str] = []
    cache, info = TeacherCache.open_or_build(
        tmp_path / "c", teacher, data, progress=False, log=messages.append
    )
    assert info["status"] == "rebuilt" and "stale" in info["reason"] and info["key"] != first["key"]
    assert messages and "stale" in messages[0]
    with torch.no_grad():
        torch.testing.assert_close(cache.logits([3]), teacher.lin(data.x[3:4]) * 3.0, rtol=1e-6, atol=1e-6)
    # other data -> stale as well
    _, info3 = build(tmp_path / "c", teacher, Toy(seed=1))
    assert info3["status"] == "rebuilt" and "stale" in info3["reason"]
    # other settings (fp16) -> stale as well
    _, info4 = build(tmp_path / "c", teacher, Toy(seed=1), dtype="float16")
    assert info4["status"] == "rebuilt"
    with pytest.raises(CacheError, match="stale"):
        TeacherCache.open(tmp_path / "c", key=info3["key"])


@pytest.mark.parametrize("damage", ["flip", "truncate", "header"])
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, damage):
    data, teacher = Toy(), CountingTeacher()
    _, info = build(tmp_path / "c", teacher, data)
    f = tmp_path / "c" / "logits.npy"
    raw = bytearray(f.read_bytes())
    if damage == "flip":
        raw[-7] ^= 0xFF
        f.write_bytes(bytes(raw))
        reason = "sha256"
    elif damage == "truncate":
        f.write_bytes(bytes(raw[:-40]))
        reason = "bytes"
    else:
        (tmp_path / "c" / "header.json").write_text("{not json")
        reason = "unreadable"
    with pytest.raises(CacheError, match=reason):
        TeacherCache.open(tmp_path / "c", key=info["key"])
    cache, info2 = build(tmp_path / "c", teacher, data)
    assert info2["status"] == "rebuilt" and reason in info2["reason"]
    with torch.no_grad():
        torch.testing.assert_close(cache.logits(range(96)), teacher.lin(data.x) * 3.0, rtol=1e-6, atol=1e-6)


def test_topk_reconstruction_keeps_topk_probs_and_spreads_the_rest(tmp_path):
    data, teacher = Toy(), CountingTeacher(classes=12)
    k = 3
    cache, _ = build(tmp_path / "c", teacher, data, topk=k)
    assert cache.mode == "topk"
    with torch.no_grad():
        z = (teacher.lin(data.x) * 3.0).double().numpy()
    rec = cache.logits(range(len(data))).double().numpy()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = np.exp(rec - rec.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    for i in range(len(data)):
        top = np.argsort(-z[i])[:k]
        others = np.setdiff1d(np.arange(12), top)
        rest = p[i, others].sum()
        np.testing.assert_allclose(q[i, top], p[i, top], rtol=0, atol=2e-3)  # fp16 logits
        np.testing.assert_allclose(q[i, others], np.full(len(others), rest / len(others)), rtol=0, atol=2e-3)
        assert np.allclose(rec[i, top], z[i, top], atol=2e-2)  # the stored logits themselves
    sizes = json.loads((tmp_path / "c" / "header.json").read_text())["files"]
    assert sizes["values.npy"]["dtype"] == "float16" and sizes["values.npy"]["shape"] == [96, 3]
    with pytest.raises(UsageError, match="smaller than the 12 classes"):
        build(tmp_path / "d", teacher, data, topk=12)


def test_plain_callable_teacher_needs_an_id(tmp_path):
    data = Toy()
    w = torch.randn(6, 4)

    def teacher(x):
        return x @ w

    with pytest.raises(UsageError, match="teacher_id"):
        build(tmp_path / "c", teacher, data)
    cache, info = build(tmp_path / "c", teacher, data, teacher_id="w-v1")
    assert info["status"] == "built" and torch.allclose(cache.logits([1]), data.x[1:2] @ w)


class Student(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 12))

    def forward(self, x):
        return self.net(x)


def _distil(tmp_path, cache: bool, name: str):
    torch.manual_seed(0)
    student = Student()
    cfg = DistillConfig(
        loss={"kd": {"temperature": 2.0, "alpha": 0.3}},
        train=TrainConfig(epochs=3, batch_size=16, seed=5, progress=False),
        optim=OptimConfig(name="adamw", lr=1e-2, schedule="cosine", warmup=0.1),
        cache=CacheConfig(enabled=cache),
    )
    d = Distiller(student, CountingTeacher(), cfg, run_dir=tmp_path / name, log=lambda m: None)
    return d.fit(Toy())


def test_student_from_cache_equals_student_with_teacher_online(tmp_path):
    online, h_online = _distil(tmp_path, False, "online")
    cached, h_cached = _distil(tmp_path, True, "cached")
    assert [e["teacher"] for e in h_online.epochs] == ["online"] * 3
    assert [e["teacher"] for e in h_cached.epochs] == ["cache"] * 3 and h_cached.cache["status"] == "built"
    for (name, a), b in zip(online.state_dict().items(), cached.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{name} differs")
    # and the training actually moved the weights
    torch.manual_seed(0)
    init = Student()
    assert not torch.allclose(init.net[0].weight, online.net[0].weight)


def test_feature_losses_refuse_the_cache():
    cfg = DistillConfig(
        loss={"h": {"type": "hidden_mse", "student_layer": "net.0", "teacher_layer": "lin"}},
        cache=CacheConfig(enabled=True),
    )
    with pytest.raises(UsageError, match="cache.enabled = false"):
        Distiller(Student(), CountingTeacher(), cfg)
