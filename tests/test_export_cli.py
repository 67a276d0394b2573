"""``kdmobile export MODEL`` for a user's model: a ``torch.export.save`` program or a checkpoint naming its
own class, no package edit.

    .venv/bin/python -m pytest -q tests/test_export_cli.py

The exported artifacts are read back here in onnxruntime and compared with the eager model on inputs the
exporter never saw. ``model.pt2 --all --validation v.npz`` through every target is in
tests/test_export_api_targets.py (slow).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdmobile.checkpoint import save_checkpoint
from kdmobile.cli import main


class Tagger(nn.Module):
    """Two inputs (features, mask), scores first."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(features) * mask


class DataDependent(nn.Module):
    """Trims the padding by ``mask.sum()``: a data-dependent shape no target can export."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = int(mask.sum())
        return self.fc(x[:, :n].sum(dim=1, keepdim=True))


def _program(tmp_path: Path) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    model = Tagger().eval()
    example = (torch.randn(1, 6), torch.ones(1, 4))
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model, example), str(path))
    return path, model


def _val(tmp_path: Path, n: int = 32, **override: np.ndarray) -> Path:
    rng = np.random.default_rng(3)
    arrays = {
        "features": rng.normal(size=(n, 6)).astype(np.float32),
        "mask": (rng.random((n, 4)) > 0.3).astype(np.float32),
        "labels": rng.integers(0, 4, n),
    }
    arrays.update(override)
    path = tmp_path / "val.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.target("onnx-web")
def test_pt2_without_validation_warns_loudly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort

    path, model = _program(tmp_path)
    out = tmp_path / "out"
    assert main(["export", str(path), "-t", "onnx-web", "-p", "fp32", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("WARNING: no validation data") >= 2  # in the progress log and above the table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["validation"]["synthetic"] is True
    assert summary["checkpoint"] == str(path)
    assert summary["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    sess = ort.InferenceSession(str(out / "onnx-web" / "model_fp32.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["features", "mask"]
    x, m = np.random.default_rng(9).normal(size=(1, 6)).astype(np.float32), np.ones((1, 4), np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x), torch.from_numpy(m)).numpy()
    np.testing.assert_allclose(sess.run(None, {"features": x, "mask": m})[0], ref, atol=1e-5)


@pytest.mark.target("onnx-web")
def test_checkpoint_of_a_user_class(tmp_path: Path) -> None:
    """architecture = "module:Class": kdmobile imports it; --validation gives the real inputs."""
    torch.manual_seed(1)
    ckpt = save_checkpoint(
        tmp_path / "tagger.safetensors", Tagger(), architecture=f"{__name__}:Tagger", model_config={}
    )
    out = tmp_path / "out"
    rc = main(
        [
            "export",
            str(ckpt),
            "-t",
            "onnx-web",
            "-p",
            "fp32",
            "--validation",
            str(_val(tmp_path)),
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["architecture"] == f"{__name__}:Tagger" and summary["validation"]["synthetic"] is False


def test_bad_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "broken.pt2"
    garbage.write_bytes(b"not a zip archive")
    assert main(["export", str(garbage), "--all", "-o", str(tmp_path / "o")]) == 2
    assert "does not load as a torch.export program" in capsys.readouterr().err

    ckpt = save_checkpoint(
        tmp_path / "x.safetensors", Tagger(), architecture="no_such_package.models:Net", model_config={}
    )
    assert (
        main(["export", str(ckpt), "--all", "--validation", str(_val(tmp_path)), "-o", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err
    assert "'no_such_package.models:Net' cannot be imported" in err

    ckpt = save_checkpoint(
        tmp_path / "y.safetensors", Tagger(), architecture=f"{__name__}:Tagger", model_config={}
    )
    assert main(["export", str(ckpt), "--all", "-o", str(tmp_path / "o")]) == 2
    assert "pass --validation FILE.npz" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "override,message",
    [
        (
            {"mask": np.ones((32, 5), np.float32)},
            r"mask has shape \[32, 5\]; input 'mask' takes samples of shape \[4\]",
        ),
        (
            {"mask": np.ones((32, 4), np.float32), "extra": np.ones(32)},
            r"arrays \['extra'\] feed no model input",
        ),
        (
            {"features": np.ones((32, 6), np.float32), "mask": np.ones((30, 4), np.float32)},
            "mask has 30 samples",
        ),
    ],
)
def test_npz_that_does_not_match_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: dict, message: str
) -> None:
    path, _ = _program(tmp_path)
    val = _val(tmp_path, **override)
    assert main(["export", str(path), "--all", "--validation", str(val), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "validation file" in err and str(val) in err
    import re

    assert re.search(message, err), err


@pytest.mark.target("executorch")
def test_data_dependent_shape_gets_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_checkpoint(
        tmp_path / "dd.safetensors",
        DataDependent(),
        architecture=f"{__name__}:DataDependent",
        model_config={},
    )
    val = tmp_path / "dd.npz"
    mask = (np.arange(5)[None, :] < np.arange(1, 9)[:, None]).astype(np.float32)  # 1..5 real positions
    np.savez(val, x=np.ones((8, 5), np.float32), mask=mask)
    out = tmp_path / "out"
    argv = ["export", str(ckpt), "-t", "executorch", "-p", "fp32", "--validation", str(val), "-o", str(out)]
    assert main(argv) == 1
    text = capsys.readouterr().out
    assert "hint: the model has a data-dependent shape" in text and "static shapes" in text
    summary = json.loads((out / "summary.json").read_text())
    assert any("data-dependent" in w for w in summary["warnings"])
    assert (summary["results"][0]["status"], summary["results"][0]["stage"]) == ("export_failed", "export")


@pytest.mark.slow  # a subprocess: ~1 min on the shared 2 cores
@pytest.mark.target("onnx-web")
def test_sigterm_midway_leaves_no_staging_folder(tmp_path: Path) -> None:
    """A killed export (a CI timeout sends SIGTERM) removes its staging folder; the previous export stays."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path, _ = _program(tmp_path)
    out = tmp_path / "out"
    # Two targets: the staging folder exists from the start, and the TFLite conversion after the ONNX one
    # keeps the export running for seconds, so a loaded machine cannot finish it between seeing the
    # folder and sending the signal.
    argv = [
        sys.executable,
        "-m",
        "kdmobile.cli",
        "export",
        str(path),
        "-t",
        "onnx-web",
        "-t",
        "tflite",
        "-p",
        "fp32",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out.mkdir()
    (out / "summary.json").write_text('{"schema_version": 1, "results": []}\n')  # a previous export
    before = (out / "summary.json").read_bytes()
    proc = subprocess.Popen([*argv, "-o", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(".out.*.staging.tmp")):
        assert proc.poll() is None and time.monotonic() < deadline, "the export ended before it was stopped"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    assert (out / "summary.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2", "out"]


@pytest.mark.target("onnx-web")
def test_fidelity_only_judges_given_inputs_by_fidelity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--fidelity-only: the --validation inputs are used, but as stand-ins (no top-1 judgement, recorded);
    without --validation it is a usage error, not a silent no-op."""
    path, _ = _program(tmp_path)
    val, out = _val(tmp_path), tmp_path / "out"
    argv = ["export", str(path), "-t", "onnx-web", "-p", "fp32", "--validation", str(val), "--fidelity-only"]
    assert main([*argv, "-o", str(out)]) == 0
    assert "WARNING: no validation data" not in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    v = summary["validation"]
    assert (v["fidelity_only"], v["synthetic"], v["real_split"]) == (True, False, None)
    assert summary["results"][0]["tolerance"]["min_top1_agreement"] == 0.0  # recorded as applied
    assert main(["export", str(path), "-t", "onnx-web", "--fidelity-only", "-o", str(tmp_path / "o2")]) == 2
    captured = capsys.readouterr()
    assert "pass --validation FILE.npz too" in captured.out + captured.err
    assert not (tmp_path / "o2").exists()
