"""The same checkpoint exported twice gives the same artifacts: byte-identical model files and identical
outputs on every validation input, for every target and precision that exports here.

The second export runs in another process with another hash seed and another torch thread count, the
things that differ between two ``make demo`` runs of one machine. ``kdmobile check`` relies on this: an
unchanged model must flip no example (its paired accuracy test then has nothing to count).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdmobile.tasks.selftest import fixture as selftest

# Two full exports of every target (16 min on the loaded 2 cores): `make test-all`, not `make test`.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.heavy,
    pytest.mark.target("executorch"),
    pytest.mark.target("tflite"),
]
TARGETS = ("executorch", "tflite", "onnx-web", "coreml")


def _model_files(root: Path) -> dict[str, bytes]:
    """The files that must be byte-identical, by relative path: every .pte/.tflite/.onnx, and a Core ML
    package's weights. Not compared: sidecar JSON (timestamps), bundles (copies plus docs), and a Core ML
    package's ``Manifest.json`` (random item UUIDs by design) and ``model.mlmodel`` (coremltools writes
    the metadata map and some ops in another order on each run, even with a fixed PYTHONHASHSEED, and
    stamps the conversion date; the program cannot run on Linux to compare outputs, so its weights are
    compared instead)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or "bundle" in rel.parts:
            continue
        if p.suffix in (".pte", ".tflite", ".onnx") or (
            any(part.endswith(".mlpackage") for part in rel.parts) and p.name == "weight.bin"
        ):
            out[str(rel)] = p.read_bytes()
    return out


def test_two_exports_of_one_checkpoint_are_identical(tmp_path):
    from kdmobile.checkpoint import read_metadata
    from kdmobile.export import RuntimeUnavailable, discover, get_target
    from kdmobile.tasks.email.bench import email_eval_set
    from kdmobile.tasks.email.export_spec import random_ids

    ckpt = selftest.train(tmp_path / "st", with_teacher=False)["student"]
    discover()
    targets = tuple(t for t in TARGETS if _available(t))
    a = selftest.export(ckpt, tmp_path / "a", targets=targets, bundle=False)
    code = (
        "import sys, torch; torch.set_num_threads(2); from kdmobile.tasks.selftest import fixture as selftest; "
        f"selftest.export(sys.argv[1], sys.argv[2], targets={targets!r}, bundle=False)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "2"}
    subprocess.run([sys.executable, "-c", code, str(ckpt), str(tmp_path / "b")], check=True, env=env)
    b = tmp_path / "b"

    results = json.loads((a / "summary.json").read_text())["results"]
    ok = [r for r in results if r["status"] in ("ok", "conversion_validated")]
    assert {r["target"] for r in ok} >= {"executorch", "tflite", "onnx-web"} & set(targets), results
    fa, fb = _model_files(a), _model_files(b)
    assert fa and fa.keys() == fb.keys()
    differ = [k for k in fa if fa[k] != fb[k]]
    assert not differ, f"not byte-identical across two exports: {differ}"

    # Identical outputs on every validation input: the held-out emails and seeded random ids.
    ev = email_eval_set("selftest", "heldout", read_metadata(ckpt))
    inputs = np.concatenate(
        [ev.ids, random_ids(32, ev.ids.shape[1], selftest.STUDENT_CONFIG["num_buckets"], 2)]
    )
    for r in ok:
        if not r.get("path"):
            continue
        try:
            runs = [get_target(r["target"]).load(d / r["path"], threads=1) for d in (a, b)]
        except RuntimeUnavailable:
            continue  # Core ML converts here but runs only on Apple hardware: bytes compared above
        dtype = np.dtype(runs[0].inputs[0].dtype) if getattr(runs[0], "inputs", None) else np.int64
        outs = [
            np.concatenate([np.asarray(rt(inputs[i : i + 1].astype(dtype))[0]) for i in range(len(inputs))])
            for rt in runs
        ]
        assert np.array_equal(outs[0], outs[1]), f"{r['target']} {r['precision']}: outputs differ"


def _available(name: str) -> bool:
    from kdmobile.export import get_target

    try:
        t = get_target(name)
    except KeyError:
        return False
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in t.requires)
