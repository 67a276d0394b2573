"""A bad checkpoint is exit 2 with a message that names the file and says what to do, never a
traceback; a checkpoint without a sha256 loads only when the caller trusts it.

    .venv/bin/python -m pytest tests/test_bad_inputs_checkpoint.py -q

The checkpoint cases run the real ``kdmobile export`` (``kdmobile.cli.main``) on a tiny MNIST MLP whose
``.json`` was edited the way a user (or a half-finished copy) would; ``--trust-unverified`` then exports
it for real (onnxruntime) and benches the eager student in a real bench worker process.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from kdmobile.checkpoint import load_checkpoint, save_checkpoint
from kdmobile.cli import main
from kdmobile.errors import UsageError


@pytest.fixture
def good(tmp_path: Path) -> Path:
    from kdmobile.tasks.mnist.model import MLP

    torch.manual_seed(0)
    return save_checkpoint(
        tmp_path / "good.safetensors",
        MLP(hidden=[8]),
        architecture="mlp",
        model_config={"hidden": [8]},
        metadata={"task": "mnist"},
    )


def _variant(good: Path, name: str, edit: Callable[[dict], None] | str) -> Path:
    """A copy of ``good`` whose metadata is edited (a callable) or replaced by raw text (a str)."""
    weights = good.with_name(f"{name}.safetensors")
    shutil.copyfile(good, weights)
    meta = json.loads(good.with_suffix(".json").read_text())
    if isinstance(edit, str):
        text = edit
    else:
        edit(meta)
        text = json.dumps(meta)
    weights.with_suffix(".json").write_text(text)
    return weights


def _export(capsys: pytest.CaptureFixture[str], ckpt: Path, out: Path, *extra: str) -> tuple[int, str]:
    rc = main(["export", str(ckpt), "-t", "onnx-web", "-p", "fp32", "-o", str(out),
               "--heldout", "16", "--random", "8", "--calibration", "8", *extra])  # fmt: skip
    return rc, capsys.readouterr().err


BAD_METADATA = {
    "not-json": ('{"architecture": "mlp",', ["is not valid JSON", "line 1 column 24"]),
    "not-an-object": ("[1, 2]", ["must hold a JSON object, not a list"]),
    "no-architecture": (
        lambda m: m.pop("architecture"),
        ['has no "architecture"', "valid: email-student, mlp"],
    ),
    "misnamed-architecture": (
        lambda m: m.update(architecture="MLP"),
        ["unknown architecture 'MLP'", "valid: email-student, mlp", 'set "architecture"'],
    ),
    "config-not-object": (
        lambda m: m.update(model_config=[8]),
        ['"model_config" must be a JSON object', "not a list"],
    ),
    "config-unknown-keys": (
        lambda m: m["model_config"].update(hiden=[8], widht=3),
        ["key(s) 'hiden', 'widht' that architecture 'mlp' does not take"],
    ),
    "config-bad-value": (lambda m: m["model_config"].update(hidden="wide"), ['"model_config" does not fit']),
    "shape-mismatch": (
        lambda m: m["model_config"].update(hidden=[16]),
        ["net.0.weight: [8, 784] in the file, [16, 784] in the model", "does not fit architecture 'mlp'"],
    ),
    "no-sha256": (
        lambda m: m.pop("sha256"),
        ["has no sha256 of no-sha256.safetensors", "--trust-unverified"],
    ),
    "bad-sha256": (lambda m: m.update(sha256="abc"), ["no valid sha256 (got 'abc')", "--trust-unverified"]),
    "wrong-sha256": (
        lambda m: m.update(sha256="0" * 64),
        ["does not match the sha256", "corrupt or replaced"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_bad_checkpoint_metadata_is_exit_2_naming_the_file(good, tmp_path, capsys, case):
    edit, phrases = BAD_METADATA[case]
    ckpt = _variant(good, case, edit)
    before = {p: p.read_bytes() for p in (ckpt, ckpt.with_suffix(".json"))}
    rc, err = _export(capsys, ckpt, tmp_path / "out")
    assert rc == 2, err
    assert err.startswith("kdmobile export: error: checkpoint "), err
    assert str(ckpt.with_suffix(".json")) in err or (str(ckpt) in err and f"{case}.json" in err), err
    for phrase in phrases:
        assert phrase in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written
    assert all(p.read_bytes() == data for p, data in before.items())


def test_trust_unverified_loads_a_checkpoint_without_sha256_but_never_a_wrong_one(good):
    unverified = _variant(good, "unverified", lambda m: m.pop("sha256"))
    with pytest.raises(UsageError, match="has no sha256"):
        load_checkpoint(unverified)
    model, meta = load_checkpoint(unverified, trust_unverified=True)
    reference, _ = load_checkpoint(good)
    for (k, a), b in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    wrong = _variant(good, "wrong", lambda m: m.update(sha256="f" * 64))
    with pytest.raises(UsageError, match="corrupt or replaced"):
        load_checkpoint(wrong, trust_unverified=True)


@pytest.mark.target("onnx-web")
def test_export_trust_unverified_flag_exports_it(good, tmp_path, capsys):
    ckpt = _variant(good, "unverified", lambda m: m.pop("sha256"))
    rc, err = _export(capsys, ckpt, tmp_path / "out", "--trust-unverified")
    assert rc == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["status"] for r in summary["results"]] == ["ok"]


def test_bench_refuses_an_unverified_student_unless_trusted(tmp_path, capsys):
    from kdmobile.harness import selftest

    student = selftest.train(tmp_path / "st", epochs=1, with_teacher=False)["student"]
    meta = json.loads(student.with_suffix(".json").read_text())
    del meta["sha256"]
    student.with_suffix(".json").write_text(json.dumps(meta))
    artifacts = tmp_path / "export"  # an export with no artifacts: the bench measures the eager student
    artifacts.mkdir()
    (artifacts / "summary.json").write_text(json.dumps({"schema_version": 1, "checkpoint": str(student)}))
    args = ["bench", str(artifacts), "--task", "selftest", "-o", str(tmp_path / "report"), "--no-browser",
            "--min-seconds", "0", "--min-runs", "3"]  # fmt: skip

    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"checkpoint metadata {student.with_suffix('.json')} has no sha256" in err
    assert "--trust-unverified" in err and not (tmp_path / "report").exists()

    assert main([*args, "--trust-unverified"]) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["student"]["status"] == "ok", report["student"]  # loaded and timed in a worker process
