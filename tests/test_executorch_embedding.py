"""ExecuTorch int8 quantizes embedding tables (per-row int8, ``embedding_byte``) and still runs.

    .venv/bin/python -m pytest -q tests/test_executorch_embedding.py

XNNPACK's PT2E quantizer leaves ``nn.Embedding`` in fp32; the target swaps wide tables for int8 rows with
one scale per row before export. Checked here against the real pybindings runtime, with bounds computed
independently of the target's code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kdmobile.export.base import ModelSpec, TensorSpec
from kdmobile.tasks.email.model import EmailStudent

pytest.importorskip("executorch")
pytest.importorskip("torchao")

ROWS, DIM, LEN = 4096, 32, 24


class Bag(nn.Module):
    """Mean of embedded ids: the only thing int8 can change is the table."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(ROWS, DIM, padding_idx=0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids).mean(dim=1)


def _spec(n_out: int, seed: int = 0) -> ModelSpec:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, ROWS, size=(40, LEN), dtype=np.int64)
    ids[:, -4:] = 0  # padding, as the tokenizer writes it
    return ModelSpec(
        task="test",
        inputs=[TensorSpec("ids", (1, LEN), "int64")],
        outputs=[TensorSpec("logits", (1, n_out), "float32")],
        calibration=(ids[:8],),
        validation={"random": (ids[8:],)},
    )


def _export(model: nn.Module, spec: ModelSpec, tmp_path, precision: str) -> tuple[dict, int, np.ndarray]:
    from targets.executorch import ExecuTorchTarget

    target = ExecuTorchTarget()
    out = tmp_path / f"model_{precision}.pte"
    details = target.export(
        model.eval(), spec, out, precision, variant="dynamic" if precision == "int8" else None
    )
    runtime = target.load(out)
    x = spec.validation["random"][0]
    got = np.concatenate([runtime(x[k : k + 1])[0] for k in range(len(x))])
    return details, out.stat().st_size, got


def test_embedding_rows_are_int8_and_exact_to_half_a_step(tmp_path) -> None:
    torch.manual_seed(0)
    model = Bag().eval()
    spec = _spec(DIM)
    details, size, got = _export(model, spec, tmp_path, "int8")
    assert details["flavour"].endswith("+embedding-byte")
    assert details["embedding_quantization"]["quantized"] == {"embed": [ROWS, DIM]}
    assert "quantized_decomposed_embedding_byte_default" in details["portable_ops"]
    assert size < ROWS * DIM * 1.5  # int8 rows + one fp32 scale per row, not 4 bytes per weight
    x = torch.from_numpy(spec.validation["random"][0])
    with torch.no_grad():
        ref = model(x).numpy()
        # a symmetric int8 row is off by at most half a step, step = max|row| / 127 (any -128..127 scheme)
        step = model.embed.weight.abs().amax(dim=1) / 127
    bound = float(step.max()) / 2 + 1e-6
    err = np.abs(got - ref)
    assert err.max() <= bound, (err.max(), bound)
    assert err.max() > 0, "bit-identical to fp32: was the table quantized?"


def test_email_student_int8_keeps_gate_fp32_and_shrinks(tmp_path) -> None:
    torch.manual_seed(0)
    model = EmailStudent(num_buckets=ROWS, dim=DIM, hidden=64, num_intents=8, gated=True).eval()
    spec = _spec(8)
    fp32, fp32_size, fp32_out = _export(model, spec, tmp_path, "fp32")
    int8, int8_size, int8_out = _export(model, spec, tmp_path, "int8")
    assert "embedding_quantization" not in fp32 and fp32["flavour"] == "xnnpack-fp32"
    q = int8["embedding_quantization"]
    assert q["quantized"] == {"embed": [ROWS, DIM]} and set(q["kept_fp32"]) == {"gate"}
    assert int8["flavour"] == "xnnpack-pt2e-dynamic-int8+embedding-byte"
    assert int8_size < 0.4 * fp32_size, (int8_size, fp32_size)
    x = torch.from_numpy(spec.validation["random"][0])
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(fp32_out, ref, atol=2e-3, rtol=1e-3)
    scale = np.abs(ref).max()
    assert np.abs(int8_out - ref).max() <= 0.05 * scale + 0.05
