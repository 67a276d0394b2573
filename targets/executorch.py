"""ExecuTorch target: ``torch.export`` → ``to_edge_transform_and_lower`` (XNNPACK) → ``.pte``.

    kdmobile export build/email/student.safetensors --target executorch --precision fp32 int8 -o build/export

- fp32: the eager graph lowered to XNNPACK; ops XNNPACK does not take stay on the portable CPU kernels.
- int8 of a model with embedding tables, first: the int8-rows variants (``targets/_int8_rows.py``). Each
  table of 2+ columns is stored as int8 with one scale per table (``rows-per-tensor``) or, if that misses
  the tolerance, one per row (``rows-per-row``); the lookup is ``aten::embedding`` on the int8 table (a byte
  copy per id) followed by ``dequantize_per_tensor``, which XNNPACK delegates as an int8 -> fp32 convert
  (per-row scales: gathered and multiplied in). Linears: the quantizer's dynamic mode (below). Flavour
  ``xnnpack-pt2e-dynamic-int8+embedding-int8-rows-per-tensor``. On the email student it runs at 0.95x the
  fp32 program's time (``+embedding-byte``: 2.3x) at 0.26x its size (docs/compress.md). Models without
  such a table skip these variants.
- int8, otherwise (or when the int8-rows variants miss the tolerance): two parts, because XNNPACK's PT2E
  quantizer only covers the matmuls.
  * Embedding tables (96% of the email student's weights, which ``XNNPACKQuantizer`` leaves in fp32) are
    quantized before export to int8 weight-only, one symmetric scale per row (torchao
    ``IntxWeightOnlyConfig``, ``PerAxis(0)``), and gathered with ``quantized_decomposed::embedding_byte``
    on ExecuTorch's portable quantized kernels (``executorch.kernels.quantized`` registers them; importing
    it before loading is required, or loading fails with a missing operator). Tables one column wide
    (the reading gate) stay fp32: a per-row fp32 scale would outweigh the row. The email student drops
    from ~4.1 MiB to ~1.2 MiB; ``details.embedding_quantization`` lists what was quantized and the
    flavour ends in ``+embedding-byte``.
    If that misses the validation bar, a last variant keeps the table in fp32 (``dynamic-fp32-embedding``).
  * Integer index arithmetic (``arange(n) + 0`` in transformers' mask helpers) is kept integer before
    quantization: the quantizer would lift its scalar into a float32 buffer (``_keep_integer_scalars``).
  * Linear layers: PT2E static quantization with ``XNNPACKQuantizer`` (per-channel symmetric weights,
    int8 activations), calibrated on real samples, then lowered the same way. If that artifact fails
    validation, the runner falls back to the quantizer's dynamic mode (int8 weights, activations
    quantized per call, no calibration); the static attempt's numbers stay in ``details.attempts`` and
    the flavour says which; if the dynamic lowering fails (XNNPACK's channels-last pass on MobileViT's
    dynamically quantized convolutions), ``dynamic-linear`` quantizes the Linear layers only. On the email
    student static int8 sits right at the 98% top-1 bar (97.5-98.8% on real held-out emails depending on
    the calibration set: generated emails calibrate ranges the hand-written ones exceed); dynamic keeps 99.7%.
- int8-qat: a program already quantized by quantization-aware training (``kdmobile compress qat``:
  ``prepare_qat_pt2e`` with this quantizer in QAT mode, KD fine-tuning, ``convert_pt2e``), lowered as it is:
  its trained scales and zero points, no calibration. Not in the default set (it needs that program).

The details record delegated vs non-delegated operators; every op left on the portable path is listed
under ``portable_ops`` and flagged in the summary (the int8 gather shows up as
``quantized_decomposed_embedding_byte_default``). Threads are set before loading (changing them after a
program is loaded crashed the process, measured on this project's machines).
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from kdmobile.export.base import ArtifactRuntime, ModelSpec, Stage, Target, TensorSpec, register_target
from targets._int8_rows import has_tables, int8_row_embeddings, swap_tables

# int8 variants that gather int8 rows and dequantize them in XNNPACK (targets/_int8_rows.py), tried first.
ROWS_VARIANTS = ("rows-per-tensor", "rows-per-row")

# c10::ScalarType codes (executorch/runtime/core/portable_type/scalar_type.h) and their repr names.
_DTYPES = {
    0: "uint8",
    1: "int8",
    2: "int16",
    3: "int32",
    4: "int64",
    5: "float16",
    6: "float32",
    7: "float64",
    11: "bool",
}
_DTYPES.update({"Byte": "uint8", "Char": "int8", "Short": "int16", "Int": "int32", "Long": "int64"})
_DTYPES.update({"Half": "float16", "Float": "float32", "Double": "float64", "Bool": "bool"})


@register_target
class ExecuTorchTarget(Target):
    name = "executorch"
    suffix = ".pte"
    runtime = "executorch (XNNPACK)"
    requires = ("executorch", "torchao")
    # No threshold of its own: the default latency_pct (15 %) holds since its ratio divides by the fixed
    # reference exported through this target and timed in the same runtime and process
    # (kdmobile.harness.reference.runtime_reference). Measured false alarms on unchanged artifacts
    # (`make bench-check`, 2026-12-02, load average 4.7-22.4 on 2 shared cores): 0 in 40 checks, 20 of
    # them with two CPU hogs; ratio moves +1.1% to +6.1%. Against the eager PyTorch student
    # it had drifted up to +-23 % and needed a 30 % margin, which let +50 % slowdowns through.
    packages = ("executorch", "torchao")
    precisions = ("fp32", "int8", "int8-qat")
    default_precisions = ("fp32", "int8")  # int8-qat needs a QAT-trained program (kdmobile compress qat)
    runtime_dist = "executorch"
    report_order, colour = 0, "#1f77b4"
    # Checked on the installed versions (tests/test_export_failure.py).
    op_patterns = (
        r"Operator torch\._ops\.(\S+?) is not in Core ATen opset",  # to_edge
        r"Missing operator: \[\d+\] (\S+)",  # the runtime, at load_method
    )

    def variants(self, precision: str) -> tuple[str | None, ...]:
        # Tried in order until one passes validation. The int8-rows variants come first: they are as
        # fast as fp32 where ``embedding_byte`` is 2-3x slower (module docstring); models without embedding
        # tables skip them (``variant_applies``). The last keeps the embedding table in fp32 (a bigger file,
        # but the matmuls alone rarely flip a decision).
        # "dynamic-linear" quantizes the Linear layers only: XNNPACK's ChannelsLastTaggedReshapePass fails on
        # dynamically quantized convolutions feeding a transformer block (MobileViT: "required rank 4 tensor
        # to use channels_last format", executorch 1.5.1), so the convolutions stay fp32 there.
        if precision != "int8":
            return (None,)
        return (*ROWS_VARIANTS, "static", "dynamic", "dynamic-linear", "dynamic-fp32-embedding")

    def variant_applies(self, variant: str | None, model: Any) -> bool:
        return variant not in ROWS_VARIANTS or has_tables(model)

    def export(
        self, model: Any, spec: ModelSpec, out: Path, precision: str, variant: str | None = None
    ) -> dict[str, Any]:
        import torch

        if precision == "int8-qat":
            return self._export_qat(model, spec, out)
        example = spec.torch_example_inputs()
        dynamic = variant in ("dynamic", "dynamic-linear", "dynamic-fp32-embedding", *ROWS_VARIANTS)
        embeddings: dict[str, Any] = {"quantized": {}}
        with self.stage(Stage.EXPORT):
            if variant in ROWS_VARIANTS:
                model, embeddings = int8_row_embeddings(
                    model, per_row=variant == "rows-per-row", how="xnnpack"
                )
            elif precision == "int8" and variant != "dynamic-fp32-embedding":
                model, embeddings = _byte_embeddings(model)
            ep = torch.export.export(model, example, strict=False)
            if precision == "int8":
                ep = self._quantize(ep, spec, dynamic, linear_only=variant == "dynamic-linear")
        with self.stage(Stage.LOWER):
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
            delegation = _delegation(edge.exported_program().graph_module)
        with self.stage(Stage.SERIALIZE):
            program = edge.to_executorch()
            with open(out, "wb") as f:
                program.write_to_file(f)
        flavour = "xnnpack-fp32"
        details: dict[str, Any] = {"delegation": delegation, "portable_ops": delegation["portable_ops"]}
        if precision == "int8":
            flavour = "xnnpack-pt2e-dynamic-int8" if dynamic else "xnnpack-pt2e-static-int8"
            if variant == "dynamic-linear":
                flavour += " linear-only (fp32 convolutions)"
            details["embedding_quantization"] = embeddings
            if embeddings["quantized"]:
                flavour += embeddings.pop("flavour") if variant in ROWS_VARIANTS else "+embedding-byte"
        return {"flavour": flavour, **details}

    def _export_qat(self, model: Any, spec: ModelSpec, out: Path) -> dict[str, Any]:
        """Lower a QAT-trained ``convert_pt2e`` program as it is: its trained int8 ranges, no calibration."""
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        from kdmobile.compress.qat import is_quantized_program

        if not is_quantized_program(model):
            raise self.error(
                Stage.EXPORT,
                "int8-qat takes the quantized program of `kdmobile compress qat`, not a float model",
            )
        with self.stage(Stage.EXPORT):
            ep = torch.export.export(model, spec.torch_example_inputs(), strict=False)
        with self.stage(Stage.LOWER):
            edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
            delegation = _delegation(edge.exported_program().graph_module)
        with self.stage(Stage.SERIALIZE):
            out.write_bytes(edge.to_executorch().buffer)
        flavour = "xnnpack-pt2e-qat-int8"
        return {"flavour": flavour, "delegation": delegation, "portable_ops": delegation["portable_ops"]}

    def _quantize(self, ep: Any, spec: ModelSpec, dynamic: bool, linear_only: bool = False) -> Any:
        import torch
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
        quantizer = XNNPACKQuantizer()
        if linear_only:
            quantizer.set_module_type(torch.nn.Linear, config)
        else:
            quantizer.set_global(config)
        prepared = prepare_pt2e(_keep_integer_scalars(ep.module()), quantizer)
        samples = spec.calibration_samples() if not dynamic else [spec.example_inputs()]
        with torch.no_grad():
            for sample in samples:
                prepared(*(torch.from_numpy(np.ascontiguousarray(x)) for x in sample))
        converted = convert_pt2e(prepared)
        return torch.export.export(converted, spec.torch_example_inputs(), strict=False)

    def flags(self, details: dict[str, Any]) -> list[str]:
        out = []
        for op, count in sorted((details.get("portable_ops") or {}).items()):
            if op == "getitem":  # tuple unpacking of a delegate's outputs, not an operator
                continue
            out.append(f"op {op} (x{count}) is not delegated: it runs on the portable CPU kernels")
        return out

    def bundle_snippet(self, sidecar: dict[str, Any], sidecars: dict[str, dict[str, Any]]) -> str:
        from kdmobile.export.bundle import kotlin_array

        inp, out = sidecar["inputs"][0], sidecar["outputs"][0]
        version = sidecar["tool_versions"].get("executorch", "")
        return f"""## Android (Kotlin, ExecuTorch)

Add the ExecuTorch Android library (Maven `org.pytorch:executorch-android`, the release matching
executorch {version} used for this export). `Module.load` takes a file path: copy the `.pte` out of
`assets/` to `filesDir` once.

```kotlin
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

val module = Module.load(File(context.filesDir, "{sidecar["artifact"]}").absolutePath)
val input0 = {kotlin_array(inp["dtype"])}({_numel(inp["shape"])})            // {inp["dtype"]}{inp["shape"]}
val input = Tensor.fromBlob(input0, longArrayOf({", ".join(str(d) for d in inp["shape"])}))
val scores = module.forward(EValue.from(input))[0].toTensor().dataAsFloatArray   // {_numel(out["shape"])} floats
val best = scores.indices.maxByOrNull {{ scores[it] }}!!
```

The program takes positional inputs (ExecuTorch programs carry no input names): input 0 is
`{inp["dtype"]}{inp["shape"]}`, output 0 is `{out["dtype"]}{out["shape"]}`.
An int8 program whose flavour ends in `+embedding-byte` gathers with
`quantized_decomposed::embedding_byte`: the prebuilt Android library ships the quantized kernels; a custom
native (or iOS) runtime must link them (`quantized_ops_lib`), or loading fails with a missing operator.
"""

    def load(self, path: Path, threads: int = 1) -> ExecuTorchRuntime:
        return ExecuTorchRuntime(Path(path), threads)

    def inspect(self, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        from executorch.runtime import Runtime

        _register_quantized_kernels()
        meta = Runtime.get().load_program(Path(path)).load_method("forward").metadata
        return _specs(meta, "input", meta.num_inputs()), _specs(meta, "output", meta.num_outputs())


class ExecuTorchRuntime(ArtifactRuntime):
    """``executorch.runtime`` program, method ``forward``; numpy in, numpy out."""

    def __init__(self, path: Path, threads: int) -> None:
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        _register_quantized_kernels()
        # Must happen before load_program: changing the pool after loading crashed (measured on this project's machines).
        if portable_lib._threadpool_get_thread_count() != threads:
            portable_lib._unsafe_reset_threadpool(int(threads))
        program = Runtime.get().load_program(path)
        self._method = program.load_method("forward")
        meta = self._method.metadata
        super().__init__(_specs(meta, "input", meta.num_inputs()), _specs(meta, "output", meta.num_outputs()))
        self._torch = torch

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        args = [self._torch.from_numpy(np.ascontiguousarray(x)) for x in self.cast(inputs)]
        return [o.numpy() for o in self._method.execute(args)]


def _register_quantized_kernels() -> None:
    """Register ``quantized_decomposed::*.out`` (``embedding_byte``) with the pybindings runtime.

    The pip runtime ships them in a separate library that only this import loads; without it an int8
    program fails at ``load_method`` ("Failed to load method forward, error: 0x14"; the log says
    ``Missing operator: [2] quantized_decomposed::embedding_byte.out``).
    """
    import executorch.kernels.quantized  # noqa: F401


def _keep_integer_scalars(gm: Any) -> Any:
    """Retarget ``add``/``mul`` of an integer tensor by a Python scalar to their ``.Scalar`` overloads.

    ``XNNPACKQuantizer.transform_for_annotation`` lifts the scalar operand of every ``aten.add.Tensor`` /
    ``aten.mul.Tensor`` into a float32 buffer, whatever the node's dtype (executorch 1.5.1; fixed upstream
    by pytorch/executorch#22065). Integer index arithmetic such as transformers' ``arange(n) + 0`` in the
    attention-mask helpers (MiniLM/BERT) then turns float, and calibration fails with "IndexError: tensors
    used as indices must be long, int, byte or bool tensors". The pass only lifts ``.Tensor`` overloads, so
    the integer ones are moved out of its way; float arithmetic is untouched (it is what gets quantized).
    """
    import torch

    aten = torch.ops.aten
    scalar = {aten.add.Tensor: aten.add.Scalar, aten.mul.Tensor: aten.mul.Scalar}
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in scalar or len(node.args) != 2:
            continue
        val = node.meta.get("val")
        if isinstance(node.args[1], int | bool) and val is not None and not val.dtype.is_floating_point:
            node.target = scalar[node.target]
    gm.recompile()
    return gm


def _byte_embeddings(model: Any) -> tuple[Any, dict[str, Any]]:
    """A copy of ``model`` whose embedding tables gather from int8 rows (one fp32 scale per row).

    Returns the copy and a record of what was quantized and what was kept in fp32 (and why).
    """
    model, quantized, kept = swap_tables(model, _byte_embedding_class())
    record = {
        "scheme": "int8 weight-only, symmetric, one scale per row (torchao IntxWeightOnlyConfig PerAxis(0))",
        "op": "quantized_decomposed::embedding_byte (portable quantized kernels)",
        "quantized": quantized,
        "kept_fp32": kept,
    }
    return model.eval(), record


def _byte_table(weight: Any) -> tuple[Any, Any]:
    """(int8 rows, fp32 per-row scales) of an fp32 ``[rows, dim]`` table, quantized by torchao."""
    import torch
    from torch import nn
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis

    table = nn.Embedding(*weight.shape)
    table.weight = nn.Parameter(weight.detach().to(torch.float32).clone(), requires_grad=False)
    config = IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
    quantize_(table, config, filter_fn=lambda module, fqn: True)  # the default filter takes only Linear
    q = table.weight
    if not hasattr(q, "qdata"):
        raise TypeError(f"torchao left the embedding table as {type(q).__name__}, not an int8 tensor")
    if q.zero_point is not None and bool((q.zero_point != 0).any()):
        raise ValueError("expected symmetric per-row int8 (zero points 0) from IntxWeightOnlyConfig")
    return q.qdata.to(torch.int8).contiguous(), q.scale.to(torch.float32).reshape(-1).contiguous()


@functools.cache
def _byte_embedding_class() -> type:
    """``ByteEmbedding(weight)``: ``nn.Embedding``'s forward on int8 rows via ``embedding_byte``.

    Defined on first use so that importing this target does not import torch.
    """
    # Defines quantized_decomposed::embedding_byte for torch.export (the runtime kernel is its .out form).
    import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401
    import torch

    class ByteEmbedding(torch.nn.Module):
        def __init__(self, weight: torch.Tensor) -> None:
            super().__init__()
            qdata, scales = _byte_table(weight)
            self.register_buffer("weight", qdata)
            self.register_buffer("scales", scales)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            # weight_zero_points None: symmetric rows, q * scale
            return torch.ops.quantized_decomposed.embedding_byte.default(
                self.weight, self.scales, None, -128, 127, ids
            )

    return ByteEmbedding


def _specs(meta: Any, kind: str, n: int) -> list[TensorSpec]:
    out = []
    for i in range(n):
        info = meta.input_tensor_meta(i) if kind == "input" else meta.output_tensor_meta(i)
        code = info.dtype()
        key = code if isinstance(code, int) else str(code).split(".")[-1]
        out.append(
            TensorSpec(f"{kind}_{i}", tuple(int(s) for s in info.sizes()), _DTYPES.get(key, str(key).lower()))
        )
    return out


def _delegation(graph_module: Any) -> dict[str, Any]:
    """Delegated vs non-delegated operator counts of a lowered graph."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    delegated: Counter[str] = Counter()
    portable: Counter[str] = Counter()
    for op, b in info.delegation_by_operator.items():
        if b.delegated:
            delegated[op] += b.delegated
        if b.non_delegated:
            portable[op] += b.non_delegated
    return {
        "delegated_subgraphs": int(info.num_delegated_subgraphs),
        "delegated_nodes": int(info.num_delegated_nodes),
        "non_delegated_nodes": int(info.num_non_delegated_nodes),
        "delegated_ops": dict(sorted(delegated.items())),
        "portable_ops": dict(sorted(portable.items())),
    }


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
