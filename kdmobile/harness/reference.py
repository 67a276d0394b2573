"""The fixed reference models latency ratios divide by, timed in the artifact's own runtime and process.

    python -m kdmobile.harness.reference build/reference.onnx      # write it (the bench passes it in memory)
    python -m kdmobile.harness.reference --target executorch       # build (or find) the cached .pte one

A browser run cannot share a process with the Python bench, so a Python-side reference sees another
process at another time and load does not cancel (measured: +59 % on an unchanged artifact with two CPU
hogs). The page therefore times this model with the same onnxruntime-web session type, in blocks that
alternate with the artifact's. It must never change between a baseline and a check, so it is built here
from fixed numbers (no training, no converter): ``Mod`` of the int64 ids into a 1024-row table, ``Gather``,
``ReduceMean`` over the sequence, two small ``MatMul`` with a ``Relu`` between: the same kind of work as the
email student (a gather, a pooling, a small MLP, dominated by dispatch and memory), for any ``[1, L]``
input. ``REFERENCE_ID`` names it in reports; change it whenever the bytes change.

The same model is the reference of the ONNX artifacts in Python onnxruntime (``ort_reference``): a
reference run by another runtime does not react to load the way the artifact does (measured: the ratio
of onnxruntime to the eager PyTorch student moved +75 % between a heavily and a less loaded run of an
unchanged artifact, while ExecuTorch's did not), so where kdmobile has a reference in the artifact's own
runtime, it uses it.

**Every other target** (ExecuTorch, LiteRT, and any plug-in target that runs in Python) gets the same
network as a PyTorch module (``reference_module``: the same fixed tables, fed fixed ids below the table
size, so the ``Mod`` is a no-op) exported through *that target's own exporter* at fp32
(``runtime_reference``): a ``.pte`` lowered to XNNPACK, a ``.tflite``. The bench times it in the
artifact's worker process, loaded by the target's own ``load``, in blocks alternating with the artifact.
Before this, those runtimes divided by the eager PyTorch student, and their ratio drifted by up to
+-23 % with load on unchanged artifacts. The exported file is cached (``cache_dir()``, one file per
target and converter versions) and identified by its sha256 and the converter versions: the identity
goes into each entry's ``ratio_reference`` and the report's ``reference.runtimes``, so ``kdmobile
check`` can refuse to compare ratios to two different references (a converter upgrade that changes the
bytes changes the identity). The exports are byte-reproducible (tests/test_export_reproducible.py), so
a deleted cache is rebuilt with the same identity.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_ID = "kdmobile-reference-v1 (onnxruntime-web, same page)"
ORT_REFERENCE_ID = "kdmobile-reference-v1 (onnxruntime, same worker process)"
ROWS, DIM, HIDDEN, OUT = 1024, 32, 64, 16
RUNTIME_REFERENCE_VERSION = "kdmobile-reference-v2"  # bump when reference_module or its input changes
REFERENCE_LENGTH = 128  # the fixed input of the exported references: [1, 128] ids


def _table(rows: int, cols: int, k: int) -> np.ndarray:
    """Fixed values without any RNG: a deterministic formula, so numpy versions cannot change them."""
    i = np.arange(rows * cols, dtype=np.int64).reshape(rows, cols)
    return (((i * (2 * k + 7919)) % 2001 - 1000) / 1000.0 / np.sqrt(cols)).astype(np.float32)


def reference_onnx() -> bytes:
    """The serialized reference model (identical bytes on every call and machine: see the test)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array(ROWS, dtype=np.int64), "rows"),
        numpy_helper.from_array(_table(ROWS, DIM, 1), "table"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        numpy_helper.from_array(_table(DIM, HIDDEN, 2), "w1"),
        numpy_helper.from_array(_table(HIDDEN, OUT, 3), "w2"),
    ]
    nodes = [
        helper.make_node("Mod", ["ids", "rows"], ["row"]),
        helper.make_node("Gather", ["table", "row"], ["emb"], axis=0),
        helper.make_node("ReduceMean", ["emb", "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "kdmobile_reference",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "L"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, OUT])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="kdmobile", producer_version="1"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)


def ort_reference(ids: np.ndarray, threads: int = 1) -> Any:
    """A zero-argument call running the reference in Python onnxruntime on ``ids`` (int64 ``[1, L]``)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(reference_onnx(), so, providers=["CPUExecutionProvider"])
    feed = {"ids": np.ascontiguousarray(ids, dtype=np.int64)}
    return lambda: sess.run(None, feed)


def reference_ids(eval_set: Any, index: int) -> np.ndarray:
    """The reference's input: the timed example's ids for a text task (the same length of work the page
    times), else a fixed ``[1, 128]`` row, so that a baseline and a check always feed it the same."""
    x = np.asarray(eval_set.inputs[0][index : index + 1])
    if x.ndim == 2 and np.issubdtype(x.dtype, np.integer):
        return x.astype(np.int64)
    return np.arange(1, 129, dtype=np.int64).reshape(1, -1)


def reference_sha256() -> str:
    return hashlib.sha256(reference_onnx()).hexdigest()


# --- the exported references (ExecuTorch, LiteRT, ...): the same network through each target's exporter ---


def reference_input() -> np.ndarray:
    """The exported references' fixed input: ``[1, 128]`` int64 ids spread over the table, all below
    ``ROWS`` (so the module needs no ``Mod``), the same for every task, baseline and check."""
    return ((np.arange(REFERENCE_LENGTH, dtype=np.int64) * 37 + 1) % ROWS).reshape(1, -1)


def reference_module() -> Any:
    """The reference network as a PyTorch module in eval mode: the ONNX model's fixed tables, a gather,
    a mean over the sequence and a two-layer MLP (the ``Mod`` left out: ``reference_input`` needs none)."""
    import torch
    from torch import nn

    class ReferenceNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Embedding(ROWS, DIM)
            self.fc1 = nn.Linear(DIM, HIDDEN, bias=False)
            self.fc2 = nn.Linear(HIDDEN, OUT, bias=False)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(self.table(ids).mean(1))))

    net = ReferenceNet()
    with torch.no_grad():  # nn.Linear holds W transposed: [out, in]
        net.table.weight.copy_(torch.from_numpy(_table(ROWS, DIM, 1)))
        net.fc1.weight.copy_(torch.from_numpy(np.ascontiguousarray(_table(DIM, HIDDEN, 2).T)))
        net.fc2.weight.copy_(torch.from_numpy(np.ascontiguousarray(_table(HIDDEN, OUT, 3).T)))
    return net.eval()


def cache_dir() -> Path:
    """Where exported references are kept: ``$KDMOBILE_CACHE/reference`` (default ``~/.cache/kdmobile``)."""
    root = os.environ.get("KDMOBILE_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdmobile"
    )
    return Path(root) / "reference"


def _versions(target: Any) -> dict[str, str | None]:
    import importlib.metadata

    out: dict[str, str | None] = {}
    for dist in ("torch", *target.packages):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def runtime_reference(target_name: str, cache: Path | None = None) -> dict[str, Any]:
    """The fixed reference exported through ``target_name``'s own exporter at fp32, built once and cached.

    Returns:
        ``{"id", "target", "path", "sha256", "versions"}``: ``id`` is what entries record as their
        ``ratio_reference`` (it names the file's sha256 and the converter versions, so a check can tell
        whether a baseline used the same reference).

    Raises:
        whatever the target's exporter raises (the bench then falls back to the eager model).
    """
    from kdmobile.export import discover, get_target
    from kdmobile.export.base import ModelSpec, TensorSpec
    from kdmobile.io import atomic_path, write_json

    discover()
    target = get_target(target_name)
    versions = _versions(target)
    key = hashlib.sha256(
        json.dumps([RUNTIME_REFERENCE_VERSION, target_name, versions], sort_keys=True).encode()
    ).hexdigest()[:16]
    path = (cache or cache_dir()) / f"{RUNTIME_REFERENCE_VERSION}-{target_name}-{key}{target.suffix}"
    record = path.with_name(path.name + ".json")
    known = json.loads(record.read_text()) if record.is_file() and path.exists() else {}
    if not known or known.get("sha256") != _sha256(path):  # missing, or damaged since: export again
        ids = reference_input()
        spec = ModelSpec(
            task="kdmobile-reference",
            inputs=[TensorSpec("ids", tuple(ids.shape), "int64")],
            outputs=[TensorSpec("logits", (1, OUT), "float32")],
            calibration=(ids,),
            validation={},
        )
        with atomic_path(path, is_dir=target.is_dir_artifact) as tmp:
            target.export(reference_module(), spec, tmp, "fp32")
        known = {"target": target_name, "sha256": _sha256(path), "versions": versions}
        write_json(record, known)
    sha = known["sha256"]
    described = ", ".join(f"{k} {v}" for k, v in versions.items())
    return {
        "id": f"{RUNTIME_REFERENCE_VERSION} {target_name} sha256:{sha[:16]} ({described}; same worker process)",
        "target": target_name,
        "path": str(path),
        "sha256": sha,
        "versions": versions,
    }


def runtime_reference_call(target_name: str, path: str | Path, threads: int = 1) -> Any:
    """A zero-argument call running the exported reference at ``path`` in ``target_name``'s runtime (its
    own ``load``) on ``reference_input()``."""
    from kdmobile.export import discover, get_target

    discover()
    runtime = get_target(target_name).load(Path(path), threads=threads)
    ids = reference_input()
    return lambda: runtime(ids)


def main(argv: list[str] | None = None) -> int:
    from kdmobile.io import atomic_path

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--target":
        ref = runtime_reference(argv[1])
        print(f"{ref['path']}\n{ref['id']}")
        return 0
    if len(argv) != 1:
        print("usage: python -m kdmobile.harness.reference OUT.onnx | --target TARGET", file=sys.stderr)
        return 2
    with atomic_path(Path(argv[0])) as tmp:
        tmp.write_bytes(reference_onnx())
    print(f"{argv[0]} sha256 {reference_sha256()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
