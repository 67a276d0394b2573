"""Every bad input to ``kdmobile bench``, ``check`` and ``baseline update`` exits 2 with a message naming the
file and what to do, before anything is measured; each case runs the real CLI in a subprocess.

The export folders here are made by hand (a few bytes stand in for an artifact, with a sidecar holding
their real sha256): every case is refused before a runtime would load them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdmobile.harness.stats import pack_bits

ROOT = Path(__file__).resolve().parents[1]
CKPT_SHA = "a" * 64


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "kdmobile.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def refused(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr[-2000:])
    for n in needles:
        assert n in r.stderr, (n, r.stderr[-2000:])


def make_folder(root: Path, **summary_changes) -> Path:
    """``root/export`` with one fake onnx-web artifact, its sidecar and a summary (then ``summary_changes``)."""
    d = root / "export"
    (d / "onnx-web").mkdir(parents=True)
    blob = b"not really an onnx model" * 10
    (d / "onnx-web" / "model_fp32.onnx").write_bytes(blob)
    side = {"sha256": hashlib.sha256(blob).hexdigest(), "checkpoint_sha256": CKPT_SHA, "target": "onnx-web"}
    (d / "onnx-web" / "model_fp32.onnx.json").write_text(json.dumps(side))
    summary = {
        "schema_version": 1,
        "checkpoint": "student.safetensors",
        "checkpoint_sha256": CKPT_SHA,
        "task": "email",
        "validation": {"input_specs": [{"name": "ids", "shape": [1, 8], "dtype": "int64"}]},
        "results": [
            {
                "target": "onnx-web",
                "precision": "fp32",
                "path": "onnx-web/model_fp32.onnx",
                "metadata": "onnx-web/model_fp32.onnx.json",
                "status": "ok",
            }
        ],
        "bundles": {},
    }
    summary.update(summary_changes)
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def bench(cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("bench", "export", "--no-browser", "-o", "report", *extra, cwd=cwd)


def test_summary_that_is_not_json(tmp_path):
    d = make_folder(tmp_path)
    (d / "summary.json").write_text('{"schema_version": 1, "results": [')
    refused(bench(tmp_path), "summary.json", "not valid JSON", "re-export")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"results": {"onnx-web": "x"}}, "'results' must be a list"),
        ({"results": [{"target": 3, "precision": "fp32", "status": "ok"}]}, "results[0].target"),
        ({"schema_version": 7}, "schema_version 7"),
        ({"checkpoint_sha256": 12}, "'checkpoint_sha256' must be a string"),
    ],
)
def test_summary_of_the_wrong_schema(tmp_path, change, needle):
    make_folder(tmp_path, **change)
    refused(bench(tmp_path), "summary.json", needle)


@pytest.mark.parametrize("path", ["../outside.onnx", "/etc/hostname", "onnx-web/../../outside.onnx"])
def test_paths_outside_the_export_folder(tmp_path, path):
    (tmp_path / "outside.onnx").write_bytes(b"x")
    summary = json.loads((make_folder(tmp_path) / "summary.json").read_text())
    summary["results"][0]["path"] = path
    (tmp_path / "export" / "summary.json").write_text(json.dumps(summary))
    refused(bench(tmp_path), "summary.json", repr(path), "outside the export folder")


def test_artifacts_of_another_checkpoint(tmp_path):
    d = make_folder(tmp_path)
    side = json.loads((d / "onnx-web" / "model_fp32.onnx.json").read_text())
    side["checkpoint_sha256"] = "b" * 64  # re-exported from a retrained student into the same folder
    (d / "onnx-web" / "model_fp32.onnx.json").write_text(json.dumps(side))
    refused(bench(tmp_path), "model_fp32.onnx.json", "another checkpoint", "mixes exports", "re-export")


def test_a_checkpoint_that_is_not_the_exported_one(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "student.safetensors").write_bytes(b"retrained weights")
    refused(bench(tmp_path), "student.safetensors", "not the model the artifacts", "--student")


def test_a_target_the_folder_does_not_hold(tmp_path):
    make_folder(tmp_path)
    refused(bench(tmp_path, "--target", "tflite"), "--target tflite", "summary.json", "onnx-web")


def test_output_that_is_an_existing_file_is_refused_before_measuring(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "report").write_text("my notes\n")
    refused(bench(tmp_path), "-o report", "existing file")
    assert (tmp_path / "report").read_text() == "my notes\n"


def test_npz_data_that_does_not_fit_the_model(tmp_path):
    import numpy as np

    make_folder(tmp_path)
    np.savez(tmp_path / "eval.npz", pixels=np.zeros((3, 8), np.int64))
    refused(bench(tmp_path, "--data", "eval.npz"), "eval.npz", "ids")


# -- check and baseline update -------------------------------------------------------------------------


def _entry(id_, target, **kw):
    e = {
        "id": id_,
        "kind": "artifact",
        "target": target,
        "precision": "fp32",
        "runtime": "rt",
        "status": "ok",
        "reason": None,
        "size_bytes": 1000,
        "latency_ms": {"p50": 1.0, "p90": 1.1, "p99": 1.2, "mean": 1.0, "std": 0.1},
        "ratio_samples": [1.0 + 0.01 * (i % 5) for i in range(60)],
        "top1": 0.9,
        "recall_at_3": 0.95,
        # what the paired accuracy test reads: 100 examples, the first 90 (95) right
        "outcomes": {
            "n": 100,
            "eval_fingerprint": None,
            "top1": pack_bits(np.arange(100) < 90),
            "recall_at_3": pack_bits(np.arange(100) < 95),
            "top1_class": [0] * 100,
        },
        "details": {},
    }
    e.update(kw)
    return e


def _report():
    return {
        "schema": "kdmobile.report",
        "schema_version": 1,
        "task": "npz",
        "machine": {"machine_class": "test-class", "cores": 2},
        "versions": {"python": "3.11"},
        "teacher": None,
        "student": None,
        "artifacts": [_entry("onnx-web/fp32/rt", "onnx-web"), _entry("tflite/fp32/rt", "tflite")],
    }


@pytest.fixture
def files(tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.json").write_text(json.dumps(_report()))
    r = cli("baseline", "update", "report", "-o", "baseline.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli("check", "report", "--baseline", "baseline.json", cwd=tmp_path)
    assert r.returncode == 0, (
        r.stdout + r.stderr
    )  # the unspoilt pair passes: each case below spoils one thing
    return tmp_path


def test_report_that_is_not_json(files):
    (files / "report" / "report.json").write_text("{not json")
    refused(cli("check", "report", "--baseline", "baseline.json", cwd=files), "report.json", "not valid JSON")


def _spoil(files, fn):
    b = json.loads((files / "baseline.json").read_text())
    fn(b)
    (files / "baseline.json").write_text(json.dumps(b))
    return cli("check", "report", "--baseline", "baseline.json", cwd=files)


@pytest.mark.parametrize(
    ("spoil", "needles"),
    [
        (lambda b: b["artifacts"][0].update(top1="0.9"), ("top1 must be a finite number",)),
        (lambda b: b["artifacts"][0].update(size_bytes=[1]), ("size_bytes must be a finite number",)),
        (lambda b: b["artifacts"][0].update(status=1), ("status must be a string",)),
        (lambda b: b.update(artifacts={"a": 1}), ("'artifacts' must be a list",)),
        (lambda b: b["artifacts"][0].update(top1=float("nan")), ("top1 must be a finite number", "got nan")),
        (lambda b: b["artifacts"][0]["latency_ms"].update(p50=None), ("latency_ms must hold finite",)),
        (lambda b: b["artifacts"][1].update(top1=None), ("tflite/fp32/rt: top1 is null",)),
        (lambda b: b["artifacts"][1].update(ratio_samples=[]), ("tflite/fp32/rt", "no ratio_samples")),
        (lambda b: b["artifacts"][1].pop("ratio_samples"), ("tflite/fp32/rt", "no ratio_samples")),
        (
            lambda b: b["artifacts"].append(copy.deepcopy(b["artifacts"][0])),
            ("'onnx-web/fp32/rt' appears twice",),
        ),
        (lambda b: b.update(artifacts=[]), ("no artifact entries",)),
    ],
)
def test_a_spoilt_baseline(files, spoil, needles):
    refused(_spoil(files, spoil), "baseline.json", *needles)


def test_baseline_from_a_report_with_no_artifacts(files):
    report = _report()
    report["artifacts"] = []
    (files / "report" / "report.json").write_text(json.dumps(report))
    refused(cli("baseline", "update", "report", "-o", "b2.json", cwd=files), "report", "no artifact entries")
    assert not (files / "b2.json").exists()


def test_baseline_output_that_is_a_directory(files):
    (files / "somedir").mkdir()
    refused(cli("baseline", "update", "report", "-o", "somedir", cwd=files), "-o somedir", "is a directory")


def test_check_fails_on_an_artifact_the_bench_found_damaged(files):
    report = _report()
    report["artifacts"].append(
        _entry(
            "executorch/fp32/rt",
            "executorch",
            status="corrupt",
            reason="model_fp32.pte is damaged",
            latency_ms=None,
        )
    )
    (files / "report" / "report.json").write_text(json.dumps(report))
    r = cli("check", "report", "--baseline", "baseline.json", cwd=files)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "executorch/fp32/rt damaged" in r.stderr and "model_fp32.pte is damaged" in r.stdout


def test_check_refuses_a_report_whose_artifacts_changed_since_the_bench(files):
    (files / "model.onnx").write_bytes(b"benched")
    report = _report()
    report["artifacts"][0].update(
        path="model.onnx", details={"sha256": hashlib.sha256(b"benched").hexdigest()}
    )
    (files / "report" / "report.json").write_text(json.dumps(report))
    assert cli("check", "report", "--baseline", "baseline.json", cwd=files).returncode == 0
    (files / "model.onnx").write_bytes(b"swapped after the bench")
    refused(
        cli("check", "report", "--baseline", "baseline.json", cwd=files),
        "model.onnx changed since it was benched",
    )
