"""Exporter fixes found by the zoo's coverage matrix, each checked on the installed converters and runtimes.

    .venv/bin/python -m pytest -q tests/test_export_fixes.py

- onnx-web judges op support by running the model: HardSwish is an ONNX function with no kernel of its
  own name, yet onnxruntime and onnxruntime-web run it;
- TFLite full-integer models take int8 inputs: float inputs are quantized with the tensor's scale and
  zero point (a plain cast turned MNIST pixels into 0s);
- a GRU converts to TFLite full-integer via the same GRU written with basic ops (``targets/_rnn.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdmobile.export import get_target
from kdmobile.export.base import ModelSpec, TensorSpec
from kdmobile.export.runner import export_one
from kdmobile.export.validate import eager_outputs


def _spec(
    inputs: list[TensorSpec], n_out: int, samples: tuple[np.ndarray, ...], real: bool = False
) -> ModelSpec:
    return ModelSpec(
        task="test",
        inputs=inputs,
        outputs=[TensorSpec("logits", (1, n_out), "float32")],
        calibration=samples,
        validation={"heldout" if real else "random": samples},
        real_split="heldout" if real else None,
    )


@pytest.mark.target("onnx-web")
def test_onnx_web_runs_hardswish(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Hardswish(), nn.Linear(32, 10)).eval()
    x = np.random.default_rng(0).normal(size=(16, 16)).astype(np.float32) * 3
    spec = _spec([TensorSpec("x", (1, 16), "float32")], 10, (x,))
    res = export_one(
        get_target("onnx-web"), model, spec, eager_outputs(model, spec), "fp32", tmp_path, source={}
    )
    assert res.status.value == "ok", res.reason
    assert "HardSwish" in res.details["ops"]
    assert res.details["wasm"]["status"] in ("ok", "skipped")  # skipped only without Node.js/onnxruntime-web


@pytest.mark.target("tflite")
def test_tflite_full_integer_quantizes_float_inputs(tmp_path: Path) -> None:
    from kdmobile.zoo import build
    from kdmobile.zoo.coverage import zoo_spec

    zm = build("mnist_cnn", small=True, n_calibration=16, n_validation=32)
    spec = zoo_spec(zm)
    res = export_one(
        get_target("tflite"),
        zm.module,
        spec,
        eager_outputs(zm.module, spec),
        "int8-full",
        tmp_path,
        source={},
    )
    assert res.status.value == "ok", res.reason
    assert res.inputs[0].dtype == "int8"  # the artifact really takes int8 pixels
    assert res.error_stats_by_split["heldout"]["top1_agreement"] >= 0.98
    assert res.error_stats["sqnr_db"] >= 20


@pytest.mark.parametrize(("layers", "bidirectional", "batch_first"), [(1, False, True), (2, True, False)])
def test_unrolled_gru_equals_nn_gru(layers: int, bidirectional: bool, batch_first: bool) -> None:
    from targets._rnn import unroll_grus

    torch.manual_seed(0)
    gru = nn.GRU(6, 8, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first).eval()
    x = torch.randn((2, 5, 6) if batch_first else (5, 2, 6))
    h0 = torch.randn(layers * (2 if bidirectional else 1), 2, 8)
    unrolled, names = unroll_grus(gru)
    assert names == [""]  # the GRU itself (the root module) is replaced
    for args in ((x,), (x, h0)):
        want_out, want_h = gru(*args)
        got_out, got_h = unrolled(*args)
        torch.testing.assert_close(got_out, want_out, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(got_h, want_h, atol=1e-6, rtol=1e-5)


class TinyGRU(nn.Module):
    """Keeps only the GRU's last state, called without an initial state: what trips litert-torch's annotator."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.gru = nn.GRU(8, 16, batch_first=True)
        self.head = nn.Linear(16, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(self.embed(ids))
        return self.head(h[-1])


@pytest.mark.slow  # two conversions (the native attempt, then the unrolled GRU): ~110 s on the loaded machine
@pytest.mark.target("tflite")
def test_tflite_full_integer_converts_a_gru(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyGRU().eval()
    ids = np.random.default_rng(0).integers(1, 50, size=(16, 12))
    spec = _spec([TensorSpec("ids", (1, 12), "int64")], 5, (ids,))
    res = export_one(
        get_target("tflite"), model, spec, eager_outputs(model, spec), "int8-full", tmp_path, source={}
    )
    assert res.status.value == "ok", res.reason
    assert res.flavour.endswith("+unrolled-gru") and res.details["rnn_unrolled"]["modules"] == ["gru"]
    assert res.error_stats["sqnr_db"] >= 20
