"""``kdmobile.export(model, example_inputs, ...)``: a user's module, exported from memory, checked in onnxruntime.

    .venv/bin/python -m pytest -q tests/test_export_api.py

Fast: one target (onnx-web, fp32, the quickest exporter). Each artifact is loaded again here in the real
onnxruntime and compared with the eager model on inputs the exporter never saw. The every-target run of a
CNN and a GRU is tests/test_export_api_targets.py (slow).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import kdmobile
from kdmobile.errors import UsageError

pytestmark = pytest.mark.target("onnx-web")
pytest.importorskip("onnxruntime")


class TwoInputs(nn.Module):
    """Two named inputs, a dict of two outputs (scores first)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"scores": self.fc(features) * mask, "total": features.sum(dim=1, keepdim=True)}


def _ort(path: Path) -> object:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_user_module_with_dict_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TwoInputs()
    example = (torch.randn(1, 6), torch.ones(1, 3))
    lines: list[str] = []
    res = kdmobile.export(
        model, example, targets="onnx-web", precisions=["fp32"], out_dir=tmp_path / "out", log=lines.append
    )
    assert res.ok, str(res)
    # no validation data: loud in the log, flagged in the summary
    assert any(line.startswith("WARNING: no validation data") for line in lines)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["validation"]["synthetic"] is True and summary["warnings"]
    assert summary["validation"]["real_split"] is None
    assert [s["name"] for s in summary["validation"]["input_specs"]] == ["features", "mask"]
    assert [s["name"] for s in summary["validation"]["output_specs"]] == ["scores", "total"]
    assert summary["weights_sha256"] and summary["checkpoint_sha256"] is None
    (row,) = list(res)
    assert (row.target, row.precision, row.status.value) == ("onnx-web", "fp32", "ok")
    assert row.details["outputs"]["total"]["max_abs"] < 1e-4  # the second output is validated too
    # the artifact, read by onnxruntime itself: names from forward's signature and the dict keys
    sess = _ort(row.path)
    assert [i.name for i in sess.get_inputs()] == ["features", "mask"]
    assert [o.name for o in sess.get_outputs()] == ["scores", "total"]
    x = np.random.default_rng(5).normal(size=(1, 6)).astype(np.float32)
    m = np.array([[1.0, 0.0, 1.0]], dtype=np.float32)
    got = sess.run(None, {"features": x, "mask": m})
    with torch.no_grad():
        ref = model(torch.from_numpy(x), torch.from_numpy(m))
    np.testing.assert_allclose(got[0], ref["scores"].numpy(), atol=1e-5)
    np.testing.assert_allclose(got[1], ref["total"].numpy(), atol=1e-5)
    # .load gives the same runtime through the target
    np.testing.assert_allclose(res.load("onnx-web")(x, m)[0], got[0], atol=1e-6)
    assert "onnx-web" in str(res) and "WARNING" in str(res)


def test_real_validation_and_reference(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    val = torch.randn(40, 8)
    np.savez(tmp_path / "val.npz", x0=val.numpy(), labels=np.zeros(40))
    res = kdmobile.export(
        model,
        (val[:1],),
        targets=["onnx-web"],
        precisions=["fp32"],
        validation=tmp_path / "val.npz",
        out_dir=tmp_path / "a",
    )
    assert res.ok and res.summary["validation"]["splits"]["validation"] == 40
    assert res.summary["validation"]["synthetic"] is False and not res.summary["warnings"]
    # reference= is what the artifact is judged against: another model's numbers are a mismatch
    other = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    bad = kdmobile.export(
        model,
        (val[:1],),
        targets="onnx-web",
        precisions=["fp32"],
        validation=(val,),
        reference=other,
        out_dir=tmp_path / "b",
    )
    (row,) = list(bad)
    assert row.status.value == "mismatch" and row.path is None and not bad.ok


def test_hugging_face_model_output_is_a_clear_error(tmp_path: Path) -> None:
    outputs = pytest.importorskip("transformers.modeling_outputs")

    class HF(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> object:
            return outputs.SequenceClassifierOutput(logits=self.fc(x))

    with pytest.raises(UsageError, match=r"SequenceClassifierOutput: wrap it.*\.logits"):
        kdmobile.export(HF(), (torch.randn(1, 4),), targets="onnx-web", out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "samples,message",
    [
        (
            (np.zeros((5, 7), np.float32), np.ones((5, 3), np.float32)),
            r"array 0 has shape \[5, 7\]; input 'features'",
        ),
        ((np.zeros((5, 6), np.float32),), "1 arrays for 2 model inputs"),
        ({"features": np.zeros((5, 6)), "mask": np.zeros((4, 3))}, "mask has 4 samples, the others 5"),
        ({"features": np.zeros((5, 6)), "masks": np.zeros((5, 3))}, r"arrays \['features', 'masks'\]"),
        (
            {"features": np.zeros((5, 6), np.int64), "mask": np.zeros((5, 3), np.float32)},
            "is int64; input 'features' is float32",
        ),
    ],
)
def test_samples_that_do_not_match_the_inputs(tmp_path: Path, samples: object, message: str) -> None:
    if isinstance(samples, dict):
        np.savez(tmp_path / "v.npz", **samples)
        samples = tmp_path / "v.npz"
    with pytest.raises(UsageError, match=message):
        kdmobile.export(
            TwoInputs(),
            (torch.randn(1, 6), torch.ones(1, 3)),
            targets="onnx-web",
            validation=samples,
            out_dir=tmp_path / "o",
        )
    assert not (tmp_path / "o").exists()


def test_callable_package_and_plain_function() -> None:
    import kdmobile.export as ke
    from kdmobile.export import get_target
    from kdmobile.export.api import export

    assert ke is kdmobile.export and callable(kdmobile.export)
    assert kdmobile.export_model is export
    assert get_target("onnx-web").name == "onnx-web"


def test_failed_export_leaves_the_previous_one_intact(tmp_path: Path) -> None:
    """Staging: an export interrupted midway leaves the earlier export as it was and no temporary folder."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 3)).eval()
    out = tmp_path / "out"
    first = kdmobile.export(model, (torch.randn(1, 5),), targets="onnx-web", precisions=["fp32"], out_dir=out)
    assert first.ok
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def interrupt(line: str) -> None:
        if " ok " in line:
            raise KeyboardInterrupt  # after the first artifact was written into staging

    with pytest.raises(KeyboardInterrupt):
        kdmobile.export(
            nn.Sequential(nn.Linear(5, 3)),
            (torch.randn(1, 5),),
            targets="onnx-web",
            precisions=["fp32"],
            out_dir=out,
            log=interrupt,
        )
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging / .tmp folder left

    # a finished export replaces the folder whole: nothing of the older one is mixed in
    (out / "onnx-web" / "stale.txt").write_text("from an older export")
    again = kdmobile.export(model, (torch.randn(1, 5),), targets="onnx-web", precisions=["fp32"], out_dir=out)
    assert again.ok and not (out / "onnx-web" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_out_dir_that_is_not_an_export_is_refused(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="non-empty folder without a summary.json"):
        kdmobile.export(nn.Linear(3, 2), (torch.randn(1, 3),), targets="onnx-web", out_dir=mine)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_a_filesystem_error_fails_only_that_artifact(tmp_path: Path) -> None:
    from kdmobile.export import get_target
    from kdmobile.export.api import build_spec
    from kdmobile.export.runner import export_one
    from kdmobile.export.validate import eager_outputs

    model = nn.Linear(4, 2).eval()
    built = build_spec(model, (torch.randn(1, 4),))
    eager = eager_outputs(model, built.spec)
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "onnx-web").write_text("a file where the target's folder should be")
    res = export_one(get_target("onnx-web"), model, built.spec, eager, "fp32", blocked, source={})
    assert (res.status.value, res.stage.value, res.path) == ("export_failed", "serialize", None)
    assert "onnx-web: serialize failed" in res.reason
    ok = export_one(get_target("onnx-web"), model, built.spec, eager, "fp32", tmp_path / "free", source={})
    assert ok.status.value == "ok" and ok.path.is_file()


def test_fidelity_only_drops_the_top1_bar_and_nothing_else() -> None:
    """Near-tied logits whose argmax flips on a tiny error: refused on top-1 agreement unless the inputs
    are declared stand-ins (``fidelity_only``); a real fidelity miss is refused either way."""
    import dataclasses

    import numpy as np

    from kdmobile.export.api import build_spec
    from kdmobile.export.base import TOLERANCES, MismatchError
    from kdmobile.export.validate import check, compare

    model = nn.Linear(2, 2).eval()
    x = np.zeros((8, 2), np.float32)
    eager = {"validation": np.tile(np.array([[1.0, 1.0 + 1e-4]], np.float32), (8, 1))}
    flipped = {"validation": eager["validation"][:, ::-1].copy()}
    for fidelity_only in (False, True):
        spec = build_spec(model, (torch.zeros(1, 2),), validation=(x,), fidelity_only=fidelity_only).spec
        stats, by_split = compare(spec, eager, flipped)
        if fidelity_only:
            check(stats, by_split, spec, eager, TOLERANCES["int8"], "t")
        else:
            with pytest.raises(MismatchError, match="top-1 agreement"):
                check(stats, by_split, spec, eager, TOLERANCES["int8"], "t")
        far = {"validation": eager["validation"] * 3}
        stats, by_split = compare(spec, eager, far)
        with pytest.raises(MismatchError, match="SQNR"):
            check(stats, by_split, spec, eager, dataclasses.replace(TOLERANCES["int8"]), "t")


def test_when_every_int8_variant_fails_the_reason_names_them_all(tmp_path):
    """The last fallback's reason alone can hide the telling one (a weight-only fallback saying it found no
    MatMul, where the int8 attempts before it missed the tolerance): the headline names every variant."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong[2].weight.neg_()  # a reference the artifact cannot match: every variant fails validation
    x = torch.randn(64, 8)
    (r,) = list(
        kdmobile.export(
            model,
            (x[:1],),
            targets=["onnx-web"],
            precisions=["int8"],
            validation=(x,),
            reference=wrong,
            out_dir=tmp_path / "o",
        )  # fmt: skip
    )
    assert r.status.value != "ok" and r.path is None
    tried = [a["variant"] for a in r.details["attempts"]]
    assert tried == ["all", "matmul"], tried  # the last one, weight-only, is the headline
    assert "earlier variants failed too: all: " in r.reason and "; matmul: " in r.reason, r.reason
    assert not list((tmp_path / "o").glob("onnx-web/*.onnx"))  # nothing half-written
