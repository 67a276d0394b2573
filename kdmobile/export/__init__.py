"""Export a model to on-device artifacts and validate each one in its real runtime.

    kdmobile export build/email/student.safetensors --all --bundle -o build/export
    kdmobile export model.pt2 --all --validation val.npz -o build/my-export
    kdmobile targets

Python API (everything here is imported lazily; ``import kdmobile.export`` loads no export runtime)::

    import kdmobile
    res = kdmobile.export(model, (x,), targets="all", validation=(xs,), out_dir="out")   # any nn.Module
    print(res); res.ok; res.load("tflite", "int8")(x.numpy())

    from kdmobile.export import discover, get_target, export_checkpoint, load_artifact

    discover()                          # imports every module in targets/ once; returns the TARGETS registry
    get_target("tflite")                # a Target instance (KeyError listing the valid names on a miss)
    summary = export_checkpoint("build/email/student.safetensors", out_dir="build/export",
                                targets=["executorch"], precisions=["fp32", "int8"], bundle=True)
    run = load_artifact("build/export/tflite/model_int8.tflite", threads=1)
    logits, = run(ids)                  # numpy in, list of numpy out; may raise RuntimeUnavailable

Stable contract (the bench/check harness and the demo app code against it; bump ``SCHEMA_VERSION`` on change)
-------------------------------------------------------------------------------------------------------------
Targets (``kdmobile/export/base.py``; one file per target in ``targets/``, registered with
``@register_target``, discovered by ``discover()``; names: ``executorch``, ``coreml``, ``tflite``,
``onnx-web``):

- ``Target.name`` / ``suffix`` / ``runtime`` / ``precisions`` / ``requires``;
- ``Target.availability() -> (bool, reason)``: can this machine export (modules import);
- ``Target.runtime_availability() -> (bool, reason)``: can this machine *run* the artifact (Core ML: macOS);
- ``Target.load(path, threads=1) -> Runtime``. A ``Runtime`` is callable on numpy arrays (one per model
  input, batch 1, in ``Runtime.inputs`` order) and returns a list of numpy arrays (``Runtime.outputs``).
  It accepts the eager model's dtypes (e.g. int64 ids) and casts to the artifact's own dtype when they
  differ (TFLite stores ids as int32); ``Runtime.inputs`` holds the artifact's real ``TensorSpec``\\ s, so
  a harness that wants no cast inside the timed call feeds arrays of exactly those dtypes. The harness
  times exactly ``runtime(*inputs)``. ``threads`` is fixed at load time (ExecuTorch cannot change it after
  loading). ``load`` raises ``RuntimeUnavailable(reason)`` when the runtime cannot run on this machine;
- ``Target.precisions``: ``fp32``/``fp16``/``int8``, plus ``int8-full`` (TFLite full-integer) and
  ``int8-qat`` (ExecuTorch: a program already quantized by ``kdmobile.compress.qat``) — treat
  precision strings as opaque names; ``precision_family("int8-full") == "int8"``;
- ``Target.tolerance(precision) -> Tolerance``: the validation tolerance (``TOLERANCES`` in base.py is the
  one place where fp16/int8 are relaxed; a target may override one precision in ``tolerance_overrides``);
- ``Target.variants(precision)``: ways to make a precision, best first; the runner keeps the first that
  validates and records the failed ones in ``details.attempts`` (ExecuTorch int8: int8 embedding rows,
  then PT2E static, then PT2E dynamic). The kept one is named by ``flavour``;
  ``Target.variant_applies(variant, model)`` drops the ones that mean nothing for a model (no attempt is
  recorded: a CNN skips the embedding-table variants);
- ``Target.thresholds() -> dict[str, float]``: THE regression thresholds ``kdmobile check`` reads:
  ``DEFAULT_CHECK_THRESHOLDS`` (``latency_pct`` 15, ``accuracy_pt`` 0.5, ``size_pct`` 5,
  ``browser_latency_pct`` 30) merged with the target's own ``check_thresholds``;
- everything about one target is on its class, and generic code asks it, never tests its name:
  ``op_patterns`` (regexes naming the operator in a converter's error), ``post_export(artifact, precision,
  options, root)`` (extra files, e.g. onnx-web's ``.ort`` with ``options={"ort": True}``), ``flags(details)``
  (summary warnings, e.g. ExecuTorch ops left on portable kernels), ``bundle_snippet(sidecar, sidecars)``
  (the README lines that load and run it), ``bundle_sidecars``, ``runtime_label`` (the runtime ``load``
  gives, as a report names it), ``runtime_dist`` (the distribution whose version is that runtime's),
  ``report_order`` and ``colour`` (report rows and plots).

Output layout of ``kdmobile export ... -o DIR``:

- ``DIR/<target>/model_<precision><suffix>`` the artifact (``.pte``, ``.mlpackage`` (a directory),
  ``.tflite``, ``.onnx``); ``DIR/onnx-web/model_<precision>.ort`` too with ``--ort``;
- ``DIR/<target>/model_<precision><suffix>.json`` its metadata sidecar (``artifact_metadata_path``)::

    {"schema_version": 1, "target": "tflite", "precision": "int8", "flavour": "pt2e-static-int8",
     "artifact": "model_int8.tflite", "size_bytes": 28160, "sha256": "...",
     "inputs":  [{"name": "ids", "shape": [1, 128], "dtype": "int32"}],      # the artifact's real contract
     "outputs": [{"name": "logits", "shape": [1, 48], "dtype": "float32"}],
     "model_inputs": [{"name": "ids", "shape": [1, 128], "dtype": "int64"}],  # the eager model's contract
     "source_checkpoint": "build/email/student.safetensors", "checkpoint_sha256": "...",
     "architecture": "email-student", "task": "email", "tool_versions": {"torch": "2.13.0", ...},
     "status": "ok", "tolerance": {...}, "error_stats": {...}, "error_stats_by_split": {...},
     "details": {...target specific, e.g. ExecuTorch delegation...}, "created": "2025-...Z"}

``DIR`` is written whole: everything goes into a staging folder beside it (``.DIR.<id>.staging.tmp``),
swapped in at the end; an error or Ctrl-C removes the staging folder and leaves the previous ``DIR`` as it
was. A non-empty ``DIR`` that has no ``summary.json`` is refused (it is not an export to replace).

- ``DIR/summary.json`` (``read_summary``)::

    {"schema_version": 1, "checkpoint": "...", "checkpoint_sha256": "...", "architecture": "...",
     "task": "email", "created": "...", "tool_versions": {...},
     "validation": {"splits": {"heldout": 512, "random": 64}, "input_specs": [...]},
     "results": [{"target": "executorch", "precision": "fp32", "flavour": "xnnpack-fp32",
                  "path": "executorch/model_fp32.pte",      # relative to DIR; null when nothing was written
                  "metadata": "executorch/model_fp32.pte.json",
                  "status": "ok", "stage": null, "reason": null,
                  "error_stats": {"max_abs": ..., "mean_abs": ..., "sqnr_db": ..., "top1_agreement": ..., "n": ...},
                  "error_stats_by_split": {"heldout": {...}, "random": {...}},
                  "tolerance": {...}, "size_bytes": 123, "seconds": {"export": 1.2, "validate": 0.3},
                  "op": null,                                # the unsupported operator, when one is named
                  "flags": ["op aten_embedding_default (x1) is not delegated: ..."],
                  "details": {...}}, ...],
     "bundles": {"onnx-web": "onnx-web/bundle", ...}, "seconds": 28.1,
     "warnings": [],                                         # e.g. "WARNING: no validation data ..."
     "ok": true}                                             # false if any result failed

  A model exported from memory (``kdmobile.export``, a ``.pt2``) has ``checkpoint`` (the ``.pt2`` path or
  null), ``weights_sha256`` (sha256 over its state dict), ``validation.synthetic`` (true when no
  validation samples were given), ``validation.fidelity_only`` (true when the given ones are stand-ins,
  judged by fidelity only, not top-1) and ``validation.calibration_source``.

  ``status`` is one of ``ok``, ``conversion_validated`` (converted and its spec checked, but the runtime
  cannot run here, e.g. Core ML on Linux; ``reason`` says why), ``unavailable`` (the exporter's modules
  are missing), ``export_failed``, ``load_failed``, ``run_failed``, ``mismatch``. ``stage`` names the
  failed stage: ``export``, ``lower``, ``serialize``, ``load``, ``run``, ``mismatch``. ``error_stats`` are
  over every validation input; ``error_stats_by_split[validation.real_split]`` (``"heldout"``) over the
  real held-out samples only (top-1 agreement is judged there). ``error_stats`` is null when the artifact
  could not run here (``conversion_validated``). A failed artifact leaves no file: ``path`` is null.
  ``details.wasm`` (onnx-web) holds the same statistics measured in onnxruntime-web's own wasm build.

- ``DIR/<target>/bundle/`` with ``--bundle``: the phone hand-off folder (artifacts, sidecars,
  ``tokenizer.json``, ``replies.json``, ``README.md`` with the Kotlin/Swift lines that load and run it).
  For ``onnx-web`` it is the web bundle ``demo_app/`` loads: ``model_fp32.onnx``, ``model_int8.onnx``
  (single files), ``tokenizer.json``, ``replies.json``, ``meta.json``, ``teacher_predictions.json`` (when
  ``build/email/teacher_predictions.json`` exists).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

SCHEMA_VERSION = 1

# name -> module that defines it; resolved on first attribute access (PEP 562).
_LAZY = {
    "export": "kdmobile.export.api",
    "build_spec": "kdmobile.export.api",
    "read_samples": "kdmobile.export.api",
    "ExportResult": "kdmobile.export.runner",
    "Result": "kdmobile.export.runner",
    "Target": "kdmobile.export.base",
    "Runtime": "kdmobile.export.base",
    "TensorSpec": "kdmobile.export.base",
    "ModelSpec": "kdmobile.export.base",
    "Tolerance": "kdmobile.export.base",
    "ErrorStats": "kdmobile.export.base",
    "Status": "kdmobile.export.base",
    "Stage": "kdmobile.export.base",
    "ExportError": "kdmobile.export.base",
    "UnsupportedOpError": "kdmobile.export.base",
    "MismatchError": "kdmobile.export.base",
    "RuntimeUnavailable": "kdmobile.export.base",
    "TOLERANCES": "kdmobile.export.base",
    "DEFAULT_CHECK_THRESHOLDS": "kdmobile.export.base",
    "TARGETS": "kdmobile.export.base",
    "register_target": "kdmobile.export.base",
    "discover": "kdmobile.export.discovery",
    "get_target": "kdmobile.export.discovery",
    "target_names": "kdmobile.export.discovery",
    "artifact_metadata_path": "kdmobile.export.runner",
    "export_checkpoint": "kdmobile.export.runner",
    "load_artifact": "kdmobile.export.runner",
    "read_summary": "kdmobile.export.runner",
    "error_stats": "kdmobile.export.validate",
    "validate": "kdmobile.export.validate",
    "model_spec_for": "kdmobile.export.specs",
}

__all__ = ["SCHEMA_VERSION", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kdmobile.export' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """``kdmobile.export`` is this package AND the export function.

    ``import kdmobile.export`` binds the subpackage to the attribute ``kdmobile.export`` whatever
    ``kdmobile/__init__.py`` says, so the only way ``kdmobile.export(model, ...)`` works in every import order
    is a callable module. The plain function is ``kdmobile.export_model`` (= ``kdmobile.export.api.export``).
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from kdmobile.export.api import export

        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
