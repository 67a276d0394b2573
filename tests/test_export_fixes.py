"""Exporter fixes found by the zoo's coverage matrix, each checked on the installed converters and runtimes.

    .venv/bin/python -m pytest -q tests/test_export_fixes.py

- onnx-web judges op support by running the model: HardSwish is an ONNX function with no kernel of its
  own name, yet onnxruntime and onnxruntime-web run it;
- TFLite full-integer models take int8 inputs: float inputs are quantized with the tensor's scale and
  zero point (a plain cast turned MNIST pixels into 0s);
- a GRU converts to TFLite full-integer via the same GRU written with basic ops (``targets/_rnn.py``);
- Core ML converts transformers' mask helpers (``new_ones``, bool ``&``), and ExecuTorch int8 keeps their
  integer index arithmetic integer (MiniLM);
- the int8 weight-only fallbacks of TFLite (ai-edge-quantizer) and onnx-web (``MatMulNBits``, 8 bits).
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


class MaskIndex(nn.Module):
    """The pattern of transformers' mask helpers (MiniLM/BERT): ``new_ones``, bool ``&``, and a gather whose
    indices are integer arithmetic ``arange(n) + 0``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.to(torch.bool)[:, torch.arange(8) + 0]
        keep = x.new_ones((), dtype=torch.bool) & keep
        return self.fc(x) * keep.to(x.dtype)


def _mask_spec() -> tuple[ModelSpec, MaskIndex]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8)).astype(np.float32)
    mask = (rng.random((16, 8)) > 0.2).astype(np.int64)
    spec = ModelSpec(
        task="test",
        inputs=[TensorSpec("x", (1, 8), "float32"), TensorSpec("mask", (1, 8), "int64")],
        outputs=[TensorSpec("logits", (1, 8), "float32")],
        calibration=(x, mask),
        validation={"random": (x, mask)},
    )
    return spec, MaskIndex().eval()


@pytest.mark.target("coreml")
def test_coreml_converts_new_ones_and_bool_and(tmp_path: Path) -> None:
    """Core ML had no lowering for ``new_ones`` nor ``__and__`` (MiniLM: "Unsupported fx node new_ones")."""
    spec, model = _mask_spec()
    res = export_one(
        get_target("coreml"), model, spec, eager_outputs(model, spec), "fp32", tmp_path, source={}
    )
    assert res.status.value in ("conversion_validated", "ok"), res.reason


@pytest.mark.target("executorch")
def test_executorch_int8_keeps_integer_index_arithmetic(tmp_path: Path) -> None:
    """XNNPACK's quantizer lifted ``arange(8) + 0`` into a float32 buffer (executorch#22062): calibration then
    failed with "IndexError: tensors used as indices must be long..." (MiniLM int8)."""
    spec, model = _mask_spec()
    target = get_target("executorch")
    target.variants = lambda precision: ("static",)  # the first variant must work, not a fallback
    res = export_one(target, model, spec, eager_outputs(model, spec), "int8", tmp_path, source={})
    assert res.status.value == "ok", res.reason
    assert res.flavour.startswith("xnnpack-pt2e-static-int8")


@pytest.mark.target("tflite")
def test_tflite_int8_weight_only_variant(tmp_path: Path) -> None:
    """The weight-only fallback stores int8 weights and computes in float: close to the eager model."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.Hardswish(), nn.Linear(128, 10)).eval()
    x = np.random.default_rng(0).normal(size=(16, 64)).astype(np.float32)
    spec = _spec([TensorSpec("input", (1, 64), "float32")], 10, (x,))  # nn.Sequential's argument name
    target = get_target("tflite")
    # the int8-rows variants come first, and are skipped for a model without embedding tables
    assert target.variants("int8")[-3:] == ("dynamic", "weight-only", "fc")
    target.variants = lambda precision: ("weight-only",)
    res = export_one(target, model, spec, eager_outputs(model, spec), "int8", tmp_path, source={})
    assert res.status.value == "ok", res.reason
    assert res.flavour.startswith("weight-only-int8")
    assert res.error_stats["sqnr_db"] >= 30
    assert res.size_bytes < 0.5 * (64 * 128 + 128 * 10) * 4  # int8 weights, not fp32


@pytest.mark.target("onnx-web")
def test_onnx_web_int8_weight_only_variant(tmp_path: Path) -> None:
    """MatMulNBits at 8 bits: int8 weights with float activations, run by onnxruntime and its wasm build."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64), nn.GELU(), nn.Linear(64, 10))
    model = nn.Sequential(model, nn.Flatten()).eval()  # tokens x features: MatMul, not Gemm, in ONNX
    x = np.random.default_rng(0).normal(size=(16, 1, 64)).astype(np.float32)
    spec = _spec([TensorSpec("input", (1, 1, 64), "float32")], 10, (x,))
    target = get_target("onnx-web")
    target.variants = lambda precision: ("weight-only",)
    res = export_one(target, model, spec, eager_outputs(model, spec), "int8", tmp_path, source={})
    assert res.status.value == "ok", res.reason
    assert any(op.endswith("MatMulNBits") for op in res.details["ops"])
    assert res.error_stats["sqnr_db"] >= 35
    assert res.details["wasm"]["status"] in ("ok", "skipped")  # skipped only without Node.js/onnxruntime-web
