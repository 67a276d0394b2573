"""The model zoo: every entry builds and runs eagerly; a fast subset exports to every registered target.

    .venv/bin/python -m pytest -q tests/test_zoo.py -m "not slow"

The full matrix (every entry x target x precision) is a benchmark, not a test:
``python -m kdmobile.zoo.coverage -o docs/coverage.md``. Here: a CNN (the MNIST CNN, real weights and
digits), a transformer (ViT, 2 layers at 64 px) and an RNN (the GRU text classifier) in their small
configurations, fp32 and int8, through the same path as the matrix; each cell must be ok (Core ML off
macOS: conversion_validated) and meet the zoo's bar (real models: top-1 agreement on real held-out
samples; random-init: SQNR).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from kdmobile.export import target_names
from kdmobile.zoo import build, names
from kdmobile.zoo.coverage import run_cell, zoo_spec, zoo_target

EXPECTED = {
    "efficientnet_b0",
    "email_student",
    "gru_text",
    "kws_conv1d",
    "minilm_l6",
    "mnist_cnn",
    "mnist_mlp",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilevit_xxs",
    "resnet18",
    "vit_tiny",
}


def test_registry_lists_every_entry() -> None:
    assert set(names()) == EXPECTED
    with pytest.raises(KeyError, match="valid: .*mobilenet_v2"):
        build("alexnet")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_entry_builds_and_runs_eagerly(name: str) -> None:
    zm = build(name, small=True, n_calibration=4, n_validation=8)
    assert len(zm.input_names) == len(zm.validation) == len(zm.calibration) == len(zm.example_inputs)
    assert all(len(x) == 8 for x in zm.validation) and all(len(x) == 4 for x in zm.calibration)
    with torch.no_grad():
        y = zm.module(*zm.example_inputs)
        batch = zm.module(*(torch.from_numpy(x) for x in zm.validation))
    assert isinstance(y, torch.Tensor) and y.ndim == 2 and y.shape[0] == 1 and y.shape[1] >= 10
    assert torch.isfinite(batch).all()
    # not a degenerate random net: outputs differ between samples and are not vanishingly small
    assert float(batch.std(dim=0).mean()) > 1e-3 and float(batch.abs().max()) > 1e-2
    if zm.real:
        assert zm.labels is not None and len(zm.labels) == 8
    else:
        assert zm.labels is None


def test_real_models_are_trained() -> None:
    """Top-1 agreement is only meaningful on a model that has learned something: MNIST CNN > 80%."""
    zm = build("mnist_cnn", small=True, n_calibration=4, n_validation=64)
    with torch.no_grad():
        pred = zm.module(torch.from_numpy(zm.validation[0])).argmax(1).numpy()
    assert (pred == zm.labels).mean() > 0.8


def test_minilm_is_static_shape() -> None:
    """The real MiniLM wrapper exports with torch.export (no data-dependent padding trimming)."""
    zm = build("minilm_l6", small=True, n_calibration=2, n_validation=4)
    ep = torch.export.export(zm.module, zm.example_inputs, strict=False)
    ids, mask = (torch.from_numpy(x[1:2]) for x in zm.validation)
    torch.testing.assert_close(ep.module()(ids, mask), zm.module(ids, mask))


FAST = {"mnist_cnn": False, "vit_tiny": True, "gru_text": True}  # name -> slow (> 30 s per cell)


@functools.cache
def _built(name: str):  # noqa: ANN202 - cached (ZooModel, ModelSpec, eager outputs)
    from kdmobile.export.validate import eager_outputs

    zm = build(name, small=True, n_calibration=16, n_validation=32)
    spec = zoo_spec(zm)
    return zm, spec, eager_outputs(zm.module, spec)


def _cases() -> list[object]:
    out = []
    for target in target_names():
        for name, slow in FAST.items():
            for precision in ("fp32", "int8"):
                marks = [pytest.mark.target(target)]
                # ExecuTorch int8 may try static, then dynamic: tens of seconds even on a small model
                if slow or (target == "executorch" and precision == "int8"):
                    marks.append(pytest.mark.slow)
                if slow and precision == "int8":
                    # minutes per cell on the 2 shared cores: `make test-all`, not `make test`
                    marks.append(pytest.mark.heavy)
                out.append(
                    pytest.param(target, name, precision, marks=marks, id=f"{target}-{name}-{precision}")
                )
    return out


@pytest.mark.parametrize(("target", "name", "precision"), _cases())
def test_fast_zoo_subset_exports(target: str, name: str, precision: str, tmp_path: Path) -> None:
    zm, spec, eager = _built(name)
    t = zoo_target(target, zm)
    ok, reason = t.availability()
    if not ok:
        pytest.skip(reason)
    row = run_cell(zm, t, precision, spec, eager, tmp_path, timing=False)
    assert row["status"] in ("ok", "conversion_validated"), row
    if row["status"] == "conversion_validated":
        assert row["size_bytes"] and row["sqnr_db"] is None
        return
    metric, floor = zm.bar(precision)
    value = row["top1_agreement"] if metric == "top1" else row["sqnr_db"]
    assert value is not None and value >= floor, row
    assert np.isfinite(row["sqnr_db"]) and row["size_bytes"] > 0


def test_coverage_resume_keeps_time_and_says_so(tmp_path: Path) -> None:
    """A resumed run keeps its earlier wall time and cells, runs only what is missing, and the Markdown
    says it was resumed (a coverage page must not pass off a stitched run as one uninterrupted run)."""
    import json

    from kdmobile.zoo.coverage import merge, run

    md = tmp_path / "cov.md"
    kw = dict(models=["kws_conv1d"], targets=["onnx-web"], precisions=["fp32"], small=True,
              n_calibration=2, n_validation=4, log=lambda m: None)  # fmt: skip
    first = run(md, **kw)
    assert [c["status"] for c in first["cells"]] == ["ok"]
    data = json.loads(md.with_suffix(".json").read_text())
    kept = data["cells"][0]
    data["wall_seconds"] = 1000.0  # as if it had run for a while, then stopped before a second cell
    data["finished"] = None
    md.with_suffix(".json").write_text(json.dumps(data))
    again = run(md, resume=True, **{**kw, "precisions": ["fp32", "int8"]})
    assert again["wall_seconds"] >= 1000.0
    assert len(again["resumed"]) == 1 and again["finished"]
    assert [c["precision"] for c in again["cells"]] == ["fp32", "int8"]
    assert again["cells"][0] == kept  # the done cell is not run again
    text = md.read_text()
    assert "resumed (`--resume`)" in text and f"wall time {again['wall_seconds'] / 60:.1f} min" in text
    merged = merge([md.with_suffix(".json")], tmp_path / "m.md")
    assert merged["resumed"] == again["resumed"] and "resumed" in (tmp_path / "m.md").read_text()
