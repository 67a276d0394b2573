"""Bench and check a user's own model, without a task: a tiny CNN exported to ExecuTorch, LiteRT and ONNX
with the existing runner, an evaluation ``.npz``, a ``.pt2`` teacher; and damaged artifacts refused.

Every command runs the real CLI (``python -m kdmobile.cli``) in a subprocess, on real runtimes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytestmark = [pytest.mark.slow, pytest.mark.target("executorch"), pytest.mark.target("tflite")]
ROOT = Path(__file__).resolve().parents[1]
FAST = ["--min-seconds", "0.2", "--min-runs", "30", "--no-browser", "--server-batch", "8"]


class TinyCNN(nn.Module):
    """``x: float32[B, 1, 12, 12]`` → ``logits [B, classes]`` (or a feature map without the head)."""

    def __init__(self, width: int = 4, classes: int = 5, head: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.head = nn.Linear(width * 36, classes) if head else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.head(h.flatten(1)) if self.head is not None else h


def export_tiny(model: nn.Module, out: Path, eager_file: Path, targets: tuple[str, ...]) -> dict:
    """Export ``model`` at fp32 with ``kdmobile.export`` (from memory: the summary names no checkpoint) and
    save it as a ``.pt2`` program (``eager_file``), the eager model a user passes with ``--student``."""
    import kdmobile

    torch.manual_seed(0)
    model.eval()
    x = np.random.default_rng(0).random((24, 1, 12, 12), dtype=np.float32)
    torch.export.save(torch.export.export(model, (torch.from_numpy(x[:1]),)), str(eager_file))
    res = kdmobile.export(
        model, (torch.from_numpy(x[:1]),), targets=list(targets), precisions=["fp32"], calibration=(x[:8],),
        validation=(x[8:],), out_dir=out,
    )  # fmt: skip
    return res.summary


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "kdmobile.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    work = tmp_path_factory.mktemp("byom")
    torch.manual_seed(0)
    student = TinyCNN()
    summary = export_tiny(
        student, work / "export", work / "student.pt2", ("executorch", "tflite", "onnx-web")
    )
    assert summary["ok"], [r["reason"] for r in summary["results"]]
    torch.manual_seed(1)
    teacher = TinyCNN(width=16).eval()
    x = np.random.default_rng(5).random((40, 1, 12, 12), dtype=np.float32)
    torch.export.save(torch.export.export(teacher, (torch.from_numpy(x[:1]),)), str(work / "teacher.pt2"))
    with torch.inference_mode():
        labels = teacher(torch.from_numpy(x)).argmax(1).numpy()
    np.savez(work / "eval.npz", x=x, labels=labels)
    return work


def _entries(report: dict) -> dict[str, dict]:
    return {e["id"]: e for e in [report["teacher"], report["student"], *report["artifacts"]] if e}


def test_npz_and_pt2_teacher_end_to_end_then_baseline_and_check(cnn):
    r = cli(
        "bench", "export", "--data", "eval.npz", "--student", "student.pt2", "--teacher", "teacher.pt2",
        "-o", "report", *FAST, cwd=cnn,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((cnn / "report" / "report.json").read_text())
    entries = _entries(report)
    teacher, student = entries["teacher"], entries["student"]
    assert teacher["status"] == "ok" and teacher["top1"] == 1.0  # the labels are the teacher's own top-1
    assert student["status"] == "ok" and student["path"].endswith("student.pt2")
    arts = [e for e in report["artifacts"] if e["kind"] == "artifact"]
    assert {e["target"] for e in arts} == {"executorch", "tflite", "onnx-web"}
    for e in arts:
        assert e["status"] == "ok", e["reason"]
        assert e["details"]["sha256"] and e["n_examples"] == 40
        # fp32 artifacts of the same program: same predictions as the eager model, close outputs.
        assert e["top1"] == student["top1"] and e["teacher_agreement"] == student["teacher_agreement"]
        assert e["retention"] == pytest.approx(e["top1"] / teacher["top1"])
        fid = e["details"]["fidelity"]
        assert fid["vs"] == "the eager model" and fid["sqnr_db"] > 60 and fid["max_abs"] < 1e-3, fid
        assert len(e["ratio_samples"]) >= 30
    assert report["task"] == "npz" and report["data"] == "eval.npz"
    assert report["export_summary"]["verified_artifacts"] == 3
    r = cli("baseline", "update", "report", "-o", "baseline.json", cwd=cnn)
    assert r.returncode == 0, r.stderr
    r = cli("check", "report", "--baseline", "baseline.json", cwd=cnn)
    assert r.returncode == 0, r.stdout + r.stderr


def test_without_the_eager_model_the_fp32_artifact_is_the_reference(cnn, tmp_path):
    shutil.copytree(cnn / "export", tmp_path / "export")
    shutil.copy(cnn / "eval.npz", tmp_path / "eval.npz")
    # An export from memory names no eager model; without --student the fp32 artifact is the reference.
    # The teacher here is an exported artifact (the ONNX one: the same model, so agreement is total).
    teacher = "export/onnx-web/model_fp32.onnx"
    r = cli(
        "bench", "export", "--data", "eval.npz", "--teacher", teacher, "-o", "report", *FAST, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    ref = report["reference"]["id"]
    assert ref == "executorch/fp32/executorch (XNNPACK)", report["reference"]
    assert (
        report["student"]["status"] == "unavailable" and "names no eager model" in report["student"]["reason"]
    )
    teacher_entry = report["teacher"]
    assert teacher_entry["status"] == "ok" and teacher_entry["flavour"] == "model_fp32.onnx (artifact)"
    assert teacher_entry["runtime"] == "onnxruntime (Python, CPU)"
    for e in [e for e in report["artifacts"] if e["kind"] == "artifact"]:
        assert e["status"] == "ok" and e["top1"] is not None and e["teacher_agreement"] == 1.0
        if e["id"] != ref:
            assert e["details"]["fidelity"]["vs"].startswith(ref) and e["details"]["fidelity"]["sqnr_db"] > 60


def test_a_feature_map_model_is_judged_by_fidelity(tmp_path):
    torch.manual_seed(2)
    export_tiny(TinyCNN(head=False), tmp_path / "export", tmp_path / "fm.pt2", ("onnx-web",))
    x = np.random.default_rng(3).random((10, 1, 12, 12), dtype=np.float32)
    np.savez(tmp_path / "eval.npz", x0=x)
    r = cli(
        "bench", "export", "--data", "eval.npz", "--student", "fm.pt2", "-o", "report", *FAST, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    (e,) = [e for e in report["artifacts"] if e["kind"] == "artifact"]
    assert e["status"] == "ok" and e["top1"] is None and e["n_examples"] is None
    assert e["details"]["fidelity"]["sqnr_db"] > 60 and e["details"]["fidelity"]["n"] == 10


def test_an_eager_model_that_is_not_the_exported_one_is_refused(cnn):
    r = cli("bench", "export", "--data", "eval.npz", "--student", "teacher.pt2", "-o", "r2", *FAST, cwd=cnn)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "teacher.pt2: not the model the artifacts" in r.stderr and "weights_sha256" in r.stderr
    assert not (cnn / "r2").exists()


def _flip_middle(path: Path, n: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2 - n // 2
    assert len(data) > n, f"{path} is smaller than {n} bytes"
    data[mid : mid + n] = bytes(b ^ 0xFF for b in data[mid : mid + n])
    path.write_bytes(bytes(data))


def test_damaged_artifacts_are_refused_not_measured(cnn, tmp_path):
    shutil.copytree(cnn / "export", tmp_path / "export")
    shutil.copy(cnn / "student.pt2", tmp_path / "student.pt2")
    shutil.copy(cnn / "eval.npz", tmp_path / "eval.npz")
    _flip_middle(tmp_path / "export" / "tflite" / "model_fp32.tflite")
    _flip_middle(tmp_path / "export" / "executorch" / "model_fp32.pte")
    r = cli(
        "bench",
        "export",
        "--data",
        "eval.npz",
        "--student",
        "student.pt2",
        "-o",
        "report",
        *FAST,
        cwd=tmp_path,
    )
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    assert (
        "failed here" in r.stdout and "model_fp32.tflite" in (tmp_path / "report" / "report.md").read_text()
    )
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    entries = {e["target"]: e for e in report["artifacts"] if e["kind"] == "artifact"}
    for t in ("tflite", "executorch"):
        e = entries[t]
        assert e["status"] == "corrupt" and e["latency_ms"] is None, e
        assert "sha256" in e["reason"] and "re-export" in e["reason"]
    assert entries["onnx-web"]["status"] == "ok"
    assert sorted(report["failures"]) == sorted(entries[t]["id"] for t in ("tflite", "executorch"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_killed_bench_leaves_no_temp_folder_or_worker(cnn, tmp_path, sig):
    import psutil

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)}
    args = ["bench", "export", "--data", "eval.npz", "-o", str(tmp_path / "report"), "--no-browser"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdmobile.cli", *args, "--min-seconds", "60"],
        cwd=cnn,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a test run started in the background (`make test &`) ignores SIGINT, and the
        # bench would inherit that and never see the Ctrl-C this test sends.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    workers: list[psutil.Process] = []
    deadline = time.monotonic() + 120
    while not workers and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        workers = [
            p
            for p in psutil.Process(proc.pid).children(recursive=True)
            if "kdmobile.harness.worker" in " ".join(p.cmdline())
        ]
    assert workers, "the bench never started measuring"
    assert list(tmp.glob("kdmobile-bench-*")), "no temporary folder while measuring"
    time.sleep(1.0)  # inside the measurement
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, (proc.returncode, err[-2000:])
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"worker processes left running: {alive}"
    assert not list(tmp.iterdir()), f"left behind: {list(tmp.iterdir())}"
    assert not (tmp_path / "report").exists()


@pytest.mark.target("onnx-web")
def test_bench_a_mnist_student_with_the_registered_task(tmp_path):
    """``kdmobile bench DIR --task mnist``: the 10,000 test digits, no teacher unless given."""
    from kdmobile.checkpoint import save_checkpoint
    from kdmobile.export import export_checkpoint
    from kdmobile.tasks.mnist.model import MLP

    torch.manual_seed(0)
    cfg = {"in_dim": 784, "hidden": [16], "num_classes": 10}
    ckpt = save_checkpoint(
        tmp_path / "mlp.safetensors",
        MLP(**cfg),
        architecture="mlp",
        model_config=cfg,
        metadata={"task": "mnist"},
    )
    export_checkpoint(ckpt, tmp_path / "export", targets=["onnx-web"], precisions=["fp32"], n_heldout=32)
    r = cli("bench", "export", "--task", "mnist", "--data", "test", "-o", "report", *FAST, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["task"] == "mnist" and report["n_examples"] == 10000
    assert report["teacher"]["status"] == "unavailable" and "--teacher" in report["teacher"]["reason"]
    (e,) = [e for e in report["artifacts"] if e["kind"] == "artifact"]
    student = report["student"]
    # An untrained MLP: about chance, and the fp32 artifact predicts exactly what the eager model does.
    assert e["status"] == "ok" and 0.02 < e["top1"] < 0.3 and e["top1"] == student["top1"]
    assert e["details"]["fidelity"]["max_abs"] < 1e-4


@pytest.mark.target("onnx-web")
def test_an_export_that_records_its_pt2_source_is_benched_against_it(tmp_path):
    """``kdmobile.export(..., checkpoint=model.pt2)`` names the eager model in the summary: no --student
    needed; the same path holding another program is refused by its sha256."""
    import kdmobile

    torch.manual_seed(3)
    model = TinyCNN().eval()
    x = np.random.default_rng(4).random((12, 1, 12, 12), dtype=np.float32)
    ex = (torch.from_numpy(x[:1]),)
    torch.export.save(torch.export.export(model, ex), str(tmp_path / "model.pt2"))
    kdmobile.export(
        model, ex, targets=["onnx-web"], precisions=["fp32"], validation=(x,), out_dir=tmp_path / "export",
        checkpoint=tmp_path / "model.pt2",
    )  # fmt: skip
    np.savez(tmp_path / "eval.npz", x=x)
    r = cli("bench", "export", "--data", "eval.npz", "-o", "report", *FAST, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["student"]["status"] == "ok" and report["reference"]["id"] == "student"
    torch.export.save(torch.export.export(TinyCNN(width=6).eval(), ex), str(tmp_path / "model.pt2"))
    r = cli("bench", "export", "--data", "eval.npz", "-o", "report2", *FAST, cwd=tmp_path)
    assert r.returncode == 2 and "model.pt2: not the model the artifacts" in r.stderr, r.stderr[-2000:]
