"""``kdmobile.export`` on two users' models (a small CNN, a small GRU) through every target, fp32 and int8.

    .venv/bin/python -m pytest -q tests/test_export_api_targets.py

One module fixture exports both models to every registered target (~4 min on 2 shared cores, hence
``slow``); the tests then load each artifact again in its real runtime and compare it with the eager model
on inputs the exporter never saw, computing the statistics here.
"""

from __future__ import annotations

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
    torch.set_num_threads(2)
    out = {}
    for family, cls in (("cnn", SmallCNN), ("gru", SmallGRU)):
        torch.manual_seed(0)
        model = cls().eval()
        val = _data(family, 48, seed=1)
        res = kdmobile.export(
            model,
            (val[:1],),
            precisions=list(PRECISIONS),
            validation=(val,),
            out_dir=tmp_path_factory.mktemp(family) / "out",
        )
        out[family] = {"model": model, "result": res, "fresh": _data(family, 24, seed=2).numpy()}
    return out


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("family", ("cnn", "gru"))
@pytest.mark.parametrize("target", [pytest.param(n, marks=pytest.mark.target(n)) for n in TARGET_NAMES])
def test_every_target(exported: dict, family: str, target: str, precision: str) -> None:
    from kdmobile.export import get_target

    res = exported[family]["result"]
    row = res.result(target, precision)
    t = get_target(target)
    ok, reason = t.runtime_availability()
    assert row.path is not None and row.path.exists(), f"{target}/{precision}: {row.status} {row.reason}"
    if not ok:
        assert row.status.value == "conversion_validated" and row.reason == reason
        return
    assert row.status.value == "ok", row.reason
    model, x = exported[family]["model"], exported[family]["fresh"]
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    runtime = t.load(row.path)
    got = np.concatenate([runtime(x[k : k + 1])[0] for k in range(len(x))]).astype(np.float32)
    if precision == "fp32":
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)
    else:
        assert float(np.mean(got.argmax(1) == ref.argmax(1))) >= 0.9
        assert not np.allclose(got, ref, atol=1e-7), "int8 artifact equals fp32: was it quantized?"


def test_summary_is_not_synthetic(exported: dict) -> None:
    for family in ("cnn", "gru"):
        s = exported[family]["result"].summary
        assert s["validation"]["synthetic"] is False and s["warnings"] == []
        assert s["validation"]["splits"]["validation"] == 48
        assert s["ok"] is True
