"""Two users' models through every target, fp32 and int8: a small GRU with ``kdmobile.export(...)`` in
memory, a small CNN saved with ``torch.export.save`` and exported by ``kdmobile export model.pt2 --all
--validation v.npz -o out``.

    .venv/bin/python -m pytest -q tests/test_export_api_targets.py

One module fixture exports both (~4 min on 2 shared cores, hence ``slow``); the tests then load each
artifact again in its real runtime and compare it with the eager model on inputs the exporter never saw,
computing the statistics here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import kdmobile
from kdmobile.export import discover

pytestmark = pytest.mark.slow

TARGET_NAMES = discover().names()
PRECISIONS = ("fp32", "int8")


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(image)))).flatten(1))


class SmallGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(8, 16, batch_first=True)
        self.fc = nn.Linear(16, 4)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(seq)
        return self.fc(h[-1])


def _data(family: str, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=g) if family == "cnn" else torch.randn(n, 12, 8, generator=g)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """family -> {"model", "summary", "out", "fresh"}."""
    from kdmobile.cli import main

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("user-models")
    out = {}
    torch.manual_seed(0)
    gru, val = SmallGRU().eval(), _data("gru", 48, seed=1)
    res = kdmobile.export(
        gru, (val[:1],), precisions=list(PRECISIONS), validation=(val,), out_dir=root / "gru"
    )
    out["gru"] = {"model": gru, "summary": res.summary, "out": root / "gru"}
    torch.manual_seed(0)
    cnn, val = SmallCNN().eval(), _data("cnn", 48, seed=1)
    torch.export.save(torch.export.export(cnn, (val[:1],)), str(root / "cnn.pt2"))
    np.savez(root / "val.npz", image=val.numpy())
    argv = [
        "export",
        str(root / "cnn.pt2"),
        "--all",
        "--validation",
        str(root / "val.npz"),
        "-o",
        str(root / "cnn"),
    ]
    assert main([*argv, "-p", *PRECISIONS]) == 0
    summary = json.loads((root / "cnn" / "summary.json").read_text())
    out["cnn"] = {"model": cnn, "summary": summary, "out": root / "cnn"}
    for family in out:
        out[family]["fresh"] = _data(family, 24, seed=2).numpy()
    return out


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("family", ("cnn", "gru"))
@pytest.mark.parametrize("target", [pytest.param(n, marks=pytest.mark.target(n)) for n in TARGET_NAMES])
def test_every_target(exported: dict, family: str, target: str, precision: str) -> None:
    from kdmobile.export import get_target

    (row,) = [
        r
        for r in exported[family]["summary"]["results"]
        if r["target"] == target and r["precision"] == precision
    ]
    t = get_target(target)
    ok, reason = t.runtime_availability()
    assert row["path"], f"{target}/{precision}: {row['status']} {row['reason']}"
    path = exported[family]["out"] / row["path"]
    assert path.exists()
    if not ok:
        assert row["status"] == "conversion_validated" and row["reason"] == reason
        return
    assert row["status"] == "ok", row["reason"]
    model, x = exported[family]["model"], exported[family]["fresh"]
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    runtime = t.load(path)
    got = np.concatenate([runtime(x[k : k + 1])[0] for k in range(len(x))]).astype(np.float32)
    if precision == "fp32":
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)
    else:
        assert float(np.mean(got.argmax(1) == ref.argmax(1))) >= 0.9
        assert not np.allclose(got, ref, atol=1e-7), "int8 artifact equals fp32: was it quantized?"


def test_summary_is_not_synthetic(exported: dict) -> None:
    for family in ("cnn", "gru"):
        s = exported[family]["summary"]
        assert s["validation"]["synthetic"] is False and s["warnings"] == []
        assert s["validation"]["splits"]["validation"] == 48
        assert s["ok"] is True
