"""Distillation-aware compression: QAT+KD beats PTQ where PTQ breaks; pruned students still export everywhere.

    .venv/bin/python -m pytest -q tests/test_compress.py

Every agreement here is measured on artifacts run in their real runtime (ExecuTorch, LiteRT, onnxruntime)
against the float eager model, on real held-out inputs (MNIST test images, hand-written emails).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdmobile.errors import UsageError

EMAIL_BUDGET = 22_731_696 // 50  # 1/50 of the fine-tuned all-MiniLM-L6-v2 teacher


@pytest.mark.slow  # ~1 min quiet, 3-4 min on the shared 2 cores: trains the float net and its QAT copy
@pytest.mark.parametrize(
    ("target", "ptq_flavour", "qat_flavour"),
    [
        pytest.param(
            "executorch",
            "xnnpack-pt2e-static-int8",
            "xnnpack-pt2e-qat-int8",
            marks=pytest.mark.target("executorch"),
        ),
        pytest.param(
            "tflite",
            "full-integer-int8 (litert-torch PT2E static)",
            "full-integer-int8 QAT (litert-torch PT2E, trained ranges)",
            marks=pytest.mark.target("tflite"),
        ),
    ],
)
def test_qat_kd_beats_ptq_on_outlier_channels(tmp_path, target, ptq_flavour, qat_flavour):
    """A net with 4 outlier channels (function-preserving rescale): static PTQ int8 loses decisions,
    QAT+KD through the same target's quantizer keeps them. Both run in the real runtime on 2,000 test
    images and are compared with the float model."""
    from kdmobile.compress.demo_qat import run

    report = run(
        tmp_path,
        targets=(target,),
        seed=0,
        epochs=2,
        qat_epochs=5,
        n_train=20_000,
        n_heldout=2_000,
        log=lambda m: None,
    )
    row = report["targets"][target]
    ptq, qat = row["ptq"]["static"]["top1_agreement"], row["qat"]["top1_agreement"]
    assert row["ptq"]["static"]["flavour"] == ptq_flavour
    assert row["qat"]["flavour"] == qat_flavour
    assert report["hidden_activation_max"]["outliers"] > 20 * report["hidden_activation_max"]["others"]
    # A short schedule here (2 + 5 epochs on 20k images); the full demo's figures are in docs/compress.md.
    assert qat > ptq + 0.01, (ptq, qat)
    assert qat >= 0.95, row["qat"]  # 3 epochs gave 0.963 (ExecuTorch), 0.960 (TFLite)


@pytest.mark.parametrize(
    "target", [pytest.param(t, marks=pytest.mark.target(t)) for t in ("executorch", "tflite")]
)
def test_int8_qat_refuses_a_float_model(tmp_path, target):
    """int8-qat lowers a quantized program as it is; a float model is an export failure that says why."""
    import kdmobile
    from kdmobile.tasks.mnist.model import MLP

    model = MLP(hidden=(16,)).eval()
    x = torch.from_numpy(np.random.default_rng(0).random((8, 784), dtype=np.float32))
    out = kdmobile.export(
        model, (x[:1],), targets=target, precisions=["int8-qat"], validation=x, out_dir=tmp_path / "out"
    )
    res = out.result(target, "int8-qat")
    assert res.status.value == "export_failed"
    assert "kdmobile compress qat" in res.reason
    assert not [p for p in tmp_path.rglob("model_*") if p.suffix in (".pte", ".tflite")]


def test_qat_is_refused_for_targets_without_a_working_qat_quantizer():
    from kdmobile.compress.qat import check_target

    with pytest.raises(UsageError, match="dynamic"):
        check_target("onnx-web")
    with pytest.raises(UsageError, match="coreml"):
        check_target("coreml")


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """A quick email student pruned to the 1/50 budget (KD recovery: 1 short epoch), as a checkpoint."""
    import kdmobile.tasks.email as E
    from kdmobile.compress.prune import prune_checkpoint

    root = tmp_path_factory.mktemp("prune")
    ckpt = E.quick_student(root / "quick", seed=0)
    path, record = prune_checkpoint(
        ckpt, root / "pruned", dim=24, hidden=64, n_transfer=256, epochs=1, log=lambda m: None
    )
    return ckpt, path, record


def test_pruned_student_fits_the_budget_and_rebuilds_from_its_checkpoint(pruned):
    from kdmobile.checkpoint import load_checkpoint
    from kdmobile.tasks.email.model import EmailStudent

    _, path, record = pruned
    model, meta = load_checkpoint(path)
    n = sum(p.numel() for p in model.parameters())
    assert n == record["params_after"] <= EMAIL_BUDGET
    assert record["params_before"] > 1_000_000
    assert meta["model_config"]["dim"] == 24 and meta["model_config"]["hidden"] == 64
    # the widths an EmailStudent of that config has: the pruned layers are ordinary, dense layers
    fresh = EmailStudent(**meta["model_config"])
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_pruning_keeps_the_strongest_channels():
    """torch-pruning's group L2 importance (embedding column + LayerNorm entry + first Linear's input column)
    removes the weakest channels; the kept ones are copied as they are."""
    from kdmobile.compress.prune import prune_email_student
    from kdmobile.tasks.email.model import EmailStudent

    torch.manual_seed(0)
    model = EmailStudent(num_buckets=512, dim=16, hidden=32, num_intents=5, gated=True).eval()
    with torch.no_grad():
        # channels 0-7 are weak in every layer they couple: the table, the LayerNorm and hidden's inputs
        model.embed.weight[:, :8] *= 0.01
        model.norm.weight[:8] *= 0.01
        model.norm.bias[:8] = 0.0
        model.hidden.weight[:, :8] *= 0.01
    pruned, record = prune_email_student(model, dim=8, hidden=16)
    assert record["widths_after"] == {"embed": 8, "hidden": 16}
    assert torch.equal(pruned.embed.weight, model.embed.weight[:, 8:])
    rows = model.hidden.weight[:, 8:]  # every kept hidden unit is an original unit, minus the pruned inputs
    assert all(any(torch.equal(r, q) for q in rows) for r in pruned.hidden.weight)
    assert torch.equal(pruned.gate.weight, model.gate.weight)  # the one-column gate is untouched


@pytest.mark.slow  # converts to every target: ~1.5 min quiet, ~3.5 min on the shared 2 cores
@pytest.mark.target("executorch")
@pytest.mark.target("tflite")
@pytest.mark.target("onnx-web")
@pytest.mark.target("coreml")
def test_pruned_student_exports_to_every_target(pruned, tmp_path):
    """fp32 must validate everywhere. int8 must convert, load and run in every runtime; whether it keeps
    98% of this quick, low-margin student's decisions is a property of the student, not of pruning."""
    from kdmobile.export.runner import export_checkpoint

    _, path, _ = pruned
    summary = export_checkpoint(
        path,
        tmp_path,
        all_targets=True,
        precisions=["fp32", "int8"],
        n_heldout=128,
        n_random=8,
        n_calibration=16,
    )
    got = {(r["target"], r["precision"]): r for r in summary["results"]}
    for target in ("executorch", "tflite", "onnx-web"):
        fp32 = got[(target, "fp32")]
        assert fp32["status"] == "ok", fp32
        assert fp32["error_stats"]["top1_agreement"] >= 0.995
        int8 = got[(target, "int8")]
        assert int8["status"] in ("ok", "mismatch"), int8  # not export_failed / load_failed / run_failed
        assert int8["error_stats"]["top1_agreement"] >= 0.9, int8
    for precision in ("fp32", "int8"):
        assert got[("coreml", precision)]["status"] in ("ok", "conversion_validated"), got[
            ("coreml", precision)
        ]
