"""Hand-off bundles: per target, a folder a mobile (or web) engineer can drop into an app.

    kdmobile export build/email/student.safetensors --all --bundle -o build/export

``DIR/<target>/bundle/`` holds the validated artifacts with their metadata sidecars, ``tokenizer.json``
and ``replies.json`` (email task), ``meta.json`` and a ``README.md`` whose code (Kotlin for ExecuTorch and
LiteRT on Android, Swift for Core ML, JavaScript for onnxruntime-web) uses the input/output names, shapes
and dtypes read from the artifacts themselves. ``DIR/onnx-web/bundle/`` is the web bundle ``demo_app/``
loads (layout in ``kdmobile/export/__init__.py``). Each bundle is written atomically as a directory.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdmobile.export.base import ModelSpec, Status, Target
from kdmobile.io import atomic_path, sha256_file

REPLIES = Path(__file__).resolve().parents[1] / "tasks" / "email" / "replies.json"
_KOTLIN_ARRAYS = {"int64": "LongArray", "int32": "IntArray", "float32": "FloatArray", "int8": "ByteArray"}


def write_bundles(
    out_dir: Path,
    targets: Sequence[Target],
    results: Sequence[Any],
    spec: ModelSpec,
    meta: dict[str, Any],
    checkpoint: Path,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, str]:
    """Write ``DIR/<target>/bundle/`` for every target with at least one usable artifact."""
    written: dict[str, str] = {}
    for target in targets:
        usable = [
            r
            for r in results
            if r.target == target.name and r.status in (Status.OK, Status.VALIDATED_CONVERSION) and r.path
        ]
        if not usable:
            log(f"{target.name:<10} bundle    skipped: no artifact passed")
            continue
        dest = out_dir / target.name / "bundle"
        with atomic_path(dest, is_dir=True) as tmp:
            _write_bundle(tmp, target, usable, spec, meta, checkpoint)
        written[target.name] = str(dest.relative_to(out_dir))
        log(f"{target.name:<10} bundle    {dest}")
    return written


def _intents(spec: ModelSpec, meta: dict[str, Any]) -> list[str]:
    intents = list(meta.get("intents") or spec.metadata.get("intents") or [])
    if not intents and spec.task == "email" and REPLIES.is_file():
        ids = [i["id"] for i in json.loads(REPLIES.read_text())["intents"]]
        if len(ids) == spec.outputs[0].shape[-1]:
            intents = ids
    return intents


def _write_bundle(
    tmp: Path, target: Target, results: Sequence[Any], spec: ModelSpec, meta: dict[str, Any], checkpoint: Path
) -> None:
    web = target.name == "onnx-web"
    models: dict[str, Any] = {}
    sidecars: dict[str, dict[str, Any]] = {}
    for r in results:
        name = f"model_{r.precision}{target.suffix}"
        if r.path.is_dir():
            shutil.copytree(r.path, tmp / name)
        else:
            shutil.copyfile(r.path, tmp / name)
        side = json.loads(r.metadata.read_text())
        sidecars[r.precision] = side
        if not web:
            shutil.copyfile(r.metadata, tmp / (name + ".json"))
        models[r.precision] = {
            "file": name,
            "size_bytes": side["size_bytes"],
            "sha256": sha256_file(tmp / name),
            "status": r.status.value,
            "flavour": r.flavour,
        }
    first = sidecars.get("fp32") or next(iter(sidecars.values()))
    if spec.task == "email":
        from kdmobile.tasks.email.tokenizer import HashTokenizer

        (tmp / "tokenizer.json").write_text(HashTokenizer(spec.metadata["tokenizer_config"]).to_json() + "\n")
        shutil.copyfile(REPLIES, tmp / "replies.json")
        teacher = checkpoint.parent / "teacher_predictions.json"
        if web and teacher.is_file():
            shutil.copyfile(teacher, tmp / "teacher_predictions.json")
    inp, out = first["inputs"][0], first["outputs"][0]
    bundle_meta = {
        "input_name": inp["name"],
        "input_shape": inp["shape"],
        "input_dtype": inp["dtype"],
        "output_name": out["name"],
        "output_shape": out["shape"],
        "intents": _intents(spec, meta),
        "models": models,
        "task": spec.task,
        "target": target.name,
        "runtime": target.runtime,
        "checkpoint_sha256": first["checkpoint_sha256"],
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    (tmp / "meta.json").write_text(json.dumps(bundle_meta, indent=2) + "\n")
    (tmp / "README.md").write_text(readme(target, sidecars, spec, bundle_meta))


def _contract(sidecars: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| file | precision | flavour | inputs | outputs | size | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for p, s in sidecars.items():

        def fmt(specs: list[dict[str, Any]]) -> str:
            return ", ".join(f"`{t['name']}: {t['dtype']}{t['shape']}`" for t in specs)

        lines.append(
            f"| `{s['artifact']}` | {p} | {s.get('flavour')} | {fmt(s['inputs'])} | {fmt(s['outputs'])} | "
            f"{s['size_bytes'] / 1024:.0f} KiB | {s['status']} |"
        )
    return "\n".join(lines)


def readme(target: Target, sidecars: dict[str, dict[str, Any]], spec: ModelSpec, meta: dict[str, Any]) -> str:
    """The bundle README: contract table + the few lines that load and run the artifact."""
    pick = (
        sidecars.get("int8") or sidecars.get("fp16") or sidecars.get("fp32") or next(iter(sidecars.values()))
    )
    inp, out = pick["inputs"][0], pick["outputs"][0]
    length, classes = inp["shape"][-1], out["shape"][-1]
    email = spec.task == "email"
    head = [
        f"# {spec.task} student — {target.name} ({target.runtime})",
        "",
        "Written by `kdmobile export --bundle`. Every artifact here was loaded back in its runtime and compared",
        "with the eager PyTorch student (see each `*.json` sidecar: error stats, tool versions, sha256), except",
        "where the status says `conversion_validated` (converted and its spec checked; the runtime could not run",
        "on the exporting machine).",
        "",
        _contract(sidecars),
        "",
    ]
    if email:
        head += [
            f"Input: the token ids of one email, `{length}` ids, `0` = padding, produced by the hashed n-gram tokenizer",
            "described in `tokenizer.json` (`type: kdmobile-hash-ngram`; exact rules in kdmobile's",
            "`kdmobile/tasks/email/tokenizer.py`, JavaScript port in `demo_app/tokenizer.js`). Output: one score per",
            f"intent, `{classes}` floats; `meta.json` → `intents` gives the intent id of each position and",
            "`replies.json` the replies of each intent (suggest replies of the top intents, one per intent).",
            "",
        ]
    head.append("")
    body = {
        "executorch": _kotlin_executorch,
        "tflite": _kotlin_litert,
        "coreml": _swift_coreml,
        "onnx-web": _js_web,
    }
    return "\n".join(head) + body.get(target.name, _generic)(pick, sidecars, length, classes) + "\n"


def _kotlin_executorch(s: dict[str, Any], _all: dict[str, Any], length: int, classes: int) -> str:
    inp = s["inputs"][0]
    arr = _KOTLIN_ARRAYS.get(inp["dtype"], "FloatArray")
    version = s["tool_versions"].get("executorch", "")
    return f"""## Android (Kotlin, ExecuTorch)

Add the ExecuTorch Android library (Maven `org.pytorch:executorch-android`, the release matching
executorch {version} used for this export). `Module.load` takes a file path: copy the `.pte` out of
`assets/` to `filesDir` once.

```kotlin
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

val module = Module.load(File(context.filesDir, "{s["artifact"]}").absolutePath)
val ids = {arr}({length})            // {inp["dtype"]}: tokenizer output, 0 = padding
val input = Tensor.fromBlob(ids, longArrayOf({", ".join(str(d) for d in inp["shape"])}))
val scores = module.forward(EValue.from(input))[0].toTensor().dataAsFloatArray   // {classes} floats
val best = scores.indices.maxByOrNull {{ scores[it] }}!!
```

The program takes positional inputs (ExecuTorch programs carry no input names): input 0 is
`{inp["dtype"]}{inp["shape"]}`, output 0 is `{s["outputs"][0]["dtype"]}{s["outputs"][0]["shape"]}`.
An int8 program whose flavour ends in `+embedding-byte` gathers with
`quantized_decomposed::embedding_byte`: the prebuilt Android library ships the quantized kernels; a custom
native (or iOS) runtime must link them (`quantized_ops_lib`), or loading fails with a missing operator.
"""


def _kotlin_litert(s: dict[str, Any], sidecars: dict[str, Any], length: int, classes: int) -> str:
    inp, out = s["inputs"][0], s["outputs"][0]
    arr = _KOTLIN_ARRAYS.get(inp["dtype"], "FloatArray")
    text = f"""## Android (Kotlin, LiteRT)

Add LiteRT (Maven `com.google.ai.edge.litert:litert`). The interpreter API:

```kotlin
import org.tensorflow.lite.Interpreter

val interpreter = Interpreter(File(context.filesDir, "{s["artifact"]}"), Interpreter.Options().setNumThreads(2))
val ids = Array(1) {{ {arr}({length}) }}     // {inp["dtype"]} (not int64: LiteRT stores the ids as int32)
val scores = Array(1) {{ FloatArray({classes}) }}
interpreter.run(ids, scores)                  // input `{inp["name"]}`, output `{out["name"]}`
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
interpreter.run(ids, q)
val p = interpreter.getOutputTensor(0).quantizationParams()
val scores = FloatArray({classes}) {{ (q[0][it] - p.zeroPoint) * p.scale }}
```
"""
    return text


def _swift_coreml(s: dict[str, Any], _all: dict[str, Any], length: int, classes: int) -> str:
    inp, out = s["inputs"][0], s["outputs"][0]
    stem = s["artifact"].removesuffix(".mlpackage")
    return f"""## iOS (Swift, Core ML)

Add the `.mlpackage` to the Xcode target (Xcode compiles it to `{stem}.mlmodelc` in the app bundle).
Minimum deployment target: iOS 16.

```swift
import CoreML

let url = Bundle.main.url(forResource: "{stem}", withExtension: "mlmodelc")!
let config = MLModelConfiguration()
config.computeUnits = .all
let model = try MLModel(contentsOf: url, configuration: config)

let ids = try MLMultiArray(shape: [{", ".join(str(d) for d in inp["shape"])}], dataType: .int32)   // `{inp["name"]}`, 0 = padding
for (i, id) in tokenIds.enumerated() {{ ids[i] = NSNumber(value: id) }}
let input = try MLDictionaryFeatureProvider(dictionary: ["{inp["name"]}": MLFeatureValue(multiArray: ids)])
let output = try model.prediction(from: input)
let scores = output.featureValue(for: "{out["name"]}")!.multiArrayValue!   // {out["dtype"]}{out["shape"]}
```
"""


def _js_web(s: dict[str, Any], _all: dict[str, Any], length: int, classes: int) -> str:
    inp, out = s["inputs"][0], s["outputs"][0]
    ctor = {"int64": "BigInt64Array", "int32": "Int32Array"}.get(inp["dtype"], "Float32Array")
    return f"""## Browser (JavaScript, onnxruntime-web, wasm)

```js
import * as ort from 'onnxruntime-web';

const session = await ort.InferenceSession.create('{s["artifact"]}', {{ executionProviders: ['wasm'] }});
const ids = new {ctor}({length});                 // `{inp["name"]}`: tokenizer output, 0 = padding
const result = await session.run({{ {inp["name"]}: new ort.Tensor('{inp["dtype"]}', ids, {json.dumps(inp["shape"])}) }});
const scores = result.{out["name"]}.data;          // Float32Array({classes})
```

`meta.json` names the files, input/output and intents; `demo_app/` loads this folder as is.
"""


def _generic(s: dict[str, Any], _all: dict[str, Any], length: int, classes: int) -> str:
    return f"Input `{s['inputs'][0]}`, output `{s['outputs'][0]}`.\n"
