"""Round trip of every registered export target on the model families the tasks use (email student, MLP).

    .venv/bin/python -m pytest -q tests/test_export_roundtrip.py

One session fixture exports each family once to every target (the slow part, ~1 min); the tests then load
each artifact *again* in its real runtime and compare it with the eager PyTorch model, computing the
statistics here, independently of ``kdmobile.export.validate`` (MLP: MNIST test rows the exporter never
saw; email: real samples).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kdmobile.checkpoint import save_checkpoint
from kdmobile.export import discover
from kdmobile.export.base import RuntimeUnavailable
from kdmobile.tasks.email.model import EmailStudent
from kdmobile.tasks.email.tokenizer import HashTokenizer, TokenizerConfig
from kdmobile.tasks.mnist.model import MLP

# The session fixture exports two models to every target (~1 min on 2 cores): `make test-fast` skips it.
pytestmark = pytest.mark.slow

FAMILIES = ("email", "mlp")
PRECISIONS = ("fp32", "int8")
TARGET_NAMES = discover().names()
EMAIL_CFG = TokenizerConfig(num_buckets=2048, max_len=32)
# Independent bars for the fresh-input check: an fp32 artifact matches eager to float rounding; an int8
# artifact keeps most decisions.
FP32_ATOL = 2e-3
INT8_MIN_AGREEMENT = 0.9


N = {"n_heldout": 48, "n_random": 16, "n_calibration": 32}


def _train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int) -> None:
    """A few Adam steps: int8 agreement is only meaningful on a model with real decision margins."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _email_inputs(model: torch.nn.Module, meta: dict) -> np.ndarray:
    """The inputs the exporter will validate on (real split + random), rebuilt the same way it does."""
    from kdmobile.export.specs import model_spec_for

    spec = model_spec_for(model, meta, **N)
    return np.concatenate([v[0] for v in spec.validation.values()] + [spec.calibration[0]])


def _email_checkpoint(root: Path) -> tuple[Path, np.ndarray]:
    torch.manual_seed(0)
    config = {
        "num_buckets": EMAIL_CFG.num_buckets,
        "dim": 32,
        "hidden": 64,
        "num_intents": 12,
        "dropout": 0.0,
        "gated": True,  # the shipped student's reading gate (cumsum, exp) must convert everywhere
    }
    model = EmailStudent(**config).eval()
    tok = json.loads(HashTokenizer(EMAIL_CFG).to_json())
    meta = {"task": "email", "tokenizer": tok, "intents": [f"intent_{i}" for i in range(12)]}
    # Until the email pipeline's quick_student exists: fit arbitrary labels on the very inputs the
    # exporter validates on, so the student is as decisive there as a trained one.
    x = _email_inputs(model, meta)
    _train(model, torch.from_numpy(x), torch.arange(len(x)) % 12, steps=150, batch=64)
    path = save_checkpoint(
        root / "email" / "student.safetensors",
        model,
        architecture="email-student",
        model_config=config,
        metadata=meta,
    )
    return path, x[:24]


def _mlp_checkpoint(root: Path) -> tuple[Path, np.ndarray]:
    from kdmobile.tasks.mnist.data import split

    torch.manual_seed(1)
    config = {"hidden": [64, 64], "num_classes": 10}
    model = MLP(**config).eval()
    x, y = split("train", subset=5000)
    _train(model, x, y, steps=300, batch=64)
    path = save_checkpoint(
        root / "mlp" / "student.safetensors",
        model,
        architecture="mlp",
        model_config=config,
        metadata={"task": "mnist"},
    )
    return path, split("test")[0][-24:].numpy()


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """family → {"checkpoint", "out", "summary"}; every target, fp32 + int8, bundles for the email student."""
    from kdmobile.export.runner import export_checkpoint

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("export")
    out = {}
    for family, make in (("email", _email_checkpoint), ("mlp", _mlp_checkpoint)):
        ckpt, fresh = make(root)
        dest = root / f"out-{family}"
        summary = export_checkpoint(
            ckpt, dest, all_targets=True, precisions=list(PRECISIONS), bundle=family == "email", **N
        )
        out[family] = {"checkpoint": ckpt, "out": dest, "summary": summary, "inputs": fresh}
    return out


def _row(exported: dict, family: str, target: str, precision: str) -> dict:
    rows = [
        r
        for r in exported[family]["summary"]["results"]
        if r["target"] == target and r["precision"] == precision
    ]
    assert len(rows) == 1, f"expected one {target}/{precision} result, got {rows}"
    return rows[0]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("target", [pytest.param(n, marks=pytest.mark.target(n)) for n in TARGET_NAMES])
def test_round_trip(exported: dict, target: str, family: str, precision: str) -> None:
    from kdmobile.checkpoint import load_checkpoint

    t = discover().get(target)()
    row = _row(exported, family, target, precision)
    out_dir = exported[family]["out"]
    ok, reason = t.runtime_availability()
    assert row["path"], f"{target}/{precision} wrote nothing: {row['reason']}"
    path = out_dir / row["path"]
    assert path.exists()
    side = json.loads((out_dir / row["metadata"]).read_text())
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            digest.update(str(f.relative_to(path)).encode())
        digest.update(f.read_bytes())
    assert side["sha256"] == digest.hexdigest()
    assert side["precision"] == precision and side["target"] == target
    assert (
        side["checkpoint_sha256"] == hashlib.sha256(exported[family]["checkpoint"].read_bytes()).hexdigest()
    )
    assert side["tool_versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    if not ok:
        # Core ML off macOS: converted and spec-checked, not a failure and not a pass of prediction.
        assert row["status"] == "conversion_validated", row
        assert row["error_stats"] is None
        assert row["reason"] == reason
        with pytest.raises(RuntimeUnavailable):
            t.load(path)
        return
    assert row["status"] == "ok", row
    stats = row["error_stats"]
    assert stats["n"] == sum(exported[family]["summary"]["validation"]["splits"].values())
    model, _ = load_checkpoint(exported[family]["checkpoint"])
    x = exported[family]["inputs"]
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    runtime = t.load(path)
    assert [s.shape for s in runtime.inputs] == [(1, *x.shape[1:])]
    got = np.concatenate([runtime(x[k : k + 1])[0] for k in range(len(x))]).astype(np.float32)
    assert got.shape == ref.shape
    agreement = float(np.mean(got.argmax(1) == ref.argmax(1)))
    if precision == "fp32":
        np.testing.assert_allclose(got, ref, atol=FP32_ATOL, rtol=1e-3)
        assert stats["max_abs"] <= FP32_ATOL * (1 + np.abs(ref).max())
    else:
        assert agreement >= INT8_MIN_AGREEMENT, (target, family, agreement)
        assert not np.allclose(got, ref, atol=1e-7), (
            "int8 artifact is bit-identical to fp32: was it quantized?"
        )


def test_every_registered_target_has_a_round_trip(request: pytest.FixtureRequest) -> None:
    """Fails when a target is registered but no round-trip test was collected for it."""
    collected = {
        item.callspec.params.get("target")
        for item in request.session.items
        if item.originalname == "test_round_trip"
    }
    names = discover().names()
    assert set(names) <= collected, f"targets without a round-trip test: {sorted(set(names) - collected)}"
    assert {"executorch", "coreml", "tflite", "onnx-web"} <= set(names)


def test_summary_schema(exported: dict) -> None:
    s = exported["email"]["summary"]
    on_disk = json.loads((exported["email"]["out"] / "summary.json").read_text())
    assert on_disk["results"] == json.loads(json.dumps(s["results"]))
    assert on_disk["schema_version"] == 1 and on_disk["task"] == "email"
    keys = {
        "target",
        "precision",
        "path",
        "status",
        "stage",
        "reason",
        "error_stats",
        "size_bytes",
        "flavour",
    }
    for r in on_disk["results"]:
        assert keys <= set(r)
        if r["path"]:
            p = exported["email"]["out"] / r["path"]
            size = (
                sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
            )
            assert r["size_bytes"] == size
    assert on_disk["ok"] is True


def test_executorch_reports_delegation(exported: dict) -> None:
    row = _row(exported, "email", "executorch", "fp32")
    d = row["details"]["delegation"]
    assert d["delegated_subgraphs"] >= 1 and d["delegated_ops"]
    # The embedding gather is not an XNNPACK op: it must be reported, and flagged in the summary.
    assert any("embedding" in op for op in row["details"]["portable_ops"])
    assert any("embedding" in f for f in row["flags"])


def test_tflite_int8_is_smaller_and_flavour_recorded(exported: dict) -> None:
    fp32, int8 = _row(exported, "email", "tflite", "fp32"), _row(exported, "email", "tflite", "int8")
    # the email student's table is int8 rows (its small fully connected layers stay fp32: faster at batch 1)
    assert "embedding-int8-rows" in int8["flavour"]
    assert int8["size_bytes"] < 0.5 * fp32["size_bytes"]
    side = json.loads((exported["email"]["out"] / int8["metadata"]).read_text())
    assert side["inputs"][0]["dtype"] == "int32"  # LiteRT stores int64 ids as int32
    assert side["model_inputs"][0]["dtype"] == "int64"


def test_onnx_web_ran_in_wasm(exported: dict) -> None:
    from targets.onnx_web import onnxruntime_web_dir

    ort_dir, reason = onnxruntime_web_dir()
    if ort_dir is None:
        pytest.skip(reason)
    for p in PRECISIONS:
        wasm = _row(exported, "email", "onnx-web", p)["details"]["wasm"]
        assert wasm["status"] == "ok", wasm
        assert wasm["error_stats"]["n"] == sum(exported["email"]["summary"]["validation"]["splits"].values())


def test_coreml_spec_checked_with_coremltools(exported: dict) -> None:
    import coremltools as ct

    row = _row(exported, "email", "coreml", "int8")
    spec = ct.utils.load_spec(str(exported["email"]["out"] / row["path"]))
    assert spec.WhichOneof("Type") == "mlProgram"
    (inp,), (out,) = spec.description.input, spec.description.output
    assert (inp.name, list(inp.type.multiArrayType.shape)) == ("ids", [1, EMAIL_CFG.max_len])
    assert (out.name, list(out.type.multiArrayType.shape)) == ("logits", [1, 12])
    ops = {
        op.type
        for fn in spec.mlProgram.functions.values()
        for b in fn.block_specializations.values()
        for op in b.operations
    }
    assert any("dequantize" in op for op in ops), ops


def test_web_bundle_layout(exported: dict) -> None:
    import onnx

    bundle = exported["email"]["out"] / "onnx-web" / "bundle"
    names = {p.name for p in bundle.iterdir()}
    assert {
        "model_fp32.onnx",
        "model_int8.onnx",
        "tokenizer.json",
        "replies.json",
        "meta.json",
        "README.md",
    } <= names
    assert not any(n.endswith(".data") for n in names)
    meta = json.loads((bundle / "meta.json").read_text())
    assert (meta["input_name"], meta["input_shape"], meta["input_dtype"]) == (
        "ids",
        [1, EMAIL_CFG.max_len],
        "int64",
    )
    assert meta["output_name"] == "logits"
    assert meta["intents"] == [f"intent_{i}" for i in range(12)]
    for p in PRECISIONS:
        f = bundle / meta["models"][p]["file"]
        assert meta["models"][p]["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
        assert meta["models"][p]["size_bytes"] == f.stat().st_size
        m = onnx.load(str(f), load_external_data=False)
        assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    assert (bundle / "tokenizer.json").read_text().strip() == HashTokenizer(EMAIL_CFG).to_json().strip()


@pytest.mark.parametrize(
    "target,needle",
    [("executorch", "Module.load"), ("tflite", "Interpreter("), ("coreml", "MLModel(contentsOf:")],
)
def test_phone_bundle_readme(exported: dict, target: str, needle: str) -> None:
    bundle = exported["email"]["out"] / target / "bundle"
    readme = (bundle / "README.md").read_text()
    assert needle in readme
    side = json.loads(next(bundle.glob("model_int8*.json")).read_text())
    inp = side["inputs"][0]
    assert str(inp["shape"][-1]) in readme and inp["dtype"] in readme
    assert {"tokenizer.json", "replies.json", "meta.json"} <= {p.name for p in bundle.iterdir()}


def test_load_artifact_finds_the_target_from_the_sidecar(exported: dict) -> None:
    from kdmobile.export import load_artifact

    row = _row(exported, "mlp", "tflite", "int8")
    runtime = load_artifact(exported["mlp"]["out"] / row["path"], threads=1)
    x = exported["mlp"]["inputs"][:1]
    direct = discover().get("tflite")().load(exported["mlp"]["out"] / row["path"])
    np.testing.assert_array_equal(runtime(x)[0], direct(x)[0])
    assert runtime.inputs[0].dtype == "float32" and runtime.outputs[0].shape == (1, 10)
