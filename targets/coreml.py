"""Core ML target: coremltools ML program (``.mlpackage``), converted from ``torch.export``.

    kdmobile export build/email/student.safetensors --target coreml -o build/export

- fp32: ``compute_precision=FLOAT32`` (asked for explicitly: close comparisons need it);
- fp16: Core ML's default ML-program compute precision;
- recurrent layers (GRU, LSTM, RNN) are decomposed into matmuls and activations first (the converter
  has no lowering for the fused ``aten.gru`` / ``aten.lstm`` ops), and so are the ``Tensor.new_*``
  factories (``new_ones`` in transformers' attention-mask helpers);
- int8: the fp16 program with int8 weight compression (``coremltools.optimize.coreml``,
  per-channel symmetric linear quantization of every weight with >= 512 elements; in a small model whose
  largest weight is smaller, that largest weight and any as large, so an int8 artifact always stores int8).

Integer inputs are int32 in Core ML (its multi-arrays have no int64). Prediction needs macOS: on any other
system ``load`` raises ``RuntimeUnavailable`` with that reason and the artifact is only
*conversion-validated*: its saved spec is loaded back and checked (ML program, input/output names, shapes,
dtypes; int8: the weights really are stored as int8). On macOS it runs and is validated like the others.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from kdmobile.export.base import (
    ArtifactRuntime,
    ExportError,
    ModelSpec,
    RuntimeUnavailable,
    Stage,
    Target,
    TensorSpec,
    register_target,
)

# Core ML multi-array types (coremltools proto FeatureTypes_pb2.ArrayFeatureType) → numpy.
_ARRAY_TYPES = {65568: "float32", 65600: "float64", 65552: "float16", 131104: "int32", 131080: "int8"}
_INT_DTYPES = {"int64": "int32", "int32": "int32"}


def _decompositions() -> dict[Any, Any]:
    """PyTorch's own decompositions of the ops the converter's torch.export front end has no lowering for;
    every other op is kept as it is.

    - the fused RNN ops (``aten.gru.input``, ``lstm``, ``rnn_*``): "Unsupported fx node gru";
    - the ``Tensor.new_*`` factories (``aten.new_ones``, ``new_zeros``, ``new_full``, ``new_empty``):
      "Unsupported fx node new_ones" on transformers' BERT/MiniLM, whose mask helpers call
      ``q_idx.new_ones(())``; they decompose to ``aten.full`` / ``empty``, which it converts;
    - the Python operators ``a & b`` / ``a | b`` on bool masks (``aten.__and__`` / ``__or__``, same
      helpers: "Unsupported fx node and_1, kind __and__"): PyTorch has no decomposition for them, so they
      are rewritten to ``logical_and`` / ``logical_or``, which the converter has (its ``bitwise_and`` also
      takes bool inputs only).
    """
    import torch
    from torch._decomp import get_decompositions

    aten = torch.ops.aten
    table = get_decompositions(
        [
            *(aten.gru.input, aten.lstm.input, aten.rnn_tanh.input, aten.rnn_relu.input),
            *(aten.new_ones, aten.new_zeros, aten.new_full, aten.new_empty),
        ]
    )

    def _bool_op(logical: Any, bitwise: Any) -> Any:
        def op(a: Any, b: Any) -> Any:
            both_bool = a.dtype == torch.bool and getattr(b, "dtype", None) == torch.bool
            return logical(a, b) if both_bool else bitwise(a, b)

        return op

    table[aten.__and__.Tensor] = _bool_op(aten.logical_and.default, aten.bitwise_and.Tensor)
    table[aten.__or__.Tensor] = _bool_op(aten.logical_or.default, aten.bitwise_or.Tensor)
    return table


def _macos_reason() -> str:
    return f"Core ML prediction needs macOS; this machine runs {platform.system()} {platform.machine()}"


@register_target
class CoreMLTarget(Target):
    name = "coreml"
    suffix = ".mlpackage"
    runtime = "Core ML (macOS/iOS)"
    requires = ("coremltools",)
    packages = ("coremltools",)
    precisions = ("fp32", "fp16", "int8")
    is_dir_artifact = True
    runtime_dist = "coremltools"
    report_order, colour = 1, "#9467bd"
    op_patterns = (r"Unsupported fx node (\w+)", r"lowering for Torch `(\w+)` op")

    def export(
        self, model: Any, spec: ModelSpec, out: Path, precision: str, variant: str | None = None
    ) -> dict[str, Any]:
        import torch

        with self.stage(Stage.EXPORT):
            ep = torch.export.export(model, spec.torch_example_inputs(), strict=False)
            ep = ep.run_decompositions(_decompositions())
        with self.stage(Stage.LOWER):
            import coremltools as ct

            inputs = [
                ct.TensorType(
                    name=s.name, shape=s.shape, dtype=np.dtype(_INT_DTYPES.get(s.dtype, s.dtype)).type
                )
                for s in spec.inputs
            ]
            outputs = [ct.TensorType(name=s.name) for s in spec.outputs]
            mlmodel = ct.convert(
                ep,
                convert_to="mlprogram",
                inputs=inputs,
                outputs=outputs,
                compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
                minimum_deployment_target=ct.target.iOS16,
            )
            if precision == "int8":
                import coremltools.optimize.coreml as cto

                config = cto.OptimizationConfig(
                    global_config=cto.OpLinearQuantizerConfig(
                        mode="linear_symmetric",
                        dtype="int8",
                        granularity="per_channel",
                        weight_threshold=min(
                            512, max((p.numel() for p in model.parameters()), default=513) - 1
                        ),
                    )
                )
                mlmodel = cto.linear_quantize_weights(mlmodel, config)
        with self.stage(Stage.SERIALIZE):
            mlmodel.short_description = f"kdmobile {spec.task} student ({precision})"
            mlmodel.save(str(out))
        with self.stage(Stage.LOAD):
            checks = self.check_spec(out, spec, precision)
        flavour = {"fp32": "mlprogram-fp32", "fp16": "mlprogram-fp16", "int8": "mlprogram-fp16-int8-weights"}[
            precision
        ]
        return {"flavour": flavour, "spec_check": checks, "minimum_deployment_target": "iOS16"}

    def check_spec(self, path: Path, spec: ModelSpec, precision: str) -> dict[str, Any]:
        """Load the saved package's spec; names, shapes, dtypes and (int8) weight storage must be right."""
        import coremltools as ct

        mspec = ct.utils.load_spec(str(path))
        problems = []
        if mspec.WhichOneof("Type") != "mlProgram":
            problems.append(f"not an ML program ({mspec.WhichOneof('Type')})")
        ins, outs = self.inspect(path)
        want_in = [TensorSpec(s.name, s.shape, _INT_DTYPES.get(s.dtype, s.dtype)) for s in spec.inputs]
        if ins != want_in:
            problems.append(f"inputs {ins} != expected {want_in}")
        want_out = [TensorSpec(s.name, s.shape, s.dtype) for s in spec.outputs]
        if [(o.name, o.shape) for o in outs] != [(o.name, o.shape) for o in want_out]:
            problems.append(f"outputs {outs} != expected {want_out}")
        if any(o.dtype not in ("float32", "float16") for o in outs):
            problems.append(f"outputs are not floating point: {outs}")
        ops = _op_counts(mspec)
        if precision == "int8" and not any("dequantize" in op for op in ops):
            problems.append("int8 weight compression left no dequantize ops: weights are not stored as int8")
        if problems:
            raise ExportError(Stage.LOAD, self.name, "spec check failed: " + "; ".join(problems))
        return {
            "inputs": [s.to_dict() for s in ins],
            "outputs": [s.to_dict() for s in outs],
            "spec_version": int(mspec.specificationVersion),
            "ops": ops,
        }

    def bundle_snippet(self, sidecar: dict[str, Any], sidecars: dict[str, dict[str, Any]]) -> str:
        inp, out = sidecar["inputs"][0], sidecar["outputs"][0]
        stem = sidecar["artifact"].removesuffix(".mlpackage")
        kind = ".int32" if inp["dtype"].startswith("int") else ".float32"
        return f"""## iOS (Swift, Core ML)

Add the `.mlpackage` to the Xcode target (Xcode compiles it to `{stem}.mlmodelc` in the app bundle).
Minimum deployment target: iOS 16.

```swift
import CoreML

let url = Bundle.main.url(forResource: "{stem}", withExtension: "mlmodelc")!
let config = MLModelConfiguration()
config.computeUnits = .all
let model = try MLModel(contentsOf: url, configuration: config)

let x = try MLMultiArray(shape: [{", ".join(str(d) for d in inp["shape"])}], dataType: {kind})   // `{inp["name"]}`: {inp["dtype"]}
for (i, v) in values.enumerated() {{ x[i] = NSNumber(value: v) }}
let input = try MLDictionaryFeatureProvider(dictionary: ["{inp["name"]}": MLFeatureValue(multiArray: x)])
let output = try model.prediction(from: input)
let scores = output.featureValue(for: "{out["name"]}")!.multiArrayValue!   // {out["dtype"]}{out["shape"]}
```
"""

    def runtime_availability(self) -> tuple[bool, str]:
        ok, reason = self.availability()
        if not ok:
            return ok, reason
        if platform.system() != "Darwin":
            return False, _macos_reason()
        return True, ""

    def load(self, path: Path, threads: int = 1) -> CoreMLRuntime:
        ok, reason = self.runtime_availability()
        if not ok:
            raise RuntimeUnavailable(reason)
        return CoreMLRuntime(Path(path), self.inspect(path))

    def inspect(self, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        import coremltools as ct

        desc = ct.utils.load_spec(str(path)).description

        def specs(features: Any) -> list[TensorSpec]:
            out = []
            for f in features:
                arr = f.type.multiArrayType
                out.append(
                    TensorSpec(
                        f.name,
                        tuple(int(d) for d in arr.shape),
                        _ARRAY_TYPES.get(arr.dataType, str(arr.dataType)),
                    )
                )
            return out

        return specs(desc.input), specs(desc.output)


class CoreMLRuntime(ArtifactRuntime):
    """``coremltools.models.MLModel.predict`` (macOS only)."""

    def __init__(self, path: Path, io: tuple[list[TensorSpec], list[TensorSpec]]) -> None:
        import coremltools as ct

        self._model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        super().__init__(*io)

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        feeds = {s.name: x for s, x in zip(self.inputs, self.cast(inputs), strict=True)}
        res = self._model.predict(feeds)
        return [np.asarray(res[s.name], dtype=np.float32) for s in self.outputs]


def _op_counts(mspec: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for fn in mspec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                counts[op.type] = counts.get(op.type, 0) + 1
    return dict(sorted(counts.items()))
