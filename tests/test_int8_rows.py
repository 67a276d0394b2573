"""The int8-rows variants: int8 embedding tables gathered as rows, validated, at <= 0.3x the fp32 file.

    .venv/bin/python -m pytest -q tests/test_int8_rows.py

Each case goes through ``kdmobile.export`` (the runner, its variant order and the validation gate) and runs
the artifacts in their real runtimes (ExecuTorch pybindings, the LiteRT interpreter). Error bounds are
computed from the table here, not by the code under test. Timing goals are benchmarks, not tests
(docs/compress.md has the same-run ratios).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import kdmobile

ROWS, DIM, LEN = 4096, 32, 24
TARGETS = [
    pytest.param("executorch", marks=pytest.mark.target("executorch")),
    pytest.param("tflite", marks=pytest.mark.target("tflite")),
]


class Bag(nn.Module):
    """Mean of embedded ids, then a small classifier: nearly all bytes are the table."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(ROWS, DIM, padding_idx=0)
        self.head = nn.Linear(DIM, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(dim=1))


def _ids(n: int = 32, seed: int = 0) -> np.ndarray:
    ids = np.random.default_rng(seed).integers(1, ROWS, size=(n, LEN), dtype=np.int64)
    ids[:, -4:] = 0  # padding, as a tokenizer writes it
    return ids


def _export(model: nn.Module, target: str, tmp_path, ids: np.ndarray, precisions=("fp32", "int8")):
    res = kdmobile.export(
        model,
        (torch.from_numpy(ids[:1]),),
        targets=[target],
        precisions=list(precisions),
        validation=(ids,),
        out_dir=tmp_path / "out",
    )
    return {r.precision: r for r in res}


@pytest.mark.parametrize("target", TARGETS)
def test_int8_rows_per_tensor_is_validated_and_small(tmp_path, target) -> None:
    torch.manual_seed(0)
    model = Bag().eval()
    ids = _ids()
    r = _export(model, target, tmp_path, ids)
    assert r["fp32"].status.value == "ok" and r["int8"].status.value == "ok", (r["int8"].reason,)
    int8 = r["int8"]
    assert int8.flavour.endswith("+embedding-int8-rows-per-tensor"), int8.flavour
    assert "attempts" not in int8.details  # the first variant passed the gate
    assert int8.details["embedding_quantization"]["quantized"] == {"embed": [ROWS, DIM]}
    ratio = int8.path.stat().st_size / r["fp32"].path.stat().st_size
    assert ratio <= 0.3, ratio
    # The artifact's output is within what one int8 step of the table can move it (head applied to a
    # mean of rows each off by <= step/2), and not identical to fp32.
    got = np.concatenate([_run(target, int8.path, ids[k : k + 1]) for k in range(len(ids))])
    with torch.no_grad():
        ref = model(torch.from_numpy(ids)).numpy()
        step = float(model.embed.weight.abs().max()) / 127
        bound = step / 2 * float(model.head.weight.abs().sum(dim=1).max())
    err = np.abs(got - ref).max()
    assert 0 < err <= bound * 1.05 + 0.02 * np.abs(ref).max(), (err, bound)  # + the int8 head's share


@pytest.mark.heavy  # ~25 s of CPU for both targets: the failed per-tensor attempt is exported and run too
@pytest.mark.parametrize("target", TARGETS)
def test_one_outlier_row_falls_back_to_per_row_scales(tmp_path, target) -> None:
    """One row 1000x larger than the rest: one scale per table rounds every other row to ~0 and fails the
    gate; the per-row variant keeps them."""
    torch.manual_seed(0)
    model = Bag().eval()
    with torch.no_grad():
        model.embed.weight[7] *= 1000
    ids = _ids()
    ids[ids == 7] = 8  # the outlier row is stored, never looked up
    int8 = _export(model, target, tmp_path, ids, precisions=("int8",))["int8"]
    assert int8.status.value == "ok", int8.reason
    assert int8.flavour.endswith("+embedding-int8-rows-per-row"), int8.flavour
    assert [a["variant"] for a in int8.details["attempts"]] == ["rows-per-tensor"]
    assert int8.path.stat().st_size <= 0.3 * ROWS * DIM * 4  # the fp32 table alone


def test_models_without_tables_skip_the_rows_variants(tmp_path) -> None:
    """A CNN has no table: ExecuTorch int8 starts at static PTQ, as before, with no failed attempt."""
    pytest.importorskip("executorch")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.rand(32, 1, 8, 8)
    res = kdmobile.export(
        model, (x[:1],), targets=["executorch"], precisions=["int8"], validation=(x,), out_dir=tmp_path / "o"
    )
    (r,) = list(res)
    assert r.status.value == "ok", r.reason
    assert r.flavour == "xnnpack-pt2e-static-int8" and "attempts" not in r.details


def _run(target: str, path, x: np.ndarray) -> np.ndarray:
    from kdmobile.export.base import TARGETS as REGISTRY

    return REGISTRY.get(target)().load(path)(x)[0]
