"""Hand-off bundles: per target, a folder a mobile (or web) engineer can drop into an app.

    kdmobile export build/email/student.safetensors --all --bundle -o build/export

``DIR/<target>/bundle/`` holds the validated artifacts (with their metadata sidecars unless the target
says otherwise: a web bundle keeps only ``meta.json``), ``meta.json``, the task's extra files (the email
task: ``tokenizer.json``, ``replies.json``, ``teacher_predictions.json``; ``Task.bundle_files``) and a
``README.md``: the contract table, the task's paragraph on what the input and output mean
(``Task.bundle_notes``) and the target's few lines that load and run the artifact
(``Target.bundle_snippet``: Kotlin for ExecuTorch and LiteRT, Swift for Core ML, JavaScript for
onnxruntime-web), written with the input/output names, shapes and dtypes read from the artifacts
themselves. ``DIR/onnx-web/bundle/`` is the web bundle ``demo_app/`` loads. Each bundle is written
atomically as a directory.
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

_KOTLIN_ARRAYS = {"int64": "LongArray", "int32": "IntArray", "float32": "FloatArray", "int8": "ByteArray"}


def kotlin_array(dtype: str) -> str:
    """The Kotlin primitive array for a tensor dtype (``FloatArray`` when there is none)."""
    return _KOTLIN_ARRAYS.get(dtype, "FloatArray")


def write_bundles(
    out_dir: Path,
    targets: Sequence[Target],
    results: Sequence[Any],
    spec: ModelSpec,
    meta: dict[str, Any],
    checkpoint: Path | None,
    *,
    task: Any = None,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, str]:
    """Write ``DIR/<target>/bundle/`` for every target with at least one usable artifact.

    ``task`` is the ``kdmobile.task.Task`` plug-in that adds files, labels and README notes (or None).
    """
    extras = task.bundle_files(spec, meta, checkpoint) if task is not None else {}
    labels = task.labels(spec, meta) if task is not None else list(meta.get("labels") or [])
    notes = task.bundle_notes(spec) if task is not None else ""
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
            _write_bundle(tmp, target, usable, spec, labels, extras, notes)
        written[target.name] = str(dest.relative_to(out_dir))
        log(f"{target.name:<10} bundle    {dest}")
    return written


def _write_extra(path: Path, content: Any) -> None:
    if isinstance(content, Path):
        shutil.copyfile(content, path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(str(content))


def _write_bundle(
    tmp: Path,
    target: Target,
    results: Sequence[Any],
    spec: ModelSpec,
    labels: list[str],
    extras: dict[str, Any],
    notes: str,
) -> None:
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
        if target.bundle_sidecars:
            shutil.copyfile(r.metadata, tmp / (name + ".json"))
        models[r.precision] = {
            "file": name,
            "size_bytes": side["size_bytes"],
            "sha256": sha256_file(tmp / name),
            "status": r.status.value,
            "flavour": r.flavour,
        }
    for name, content in extras.items():
        _write_extra(tmp / name, content)
    first = sidecars.get("fp32") or next(iter(sidecars.values()))
    inp, out = first["inputs"][0], first["outputs"][0]
    if labels and len(labels) != out["shape"][-1]:
        labels = []  # names for another head size: better none than wrong ones
    bundle_meta = {
        "input_name": inp["name"],
        "input_shape": inp["shape"],
        "input_dtype": inp["dtype"],
        "output_name": out["name"],
        "output_shape": out["shape"],
        "inputs": first["inputs"],
        "outputs": first["outputs"],
        "intents": labels,
        "labels": labels,
        "models": models,
        "task": spec.task,
        "target": target.name,
        "runtime": target.runtime,
        "checkpoint_sha256": first.get("checkpoint_sha256"),
        "weights_sha256": first.get("weights_sha256"),
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    (tmp / "meta.json").write_text(json.dumps(bundle_meta, indent=2) + "\n")
    (tmp / "README.md").write_text(readme(target, sidecars, spec, notes))


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


def readme(target: Target, sidecars: dict[str, dict[str, Any]], spec: ModelSpec, notes: str = "") -> str:
    """The bundle README: contract table, the task's notes, the target's lines that load and run it."""
    pick = (
        sidecars.get("int8") or sidecars.get("fp16") or sidecars.get("fp32") or next(iter(sidecars.values()))
    )
    head = [
        f"# {spec.task} model — {target.name} ({target.runtime})",
        "",
        "Written by `kdmobile export --bundle`. Every artifact here was loaded back in its runtime and compared",
        "with the eager PyTorch model (see each `*.json` sidecar: error stats, tool versions, sha256), except",
        "where the status says `conversion_validated` (converted and its spec checked; the runtime could not run",
        "on the exporting machine).",
        "",
        _contract(sidecars),
        "",
    ]
    if notes:
        head += [notes.rstrip(), ""]
    head.append("")
    return "\n".join(head) + target.bundle_snippet(pick, sidecars) + "\n"
