"""TFLite / LiteRT target: litert-torch conversion to ``.tflite``, run with ai-edge-litert's interpreter.

    kdmobile export build/email/student.safetensors --target tflite -o build/export

- fp32: ``litert_torch.convert(model, sample).export(path)``. int64 inputs become int32 in the file.
- int8, for models with embedding tables, first the int8-rows variants (``targets/_int8_rows.py``): each
  table of 2+ columns stored as int8 with one scale per table (``rows-per-tensor``) or, if that misses the
  tolerance, per row (``rows-per-row``), looked up with ``GATHER`` on the int8 table, ``CAST`` and
  ``MUL``; the fully connected layers dynamic-range int8 (ai-edge-quantizer) when they hold at least
  ``FC_MIN_SHARE`` of the weights, else fp32 (hybrid kernels at batch 1 cost more than they save on
  small layers). Flavour ``...+embedding-int8-rows-per-tensor``. Models without tables skip them.
- int8 (dynamic-range): the fp32 model quantized by ai-edge-quantizer's ``dynamic_wi8_afp32`` recipe
  (int8 weights, including the embedding table; activations quantized per call). If that misses the
  tolerance, ``weight_only_wi8_afp32`` (int8 weights, float compute: MobileNetV3-Small went from 16.7 dB to
  22.7 dB), then the fully connected layers only with the embedding table in float32. litert-torch's own PT2E dynamic
  quantizer converts too, but the interpreter refuses its embedding (``EMBEDDING_LOOKUP failed to
  prepare``, measured on this project's machines), so it is not used.
- int8-full (full-integer): PT2E static quantization with litert-torch's ``PT2EQuantizer`` (int8 weights
  and activations, calibrated on real samples). Its float inputs and outputs become int8 tensors; the
  runtime quantizes float inputs and dequantizes outputs with each tensor's own scale and zero point.
  litert-torch's GRU annotator raises on a GRU called without an initial state (IndexError) or whose
  sequence output is unused (AssertionError); the exporter then quantizes a copy whose ``nn.GRU`` is
  written with basic ops (``targets/_rnn.py``; flavour ``+unrolled-gru``).
- int8-qat: a program already quantized by quantization-aware training (``kdmobile compress qat``:
  litert-torch's PT2E quantizer in QAT mode, KD fine-tuning, ``convert_pt2e``), converted as it is:
  its trained scales and zero points, no calibration. Not in the default set (it needs that program).

The flavour actually written is recorded in the metadata (``flavour``).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kdmobile.export.base import (
    ArtifactRuntime,
    ExportError,
    ModelSpec,
    Stage,
    Target,
    TensorSpec,
    register_target,
)
from targets._int8_rows import has_tables, int8_row_embeddings, linear_share
from targets._rnn import has_gru, unroll_grus

# int8 variants whose embedding tables are gathered as int8 rows (targets/_int8_rows.py), tried first.
ROWS_VARIANTS = ("rows-per-tensor", "rows-per-row")
# With int8 rows, fully connected layers holding less than this share of the weights stay fp32: at batch 1
# a small hybrid (dynamic-range) FC costs more than it saves (the email student, FCs 1.3% of the weights:
# 1.00x and 1.06x fp32 with hybrid FCs in two runs, 0.98x without) and its bytes hardly matter. Above it
# (a transformer's matmuls) they are int8.
FC_MIN_SHARE = 0.10


@register_target
class TFLiteTarget(Target):
    name = "tflite"
    suffix = ".tflite"
    runtime = "ai-edge-litert interpreter"
    requires = ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")
    # No threshold of its own: the default latency_pct (15 %) holds since its ratio divides by the fixed
    # reference exported through this target and timed in the same runtime and process
    # (kdmobile.harness.reference.runtime_reference). Measured false alarms on unchanged artifacts
    # (`make bench-check`, 2026-12-02, load average 4.7-22.4 on 2 shared cores): 0 in 40 checks, 20 of
    # them with two CPU hogs; ratio moves -0.1% to +7.3%. Against the eager PyTorch student
    # it had drifted up to +-23 % and needed a 30 % margin, which let +50 % slowdowns through.
    # int8 is not in that benchmark; in tests/test_check_regression.py under two CPU hogs it moved -11.5 %.
    packages = ("litert-torch", "ai-edge-litert", "ai-edge-quantizer")
    precisions = ("fp32", "int8", "int8-full", "int8-qat")
    # Full-integer is opt-in (--precision int8-full): on the email student's real held-out emails it kept
    # 97.8% top-1, under the int8 bar, while dynamic-range kept 98.8%.
    default_precisions = ("fp32", "int8")
    runtime_dist = "ai-edge-litert"
    report_order, colour = 2, "#2ca02c"
    op_patterns = (
        r"Lowering not found: (\S+)",  # litert-torch
        r"\(([A-Z][A-Z0-9_]+)\) failed to (?:prepare|invoke)",  # the LiteRT interpreter
    )

    def variants(self, precision: str) -> tuple[str | None, ...]:
        # Tried in order until one validates. int8-rows first (models with embedding tables only): int8
        # tables gathered as int8 rows, then CAST and MUL; as fast as fp32 on the email student where the
        # all-hybrid default was 3.3x (docs/compress.md). Then int8 compute; then int8 weights with float
        # compute (no on-the-fly activation rounding, the main loss on hard-swish/SE CNNs and attention);
        # last, the fully connected layers only (embedding in float).
        return (*ROWS_VARIANTS, "dynamic", "weight-only", "fc") if precision == "int8" else (None,)

    def variant_applies(self, variant: str | None, model: Any) -> bool:
        return variant not in ROWS_VARIANTS or has_tables(model)

    def export(
        self, model: Any, spec: ModelSpec, out: Path, precision: str, variant: str | None = None
    ) -> dict[str, Any]:
        example = spec.torch_example_inputs()
        if precision == "int8-full":
            return self._export_full_integer(model, spec, out)
        if precision == "int8-qat":
            return self._export_qat(model, spec, out)
        rows: dict[str, Any] | None = None
        if precision == "int8" and variant in ROWS_VARIANTS:
            with self.stage(Stage.EXPORT):
                share = linear_share(model)
                model, rows = int8_row_embeddings(model, per_row=variant == "rows-per-row", how="cast")
                rows["linear_share"] = share
        with self.stage(Stage.EXPORT), _quiet():
            import litert_torch

            edge = litert_torch.convert(model, sample_kwargs=_kwargs(spec, example))
        if precision == "fp32" or (rows is not None and rows["linear_share"] < FC_MIN_SHARE):
            with self.stage(Stage.SERIALIZE), _quiet():
                edge.export(str(out))
            if rows is None:
                return {"flavour": "fp32"}
            share = rows["linear_share"]
            flavour = f"fp32 fully-connected ({100 * share:.1f}% of the weights)" + rows.pop("flavour")
            return {"flavour": flavour, "embedding_quantization": rows}
        fc_only = variant == "fc" or rows is not None
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fp32.tflite"
            with self.stage(Stage.SERIALIZE), _quiet():
                edge.export(str(fp32))
            with self.stage(Stage.LOWER), _quiet():
                from ai_edge_quantizer import quantizer, recipe

                qt = quantizer.Quantizer(str(fp32))
                if fc_only:
                    from ai_edge_quantizer import recipe_manager
                    from ai_edge_quantizer.qtyping import TFLOperationName

                    rm = recipe_manager.RecipeManager()
                    rm.add_dynamic_config(
                        regex=".*", operation_name=TFLOperationName.FULLY_CONNECTED, num_bits=8
                    )
                    qt.load_quantization_recipe(rm.get_quantization_recipe())
                elif variant == "weight-only":
                    qt.load_quantization_recipe(recipe.weight_only_wi8_afp32())
                else:
                    qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
                result = qt.quantize()
            with self.stage(Stage.SERIALIZE):
                out.write_bytes(bytes(result.quantized_model))
        if rows is not None:
            flavour = "dynamic-range-int8 fully-connected (ai-edge-quantizer)" + rows.pop("flavour")
            return {"flavour": flavour, "embedding_quantization": rows}
        if variant == "fc":
            return {"flavour": "dynamic-range-int8 fully-connected only, fp32 embedding (ai-edge-quantizer)"}
        if variant == "weight-only":
            return {"flavour": "weight-only-int8, float compute (ai-edge-quantizer weight_only_wi8_afp32)"}
        return {"flavour": "dynamic-range-int8 (ai-edge-quantizer dynamic_wi8_afp32)"}

    def _export_full_integer(self, model: Any, spec: ModelSpec, out: Path) -> dict[str, Any]:
        try:
            return self._full_integer(model, spec, out)
        except ExportError as e:
            # litert-torch's PT2E GRU annotator needs an explicit initial state and both GRU outputs used
            # (else IndexError / AssertionError); the GRU written with basic ops quantizes like any matmul.
            if e.stage != Stage.EXPORT or not has_gru(model):
                raise
            model, unrolled = unroll_grus(model)
            details = self._full_integer(model, spec, out)
            details["flavour"] += " +unrolled-gru"
            details["rnn_unrolled"] = {"modules": unrolled, "why": e.detail[:200]}
            return details

    def _full_integer(self, model: Any, spec: ModelSpec, out: Path) -> dict[str, Any]:
        import torch

        example = spec.torch_example_inputs()
        with self.stage(Stage.EXPORT), _quiet():
            import litert_torch
            from litert_torch.quantize import pt2e_quantizer
            from litert_torch.quantize.quant_config import QuantConfig
            from torchao.quantization.pt2e import quantize_pt2e

            quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
                pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
            )
            prepared = quantize_pt2e.prepare_pt2e(torch.export.export(model, example).module(), quantizer)
            with torch.no_grad():
                for sample in spec.calibration_samples():
                    prepared(*(torch.from_numpy(np.ascontiguousarray(x)) for x in sample))
            converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        with self.stage(Stage.LOWER), _quiet():
            edge = litert_torch.convert(
                converted, example, quant_config=QuantConfig(pt2e_quantizer=quantizer)
            )
        with self.stage(Stage.SERIALIZE), _quiet():
            edge.export(str(out))
        return {"flavour": "full-integer-int8 (litert-torch PT2E static)"}

    def _export_qat(self, model: Any, spec: ModelSpec, out: Path) -> dict[str, Any]:
        """Convert a QAT-trained ``convert_pt2e`` program (``kdmobile compress qat``) with its trained ranges."""
        from kdmobile.compress.qat import is_quantized_program

        if not is_quantized_program(model):
            raise self.error(
                Stage.EXPORT,
                "int8-qat takes the quantized program of `kdmobile compress qat`, not a float model",
            )
        with self.stage(Stage.LOWER), _quiet():
            import litert_torch
            from litert_torch.quantize import pt2e_quantizer
            from litert_torch.quantize.quant_config import QuantConfig

            # The converter reads only whether the quantizer is static: the ranges are the program's own.
            static = pt2e_quantizer.PT2EQuantizer().set_global(
                pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
            )
            edge = litert_torch.convert(
                model, spec.torch_example_inputs(), quant_config=QuantConfig(pt2e_quantizer=static)
            )
        with self.stage(Stage.SERIALIZE), _quiet():
            edge.export(str(out))
        return {"flavour": "full-integer-int8 QAT (litert-torch PT2E, trained ranges)"}

    def bundle_snippet(self, sidecar: dict[str, Any], sidecars: dict[str, dict[str, Any]]) -> str:
        from kdmobile.export.bundle import kotlin_array

        inp, out = sidecar["inputs"][0], sidecar["outputs"][0]
        arr = kotlin_array(inp["dtype"])
        length, classes = inp["shape"][-1], out["shape"][-1]
        int64_note = " (not int64: LiteRT stores int64 inputs as int32)" if inp["dtype"] == "int32" else ""
        text = f"""## Android (Kotlin, LiteRT)

Add LiteRT (Maven `com.google.ai.edge.litert:litert`). The interpreter API:

```kotlin
import org.tensorflow.lite.Interpreter

val interpreter = Interpreter(File(context.filesDir, "{sidecar["artifact"]}"), Interpreter.Options().setNumThreads(2))
val input0 = Array(1) {{ {arr}({length}) }}     // {inp["dtype"]}{inp["shape"]}{int64_note}
val scores = Array(1) {{ FloatArray({classes}) }}
interpreter.run(input0, scores)                  // input `{inp["name"]}`, output `{out["name"]}`
```
"""
        full = sidecars.get("int8-full")
        if full is not None:
            o = full["outputs"][0]
            text += f"""
`{full["artifact"]}` is full-integer: its output `{o["name"]}` is `{o["dtype"]}{o["shape"]}`. Read it as
bytes and dequantize with the tensor's own parameters:

```kotlin
val q = Array(1) {{ ByteArray({classes}) }}
interpreter.run(input0, q)
val p = interpreter.getOutputTensor(0).quantizationParams()
val scores = FloatArray({classes}) {{ (q[0][it] - p.zeroPoint) * p.scale }}
```
"""
        return text

    def load(self, path: Path, threads: int = 1) -> TFLiteRuntime:
        return TFLiteRuntime(Path(path), threads)

    def inspect(self, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        rt = TFLiteRuntime(Path(path), 1)
        return rt.inputs, rt.outputs


class TFLiteRuntime(ArtifactRuntime):
    """ai-edge-litert ``Interpreter`` on the file; quantized outputs are dequantized to float32.

    A full-integer model of a float input (int8-full, int8-qat) has an int8 input tensor: float inputs
    are quantized with that tensor's own scale and zero point (a plain cast would truncate them).
    """

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._it = Interpreter(model_path=str(path), num_threads=int(threads))
        self._it.allocate_tensors()
        ins, outs = self._it.get_input_details(), self._it.get_output_details()
        self._in_idx = [d["index"] for d in ins]
        self._in_q = [d.get("quantization", (0.0, 0)) for d in ins]
        self._out = [(d["index"], d.get("quantization", (0.0, 0))) for d in outs]
        names = _signature_names(self._it)
        super().__init__([_spec(d, names) for d in ins], [_spec(d, names) for d in outs])

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        if len(inputs) == len(self._in_q):
            inputs = tuple(
                _quantize(x, q, s.dtype) for x, q, s in zip(inputs, self._in_q, self.inputs, strict=True)
            )
        for idx, x in zip(self._in_idx, self.cast(inputs), strict=True):
            self._it.set_tensor(idx, x)
        self._it.invoke()
        res = []
        for idx, (scale, zero) in self._out:
            y = self._it.get_tensor(idx)
            if scale and y.dtype != np.float32:
                y = (y.astype(np.float32) - np.float32(zero)) * np.float32(scale)
            res.append(np.array(y, copy=True))
        return res


def _quantize(x: np.ndarray, quantization: tuple[float, int], dtype: str) -> np.ndarray:
    """A float input for a quantized (full-integer) input tensor: ``round(x / scale) + zero_point``, clipped.

    A plain dtype cast would turn pixels in [0, 1) into 0s (the input of a full-integer MNIST CNN is int8
    with scale 1/256 and zero point -128), and every sample would give the same logits.
    """
    scale, zero = quantization
    if not scale or not np.issubdtype(x.dtype, np.floating) or not np.issubdtype(np.dtype(dtype), np.integer):
        return x
    info = np.iinfo(np.dtype(dtype))
    q = np.round(x.astype(np.float32) / np.float32(scale)) + zero
    return np.clip(q, info.min, info.max).astype(dtype)


def _kwargs(spec: ModelSpec, example: tuple[Any, ...]) -> dict[str, Any]:
    """Sample inputs by name, so the ``.tflite`` signature's inputs carry the model's input names."""
    return dict(zip(spec.input_names, example, strict=True))


def _signature_names(it: Any) -> dict[int, str]:
    """Tensor index → signature name (``ids``, ``output_0``) of the default signature, when it has one."""
    try:
        runner = it.get_signature_runner()
        details = {**runner.get_input_details(), **runner.get_output_details()}
        return {int(d["index"]): name for name, d in details.items()}
    except Exception:  # noqa: BLE001 - a model without signatures keeps its tensor names
        return {}


def _spec(d: dict[str, Any], names: dict[int, str]) -> TensorSpec:
    name = names.get(int(d["index"]), d["name"])
    return TensorSpec(name, tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"]).name)


@contextlib.contextmanager
def _quiet():
    """litert-torch prints a progress tree to stdout for every conversion; keep the CLI output readable."""
    if os.environ.get("KDMOBILE_VERBOSE"):
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield
