"""The fixed reference model the in-browser latency is divided by, timed in the same page as the artifact.

    python -m kdmobile.harness.reference build/reference.onnx      # write it (the bench passes it in memory)

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
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_ID = "kdmobile-reference-v1 (onnxruntime-web, same page)"
ORT_REFERENCE_ID = "kdmobile-reference-v1 (onnxruntime, same worker process)"
ROWS, DIM, HIDDEN, OUT = 1024, 32, 64, 16


def reference_onnx() -> bytes:
    """The serialized reference model (identical bytes on every call and machine: see the test)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # Fixed values without any RNG: a deterministic formula, so numpy versions cannot change them.
    def table(rows: int, cols: int, k: int) -> np.ndarray:
        i = np.arange(rows * cols, dtype=np.int64).reshape(rows, cols)
        return (((i * (2 * k + 7919)) % 2001 - 1000) / 1000.0 / np.sqrt(cols)).astype(np.float32)

    inits = [
        numpy_helper.from_array(np.array(ROWS, dtype=np.int64), "rows"),
        numpy_helper.from_array(table(ROWS, DIM, 1), "table"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        numpy_helper.from_array(table(DIM, HIDDEN, 2), "w1"),
        numpy_helper.from_array(table(HIDDEN, OUT, 3), "w2"),
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


def main(argv: list[str] | None = None) -> int:
    from kdmobile.io import atomic_path

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m kdmobile.harness.reference OUT.onnx", file=sys.stderr)
        return 2
    with atomic_path(Path(argv[0])) as tmp:
        tmp.write_bytes(reference_onnx())
    print(f"{argv[0]} sha256 {reference_sha256()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
