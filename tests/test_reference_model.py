"""The fixed reference model the browser's latency is divided by must never change between a baseline and a
check: the same bytes on every call (pinned by their sha256) and the same outputs in onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from kdmobile.harness.reference import REFERENCE_ID, reference_onnx, reference_sha256

# Changing the model (or an onnx upgrade that serialises it differently) must come with a new REFERENCE_ID,
# so that `kdmobile check` refuses to compare ratios to the old and the new one.
GOLDEN_SHA256 = "89c19266a2e50f5b507dbc23e9215080197cd93b3843eb545df9cb63f73853c3"
GOLDEN_OUT = [-0.0030435135, -0.0052281753, 3.5279365e-05, 0.0074452967]


def test_reference_bytes_are_fixed():
    pytest.importorskip("onnx")
    assert reference_onnx() == reference_onnx()
    assert reference_sha256() == GOLDEN_SHA256, (
        f"the reference model changed: bump REFERENCE_ID ({REFERENCE_ID})"
    )


@pytest.mark.target("onnx-web")
def test_reference_runs_on_any_length_and_id_range():
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(reference_onnx(), providers=["CPUExecutionProvider"])
    for length in (1, 128, 768):
        ids = (np.arange(length, dtype=np.int64) * 7919 + 3)[None, :]  # ids far beyond the 1024 rows
        out = sess.run(None, {"ids": ids})[0]
        assert out.shape == (1, 16) and np.isfinite(out).all()
    # Golden output for one input (computed once from the fixed weights; float32, tight tolerance).
    out = sess.run(None, {"ids": np.array([[1, 2, 3, 1025]], dtype=np.int64)})[0]
    np.testing.assert_allclose(out[0, :4], GOLDEN_OUT, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("target", ["executorch", "tflite"])
def test_exported_reference_runs_in_its_runtime_with_the_onnx_reference_outputs(target):
    """ExecuTorch and LiteRT divide by the same network exported through their own target, timed in their
    runtime: it must compute what the ONNX reference computes (checked in onnxruntime, another runtime)."""
    pytest.importorskip({"executorch": "executorch", "tflite": "ai_edge_litert"}[target])
    ort = pytest.importorskip("onnxruntime")
    from kdmobile.harness.reference import reference_input, runtime_reference, runtime_reference_call

    ref = runtime_reference(target)  # cached after the first bench on this machine
    assert ref["id"].startswith(f"kdmobile-reference-v2 {target} sha256:{ref['sha256'][:16]} (torch ")
    assert runtime_reference(target) == ref  # the same file and identity on a second call
    out = np.asarray(runtime_reference_call(target, ref["path"])()[0])
    sess = ort.InferenceSession(reference_onnx(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"ids": reference_input()})[0]
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-6)


@pytest.mark.heavy
@pytest.mark.parametrize("target", ["executorch", "tflite"])
def test_a_rebuilt_reference_has_the_same_identity(target, tmp_path):
    """A deleted or damaged cache is rebuilt byte-identically, so a baseline and a later check agree."""
    pytest.importorskip({"executorch": "executorch", "tflite": "ai_edge_litert"}[target])
    from pathlib import Path

    from kdmobile.harness.reference import runtime_reference

    first = runtime_reference(target, cache=tmp_path)
    path = Path(first["path"])
    path.write_bytes(b"damaged")
    again = runtime_reference(target, cache=tmp_path)  # the sha256 no longer matches its record
    assert again == first and path.stat().st_size > 1000
