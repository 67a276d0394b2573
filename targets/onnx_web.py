"""ONNX for the browser: ``torch.onnx.export(dynamo=True)`` → single-file ``.onnx`` for onnxruntime-web (wasm).

    kdmobile export build/email/student.safetensors --target onnx-web --bundle -o build/export

- fp32: the dynamo exporter, saved as ONE file (no ``.onnx.data``: the browser fetches one URL).
- int8: ``onnxruntime.quantization.quantize_dynamic`` with per-channel int8 weights (embedding table
  included) and dynamic int8 activations for MatMul (``MatMulInteger``/``DynamicQuantizeLinear``, which
  the wasm build runs), without the pre-processing step (it failed on Transformers with the legacy
  exporter, measured on this project's machines). Per-channel kept 99.1% top-1 on a trained email student's held-out emails
  against 98.1% per-tensor, at the same size. If that artifact misses the tolerance, the fallback variant
  quantizes only the MatMuls and keeps the embedding table in float32 (larger file, fewer flips); the last
  stores the MatMul weights as int8 with float activations (``MatMulNBits`` at 8 bits, a contrib op that
  onnxruntime-web's wasm build runs): no per-call activation rounding, the loss on MiniLM.
- Checks against the web runtime: the model must load and run in onnxruntime (the wasm build compiles
  the same CPU kernels; judged by running, since ops such as HardSwish are ONNX functions that run
  without a kernel of their own name), and, when Node.js and ``demo_app/node_modules/onnxruntime-web``
  are present, the artifact is run in onnxruntime-web's own wasm build on every validation sample and
  must meet the same tolerance (``details.wasm``).
- ``load`` gives Python onnxruntime (CPU EP), the harness's runtime; ``--ort`` also writes ``.ort``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kdmobile.export.base import ArtifactRuntime, ModelSpec, Stage, Target, TensorSpec, register_target

REPO = Path(__file__).resolve().parents[1]
_ORT_TYPES = {
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
}


@register_target
class OnnxWebTarget(Target):
    name = "onnx-web"
    suffix = ".onnx"
    runtime = "onnxruntime-web (wasm)"
    requires = ("onnx", "onnxscript", "onnxruntime")
    packages = ("onnx", "onnxscript", "onnxruntime")
    precisions = ("fp32", "int8")
    runtime_dist = "onnxruntime"
    runtime_label = "onnxruntime (Python, CPU)"  # what `load` gives; the browser runs are the harness's
    report_order, colour = 3, "#d62728"
    bundle_sidecars = False  # the web bundle: meta.json only, what demo_app/ loads
    op_patterns = (
        r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'",  # torch.onnx
        r"Could not find an implementation for (\w+\(\d+\))",  # onnxruntime
    )

    def variants(self, precision: str) -> tuple[str | None, ...]:
        # "all": every weight int8, the embedding table included (4x smaller); "matmul": the embedding stays
        # float32 (quantizing it is the main error source), used only when "all" misses the tolerance.
        # "weight-only": int8 MatMul weights (com.microsoft MatMulNBits, 8 bits, blocks of 32) with float
        # activations, for models whose accuracy the on-the-fly activation rounding costs (MiniLM).
        return ("all", "matmul", "weight-only") if precision == "int8" else (None,)

    def export(
        self, model: Any, spec: ModelSpec, out: Path, precision: str, variant: str | None = None
    ) -> dict[str, Any]:
        import torch

        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            with self.stage(Stage.EXPORT):
                program = torch.onnx.export(
                    model,
                    spec.torch_example_inputs(),
                    dynamo=True,
                    input_names=spec.input_names,
                    output_names=spec.output_names,
                    verbose=False,
                )
            with self.stage(Stage.SERIALIZE):
                program.save(str(fp32), external_data=False)
                _single_file(fp32)
            if precision == "int8":
                with self.stage(Stage.LOWER):
                    from onnxruntime.quantization import QuantType, quantize_dynamic

                    q = Path(tmp) / "int8.onnx"
                    if variant == "weight-only":
                        _weight_only_int8(fp32, q)
                    else:
                        ops = {"op_types_to_quantize": ["MatMul", "Gemm"]} if variant == "matmul" else {}
                        quantize_dynamic(
                            str(fp32), str(q), weight_type=QuantType.QInt8, per_channel=True, **ops
                        )
                    _single_file(q)
                    fp32 = q
            with self.stage(Stage.LOWER):
                ops = check_web_ops(fp32)
            shutil.copyfile(fp32, out)
        flavour = "fp32"
        if precision == "int8":
            flavour = "quantize_dynamic-int8-per-channel" + (
                "-matmul-only (fp32 embedding)" if variant == "matmul" else ""
            )
            if variant == "weight-only":
                flavour = "weight-only-int8 MatMulNBits (8 bits, block 32, float activations)"
        return {"flavour": flavour, "opset": ops["opset"], "ops": ops["ops"]}

    def runtime_availability(self) -> tuple[bool, str]:
        ok, reason = self.availability()
        if not ok:
            return ok, reason
        ort_dir, why = onnxruntime_web_dir()
        return True, "" if ort_dir else f"Python onnxruntime only; the wasm check is skipped: {why}"

    def load(self, path: Path, threads: int = 1) -> OrtRuntime:
        return OrtRuntime(Path(path), threads)

    def inspect(self, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        import onnx

        m = onnx.load(str(path), load_external_data=False)

        def specs(values: Any) -> list[TensorSpec]:
            out = []
            for v in values:
                t = v.type.tensor_type
                shape = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in t.shape.dim)
                out.append(TensorSpec(v.name, shape, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name))
            return out

        return specs(m.graph.input), specs(m.graph.output)

    def extra_validation(
        self, path: Path, spec: ModelSpec, eager: dict[str, np.ndarray], precision: str
    ) -> dict[str, Any]:
        """Run the artifact in onnxruntime-web's wasm build (Node.js) on every validation sample."""
        from kdmobile.export.validate import check, compare

        ort_dir, reason = onnxruntime_web_dir()
        if ort_dir is None:
            return {"wasm": {"status": "skipped", "reason": reason}}
        with self.stage(Stage.RUN):
            outputs = run_in_wasm(path, spec, ort_dir)
        stats, by_split = compare(spec, eager, outputs)
        check(
            stats, by_split, spec, eager, self.tolerance(precision), self.name, what="onnxruntime-web wasm: "
        )
        version = json.loads((ort_dir / "package.json").read_text())["version"]
        return {
            "wasm": {
                "status": "ok",
                "runtime": f"onnxruntime-web {version} wasm (Node.js {_node_version()})",
                "error_stats": stats.to_dict(),
                "error_stats_by_split": {k: v.to_dict() for k, v in by_split.items()},
            }
        }

    def post_export(
        self, artifact: Path, precision: str, options: dict[str, Any], root: Path
    ) -> dict[str, Any]:
        """With ``options["ort"]`` (CLI ``--ort``): also write ``model_<precision>.ort`` and load it back."""
        if not options.get("ort"):
            return {}
        from kdmobile.io import atomic_path

        ort_path = artifact.with_suffix(".ort")
        with atomic_path(ort_path) as tmp:
            self.write_ort(artifact, tmp)
            self.load(tmp)  # it must load back in onnxruntime; the session is dropped at once
        return {"ort": {"path": os.path.relpath(ort_path, root), "size_bytes": ort_path.stat().st_size}}

    def bundle_snippet(self, sidecar: dict[str, Any], sidecars: dict[str, dict[str, Any]]) -> str:
        inp, out = sidecar["inputs"][0], sidecar["outputs"][0]
        ctor = {"int64": "BigInt64Array", "int32": "Int32Array"}.get(inp["dtype"], "Float32Array")
        n = int(np.prod(inp["shape"]))
        return f"""## Browser (JavaScript, onnxruntime-web, wasm)

```js
import * as ort from 'onnxruntime-web';

const session = await ort.InferenceSession.create('{sidecar["artifact"]}', {{ executionProviders: ['wasm'] }});
const x = new {ctor}({n});                 // `{inp["name"]}`: {inp["dtype"]}{inp["shape"]}
const result = await session.run({{ {inp["name"]}: new ort.Tensor('{inp["dtype"]}', x, {json.dumps(inp["shape"])}) }});
const scores = result.{out["name"]}.data;          // {out["dtype"]}{out["shape"]}
```

`meta.json` names the files, inputs and outputs; `demo_app/` loads this folder as is.
"""

    def write_ort(self, onnx_path: Path, out: Path) -> Path:
        """Convert to the ``.ort`` format (onnxruntime-web loads it too)."""
        import onnxruntime as ort

        with self.stage(Stage.SERIALIZE):
            so = ort.SessionOptions()
            so.optimized_model_filepath = str(out)
            so.add_session_config_entry("session.save_model_format", "ORT")
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        return out


def _weight_only_int8(src: Path, dst: Path) -> None:
    """int8 weights for every MatMul with a constant weight (``MatMulNBits``, symmetric, blocks of 32);
    activations stay float, so nothing is rounded per call (onnxruntime's ``MatMulNBitsQuantizer``)."""
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    log = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = log.level
    log.setLevel(logging.WARNING)  # it logs one INFO line per node it skips
    try:
        quant = MatMulNBitsQuantizer(str(src), bits=8, block_size=32, is_symmetric=True)
        quant.process()
    finally:
        log.setLevel(level)
    if not any(n.op_type == "MatMulNBits" for n in quant.model.model.graph.node):
        # e.g. a 2-D Linear exported as Gemm: nothing stored as int8, so this is no int8 artifact
        raise ValueError("weight-only int8 found no MatMul with a constant weight to quantize")
    onnx.save_model(quant.model.model, str(dst))


class OrtRuntime(ArtifactRuntime):
    """Python onnxruntime, CPU execution provider, ``threads`` intra-op threads."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        self._sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        ins, outs = self._sess.get_inputs(), self._sess.get_outputs()
        self._names = [i.name for i in ins]
        super().__init__(
            [TensorSpec(i.name, tuple(i.shape), _ORT_TYPES.get(i.type, i.type)) for i in ins],
            [TensorSpec(o.name, tuple(o.shape), _ORT_TYPES.get(o.type, o.type)) for o in outs],
        )

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        return self._sess.run(None, dict(zip(self._names, self.cast(inputs), strict=True)))


def _single_file(path: Path) -> None:
    """Fold any external data back into the file; the browser bundle must be one file per model."""
    import onnx

    m = onnx.load(str(path), load_external_data=True)
    has_external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer) or any(
        p.name != path.name for p in path.parent.glob(path.name + "*") if p != path
    )
    if has_external:
        onnx.save(m, str(path), save_as_external_data=False)
        for p in path.parent.glob(path.name + ".*"):
            p.unlink()
    onnx.checker.check_model(str(path))


def check_web_ops(path: Path) -> dict[str, Any]:
    """Load and run the model once in onnxruntime (CPU); return its opset and operator list.

    Op support is judged by running, not by a list of kernel names: ONNX defines some ops as functions
    (HardSwish since opset 14) that onnxruntime expands into ops it has kernels for, so a HardSwish model
    runs in onnxruntime and onnxruntime-web (wasm) although no kernel carries that name. The wasm build
    compiles the same CPU kernels; ``extra_validation`` then runs every sample in it. Raises
    ``UnsupportedOpError`` naming the op when onnxruntime has no implementation for it.
    """
    import onnx
    import onnxruntime as ort

    from kdmobile.export.base import ExportError, UnsupportedOpError, clean_message, find_op

    m = onnx.load(str(path), load_external_data=False)
    opsets = {(o.domain or "ai.onnx"): o.version for o in m.opset_import}
    ops = sorted({((n.domain or "ai.onnx"), n.op_type) for n in m.graph.node})
    try:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feeds = {}
        for i in sess.get_inputs():
            dtype = np.dtype(_ORT_TYPES.get(i.type, "float32"))
            feeds[i.name] = np.zeros([d if isinstance(d, int) else 1 for d in i.shape], dtype=dtype)
        sess.run(None, feeds)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        text = clean_message(e)
        op = find_op(text)
        if op:
            raise UnsupportedOpError(
                "onnx-web", op, f"onnxruntime cannot run {op}: {text}", Stage.LOWER
            ) from e
        raise ExportError(Stage.LOWER, "onnx-web", f"onnxruntime cannot load or run the model: {text}") from e
    return {"opset": opsets.get("ai.onnx"), "ops": [f"{d}::{o}" if d != "ai.onnx" else o for d, o in ops]}


def onnxruntime_web_dir() -> tuple[Path | None, str]:
    """(onnxruntime-web package folder, reason when absent). ``KDMOBILE_ORT_WEB`` overrides the path."""
    if shutil.which("node") is None:
        return None, "Node.js not found: install nodejs to run the artifact in onnxruntime-web's wasm build"
    d = Path(os.environ.get("KDMOBILE_ORT_WEB", REPO / "demo_app" / "node_modules" / "onnxruntime-web"))
    if not (d / "dist" / "ort.wasm.min.mjs").is_file():
        return (
            None,
            f"onnxruntime-web not installed at {d} (run `make setup`, which runs npm ci in demo_app/)",
        )
    return d, ""


def _node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout.strip()


# Runs every sample through onnxruntime-web's wasm backend; inputs/outputs as raw little-endian files.
_WASM_RUNNER = r"""
import fs from 'node:fs';
import { pathToFileURL } from 'node:url';
const [,, ortFile, modelPath, jobPath] = process.argv;
const ort = await import(pathToFileURL(ortFile).href);
ort.env.wasm.numThreads = 1;
const job = JSON.parse(fs.readFileSync(jobPath, 'utf8'));
const sess = await ort.InferenceSession.create(new Uint8Array(fs.readFileSync(modelPath)), { executionProviders: ['wasm'] });
const ARR = { int64: BigInt64Array, int32: Int32Array, float32: Float32Array };
const inputs = job.inputs.map((s) => {
  const buf = fs.readFileSync(s.file);
  return { ...s, data: new ARR[s.dtype](buf.buffer, buf.byteOffset, buf.byteLength / ARR[s.dtype].BYTES_PER_ELEMENT) };
});
const per = inputs.map((s) => s.shape.reduce((a, b) => a * b, 1));
const chunks = [];
for (let k = 0; k < job.n; k++) {
  const feeds = {};
  inputs.forEach((s, i) => { feeds[s.name] = new ort.Tensor(s.dtype, s.data.slice(k * per[i], (k + 1) * per[i]), s.shape); });
  const res = await sess.run(feeds);
  chunks.push(Float32Array.from(res[sess.outputNames[0]].data));
}
const total = chunks.reduce((a, c) => a + c.length, 0);
const flat = new Float32Array(total);
let off = 0;
for (const c of chunks) { flat.set(c, off); off += c.length; }
fs.writeFileSync(job.output, Buffer.from(flat.buffer));
"""


def run_in_wasm(path: Path, spec: ModelSpec, ort_dir: Path, timeout: float = 300.0) -> dict[str, np.ndarray]:
    """Outputs of the ``.onnx`` at ``path`` in onnxruntime-web's wasm build, per validation split."""
    outputs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runner = Path(tmp) / "run.mjs"
        runner.write_text(_WASM_RUNNER)
        for split, samples in spec.validation.items():
            n = len(samples[0])
            job: dict[str, Any] = {"n": n, "inputs": [], "output": str(Path(tmp) / f"{split}.out")}
            for s, x in zip(spec.inputs, samples, strict=True):
                f = Path(tmp) / f"{split}.{s.name}.bin"
                np.ascontiguousarray(x.astype(s.dtype)).tofile(f)
                job["inputs"].append(
                    {"name": s.name, "dtype": s.dtype, "shape": list(s.shape), "file": str(f)}
                )
            (Path(tmp) / "job.json").write_text(json.dumps(job))
            proc = subprocess.run(
                [
                    "node",
                    str(runner),
                    str(ort_dir / "dist" / "ort.wasm.min.mjs"),
                    str(path),
                    str(Path(tmp) / "job.json"),
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"onnxruntime-web (wasm) failed: {proc.stderr.strip()[-800:]}")
            outputs[split] = np.fromfile(job["output"], dtype=np.float32).reshape(
                (n, *spec.outputs[0].shape[1:])
            )
    return outputs
