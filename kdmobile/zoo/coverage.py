"""Coverage matrix: export every zoo model to every target and precision, validate, time, and tabulate.

    python -m kdmobile.zoo.coverage -o docs/coverage.md            # also writes docs/coverage.json
    python -m kdmobile.zoo.coverage --models mnist_cnn vit_tiny --targets onnx-web tflite \
        --precisions fp32 int8 -o build/coverage/coverage.md

Per cell (model x target x precision): the exporter's status, the failing stage and operator, the artifact
size, SQNR and top-1 agreement with the eager model (on real held-out samples for real models, on the
synthetic samples otherwise), p50 latency of the loaded runtime (a short loop at 1 thread: indicative only,
the machine is shared) and the reason. Each cell goes through the same path as ``kdmobile export``
(``kdmobile.export.runner.export_one``): export, load back in the real runtime, compare with the eager model.

Random-init models have no meaningful argmax (near-tied random logits flip on noise), so for them top-1
agreement is not judged: their cells pass on the targets' own SQNR and error bounds. Core ML cells are
``conversion_validated`` off macOS (prediction needs macOS; the saved spec is checked).

The JSON is rewritten atomically after every cell, so a long run that stops keeps what it finished;
``--resume`` skips the cells already in it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from kdmobile.io import write_json, write_text

SCHEMA_VERSION = 1
# Precisions that take a program already quantized by QAT (``kdmobile compress qat``), not a float model:
# not part of the matrix (every zoo entry is a float model).
QAT_ONLY = ("int8-qat",)
_STATUS_MARK = {
    "ok": "ok",
    "conversion_validated": "conv",
    "unavailable": "n/a",
    "export_failed": "FAIL",
    "load_failed": "FAIL",
    "run_failed": "FAIL",
    "mismatch": "MISS",
}


def zoo_spec(zm: Any) -> Any:
    """The exporter's ``ModelSpec`` of a built zoo entry (real models: split ``heldout``; else ``synthetic``)."""
    import torch

    from kdmobile.export.base import ModelSpec, TensorSpec

    with torch.no_grad():
        out = zm.module(*zm.example_inputs)
    out = out[0] if isinstance(out, tuple | list) else out
    inputs = [
        TensorSpec(n, (1, *x.shape[1:]), str(x.dtype))
        for n, x in zip(zm.input_names, zm.validation, strict=True)
    ]
    split = "heldout" if zm.real else "synthetic"
    return ModelSpec(
        task="zoo",
        inputs=inputs,
        outputs=[TensorSpec("logits", tuple(out.shape), "float32")],
        calibration=zm.calibration,
        validation={split: zm.validation},
        real_split=split if zm.real else None,
        metadata={"zoo_model": zm.name},
    )


def zoo_target(name: str, zm: Any) -> Any:
    """The target instance; for a random-init model its tolerances do not judge top-1 agreement."""
    from kdmobile.export import get_target

    target = get_target(name)
    if not zm.real:
        target.tolerance_overrides = {
            p: dataclasses.replace(target.tolerance(p), min_top1_agreement=0.0) for p in target.precisions
        }
    return target


def run_cell(
    zm: Any,
    target: Any,
    precision: str,
    spec: Any,
    eager: dict[str, np.ndarray],
    out_dir: Path,
    *,
    timing: bool = True,
) -> dict[str, Any]:
    """Export, validate and (if it runs here) time one cell; returns its row."""
    from kdmobile.export.runner import export_one

    t0 = time.perf_counter()
    res = export_one(target, zm.module, spec, eager, precision, out_dir, source={"zoo_model": zm.name})
    row: dict[str, Any] = {
        "model": zm.name,
        "target": target.name,
        "precision": precision,
        "status": res.status.value,
        "stage": res.stage.value if res.stage else None,
        "op": res.op,
        "flavour": res.flavour,
        "size_bytes": res.size_bytes,
        "reason": res.reason,
        "flags": res.flags[:5],
        "attempts": [
            {k: a.get(k) for k in ("variant", "flavour", "stage", "reason")}
            for a in res.details.get("attempts", [])
        ],
        "fallbacks": {k: res.details[k] for k in ("rnn_unrolled",) if k in res.details},
        "wasm": (res.details.get("wasm") or {}).get("status"),  # onnx-web: also run in onnxruntime-web
    }
    stats = res.error_stats or {}
    real = (res.error_stats_by_split or {}).get(spec.real_split or "", {})
    row["sqnr_db"] = stats.get("sqnr_db")
    row["max_abs"] = stats.get("max_abs")
    row["top1_agreement"] = (real or stats).get("top1_agreement")
    row["bar"] = judge(row, zm.real)
    row["p50_ms"] = None
    if timing and res.status.value == "ok" and res.path is not None:
        row["p50_ms"] = _p50(lambda: target.load(res.path, threads=1), zm)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def judge(row: dict[str, Any], real: bool) -> dict[str, Any]:
    """The zoo's bar for a cell: top-1 agreement for real models, SQNR for random-init ones."""
    from kdmobile.zoo import bar

    metric, floor = bar(real, row["precision"])
    value = row["top1_agreement"] if metric == "top1" else row["sqnr_db"]
    return {"metric": metric, "min": floor, "met": None if value is None else bool(value >= floor)}


def _p50(load: Any, zm: Any) -> float | None:
    from kdmobile.harness.timing import measure_latency

    try:
        runtime = load()
        sample = tuple(np.ascontiguousarray(x[:1]) for x in zm.validation)
        lat = measure_latency(
            lambda: runtime(*sample), warmup_runs=3, min_runs=20, min_seconds=0.5, max_seconds=3.0
        )
        return round(float(np.median(lat.samples_ms)), 4)
    except Exception:  # noqa: BLE001 - timing is indicative; a failure here is not the cell's status
        return None


def _eager_p50(zm: Any) -> float:
    import torch

    from kdmobile.harness.timing import measure_latency

    with torch.inference_mode():
        lat = measure_latency(
            lambda: zm.module(*zm.example_inputs),
            warmup_runs=3,
            min_runs=20,
            min_seconds=0.5,
            max_seconds=3.0,
        )
    return round(float(np.median(lat.samples_ms)), 4)


def _plan(targets: list[str] | None, precisions: list[str] | None) -> list[tuple[str, list[str]]]:
    from kdmobile.errors import UsageError
    from kdmobile.export import discover

    registry = discover()
    plan = []
    for name in targets or registry.names():
        if name not in registry:
            raise UsageError(f"unknown target {name!r}; valid: {', '.join(registry.names())}")
        offered = list(registry.get(name).precisions)
        keep = [p for p in offered if p not in QAT_ONLY and (not precisions or p in precisions)]
        plan.append((name, keep))
    return plan


def run(
    out_md: Path,
    *,
    models: list[str] | None = None,
    targets: list[str] | None = None,
    precisions: list[str] | None = None,
    n_calibration: int = 32,
    n_validation: int = 64,
    small: bool = False,
    artifacts: Path | None = None,
    resume: bool = False,
    command: str = "",
    log: Any = None,
) -> dict[str, Any]:
    """Run the matrix; write ``out_md`` and its ``.json`` twin (after every cell); return the data."""
    import torch

    from kdmobile.errors import UsageError
    from kdmobile.export.runner import tool_versions
    from kdmobile.export.validate import eager_outputs
    from kdmobile.zoo import build, names

    log = log or (lambda msg: print(msg, flush=True))  # flushed: the run is long and often under nohup
    torch.set_num_threads(1)
    all_models = names()
    for m in models or ():
        if m not in all_models:
            raise UsageError(f"unknown zoo model {m!r}; valid: {', '.join(all_models)}")
    plan = _plan(targets, precisions)
    out_json = out_md.with_suffix(".json")
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "started": _now(),
        "finished": None,
        "wall_seconds": None,
        "machine": f"{platform.system()} {platform.machine()}, {_cpu()}",
        "threads": 1,
        "n_calibration": n_calibration,
        "n_validation": n_validation,
        "small": small,
        "tool_versions": tool_versions(
            (
                "torch",
                "transformers",
                "executorch",
                "torchao",
                "coremltools",
                "litert-torch",
                "ai-edge-litert",
                "ai-edge-quantizer",
                "onnx",
                "onnxscript",
                "onnxruntime",
            )
        ),
        "models": {},
        "cells": [],
    }
    if resume and out_json.is_file():
        old = json.loads(out_json.read_text())
        data["models"] = old.get("models", {})
        data["cells"] = [c for c in old.get("cells", []) if c["precision"] not in QAT_ONLY]
        data["started"] = old.get("started", data["started"])
        # Wall time counts the run's own time across resumes (not the pause between them).
        data["wall_seconds"] = old.get("wall_seconds")
        data["resumed"] = [*old.get("resumed", []), _now()]
    done = {(c["model"], c["target"], c["precision"]) for c in data["cells"]}
    t_all = time.perf_counter() - float(data.get("wall_seconds") or 0)

    def save() -> None:
        data["wall_seconds"] = round(time.perf_counter() - t_all, 1)
        write_json(out_json, data)
        write_text(out_md, render_markdown(data))

    for name in models or all_models:
        todo = [(t, p) for t, ps in plan for p in ps if (name, t, p) not in done]
        if not todo:
            continue
        t0 = time.perf_counter()
        zm = build(name, small=small, n_calibration=n_calibration, n_validation=n_validation)
        spec = zoo_spec(zm)
        eager = eager_outputs(zm.module, spec)
        data["models"][name] = {
            **zm.summary(),
            "eager_p50_ms": _eager_p50(zm),
            "build_seconds": round(time.perf_counter() - t0, 1),
        }
        log(f"{name}: built in {time.perf_counter() - t0:.1f} s; {len(todo)} cells")
        with tempfile.TemporaryDirectory(prefix=f"kdmobile-zoo-{name}-") as tmp:
            root = (artifacts / name) if artifacts else Path(tmp)
            for tname, precision in todo:
                row = run_cell(zm, zoo_target(tname, zm), precision, spec, eager, root)
                data["cells"].append(row)
                save()
                log(_line(row))
        del zm, spec, eager
    data["finished"] = _now()
    save()
    return data


def _line(r: dict[str, Any]) -> str:
    s = f"  {r['target']:<10} {r['precision']:<9} {r['status']:<20}"
    if r["sqnr_db"] is not None:
        s += f" sqnr {r['sqnr_db']:.1f} dB top1 {r['top1_agreement']:.3f}"
    if r["p50_ms"] is not None:
        s += f" p50 {r['p50_ms']:.3f} ms"
    if r["reason"]:
        s += f"  {r['reason'][:160]}"
    return s + f"  [{r['seconds']} s]"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# -- Markdown ----------------------------------------------------------------------------------------------
def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _size(b: int | None) -> str:
    if b is None:
        return "–"
    return f"{b / 1e6:.2f} MB" if b >= 1e5 else f"{b / 1e3:.1f} kB"


INT8_FULL_WHY = (
    "Why the int8-full misses stay: TFLite full-integer rounds every activation to 8 bits (softmax, "
    "layer norm, hard-swish and squeeze-excite gates included), with one range per tensor measured on 32 "
    "calibration samples by litert-torch's PT2E quantizer (per-channel weights). Keeping those ops in float "
    "would no longer be a full-integer model, and the dynamic-range and weight-only int8 of the same target "
    "(the `tflite int8` column) is the float-activation alternative. The fix for a full-integer artifact is "
    "training the ranges: quantization-aware training with the teacher (`kdmobile compress qat`, precision "
    "`int8-qat`, issue 13)."
)


def render_markdown(data: dict[str, Any]) -> str:
    cells = data["cells"]
    columns = list(dict.fromkeys((c["target"], c["precision"]) for c in cells))
    by = {(c["model"], c["target"], c["precision"]): c for c in cells}
    models = list(dict.fromkeys(c["model"] for c in cells))
    counts: dict[str, int] = {}
    for c in cells:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    wall = data.get("wall_seconds") or 0
    state = "finished" if data.get("finished") else "NOT finished (partial: the cells below are those done)"
    lines = [
        "# Export coverage: the model zoo x every target and precision",
        "",
        f"`{data.get('command') or 'python -m kdmobile.zoo.coverage'}` — {state}; the cells took "
        f"{sum(c.get('seconds') or 0 for c in cells) / 60:.1f} min in all (wall time {wall / 60:.1f} min);",
        f"started {data['started']}, finished {data.get('finished') or '-'}, {data['machine']}, 1 thread, shared machine"
        + (
            f"; stopped and resumed (`--resume`) at {', '.join(data['resumed'])}."
            if data.get("resumed")
            else "."
        ),
        "",
        f"{len(cells)} cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ". "
        "`ok`: exported, loaded back in its real runtime and within the target's tolerance; `conv`: "
        "conversion validated (Core ML: prediction needs macOS, the saved spec is checked); `FAIL`: a stage "
        "failed (stage and operator below); `MISS`: it ran but missed the tolerance.",
        "",
        "Bars: real models (trained or pretrained weights, real inputs) by top-1 agreement with the eager model "
        "on real held-out samples (fp32 ≥ 99.5%, int8 ≥ 98%); random-init models by SQNR "
        "(fp32 ≥ 40 dB, fp16 ≥ 35 dB, int8 ≥ 20 dB; the argmax of random logits flips on noise, so it is not "
        "judged) — the *bar met* column. The status is the targets' own check, which also bounds the absolute "
        "error and asks fp32 for 60 dB. "
        "p50 is a short loop at 1 thread on a shared machine: indicative only.",
        "",
        "## Matrix",
        "",
        "| model | " + " | ".join(f"{t} {p}" for t, p in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for m in models:
        row = []
        for t, p in columns:
            c = by.get((m, t, p))
            row.append("" if c is None else _STATUS_MARK.get(c["status"], c["status"]))
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    failed = [c for c in cells if c["status"] not in ("ok", "conversion_validated")]
    lines += ["", "## What fails, and where", ""]
    if not failed:
        lines.append("Nothing: every cell above is ok or conversion-validated.")
    for c in failed:
        what = f"stage `{c['stage']}`" + (f", op `{c['op']}`" if c["op"] else "")
        figures = ""
        if c["sqnr_db"] is not None:
            figures = f" (SQNR {c['sqnr_db']:.1f} dB, top-1 {c['top1_agreement']:.3f})"
        reason = (c["reason"] or "").replace("\n", " ")
        lines.append(f"- **{c['model']}**, {c['target']} {c['precision']}: {what}{figures}. {reason[:400]}")
    if any(c["status"] == "mismatch" and c["precision"] == "int8-full" for c in cells):
        lines += ["", INT8_FULL_WHY]
    lines += [
        "",
        "Fixed in the exporters (each a fallback or a local change; see the target files' docstrings): "
        "onnx-web judges op support by running the model in onnxruntime (HardSwish is an ONNX function "
        "with no kernel of its own name, and runs); TFLite full-integer models get their float inputs "
        "quantized with the input tensor's scale and zero point; TFLite full-integer converts a GRU through "
        "the same GRU written with basic ops (`targets/_rnn.py`) when litert-torch's GRU annotator fails; "
        "Core ML decomposes GRU/LSTM with PyTorch's own decompositions, and `new_ones`/`new_zeros` and the "
        "bool `&`/`|` of transformers' mask helpers (MiniLM); ExecuTorch int8 keeps integer index arithmetic "
        "integer before the XNNPACK quantizer lifts scalars to float32 buffers (MiniLM's IndexError; "
        "executorch#22062), and falls back to quantizing the Linear layers only when XNNPACK's channels-last "
        "pass fails on dynamically quantized convolutions (MobileViT); TFLite int8 falls back to int8 "
        "weights with float compute (`weight_only_wi8_afp32`) and onnx-web int8 to `MatMulNBits` 8-bit "
        "weights with float activations when the per-call activation rounding misses the bar; a "
        "data-dependent shape at `torch.export` gets a hint saying what to change.",
    ]
    lines += [
        "",
        "## Models",
        "",
        "| model | family | params | inputs | real | eager p50 | notes |",
        "|---|---|---:|---|---|---:|---|",
    ]
    for m in models:
        info = data["models"].get(m, {})
        ins = ", ".join(f"{k} {v[1]}{v[0]}" for k, v in info.get("inputs", {}).items())
        lines.append(
            f"| {m} | {info.get('family', '')} | {info.get('params', 0) / 1e6:.2f} M | {ins} | "
            f"{'yes' if info.get('real') else 'no'} | {_fmt(info.get('eager_p50_ms'), '.3f')} ms | {info.get('notes', '')} |"
        )
    lines += [
        "",
        "## Every cell",
        "",
        "| model | target | precision | status | stage | op | size | SQNR dB | top-1 | bar met | p50 ms | flavour / reason |",
        "|---|---|---|---|---|---|---:|---:|---:|---|---:|---|",
    ]
    for c in cells:
        bar = c.get("bar") or {}
        met = {True: "yes", False: "no", None: "–"}[bar.get("met")]
        text = c["flavour"] or ""
        if c["reason"]:
            text = (text + ": " if text and c["status"] != "export_failed" else "") + c["reason"]
        if c.get("attempts"):
            text += (
                " (fell back after: " + "; ".join(f"{a['variant']} {a['stage']}" for a in c["attempts"]) + ")"
            )
        text = text.replace("|", "\\|").replace("\n", " ")
        if len(text) > 300:
            text = text[:297] + "..."
        lines.append(
            f"| {c['model']} | {c['target']} | {c['precision']} | {c['status']} | {c['stage'] or ''} | "
            f"{c['op'] or ''} | {_size(c['size_bytes'])} | {_fmt(c['sqnr_db'], '.1f')} | "
            f"{_fmt(c['top1_agreement'], '.3f')} | {met} | {_fmt(c['p50_ms'], '.3f')} | {text} |"
        )
    return "\n".join(lines) + "\n"


def merge(paths: list[Path], out_md: Path) -> dict[str, Any]:
    """Join the JSONs of runs over disjoint models (e.g. two halves run side by side); first one wins."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    data = {**runs[0], "models": {}, "cells": []}
    seen: set[tuple[str, str, str]] = set()
    for r in runs:
        for name, info in r["models"].items():
            data["models"].setdefault(name, info)
        for c in r["cells"]:
            key = (c["model"], c["target"], c["precision"])
            if key not in seen and c["precision"] not in QAT_ONLY:
                seen.add(key)
                c["bar"] = judge(c, data["models"][c["model"]]["real"])  # with the current bars
                data["cells"].append(c)
    data["command"] = " ; ".join(r["command"] for r in runs) + "  (run side by side, merged with --merge)"
    data["started"] = min(r["started"] for r in runs)
    data["wall_seconds"] = max(r.get("wall_seconds") or 0 for r in runs)
    data["resumed"] = sorted(t for r in runs for t in r.get("resumed", []))
    data["finished"] = (
        None if any(r.get("finished") is None for r in runs) else max(r["finished"] for r in runs)
    )
    write_json(out_md.with_suffix(".json"), data)
    write_text(out_md, render_markdown(data))
    return data


def main(argv: list[str] | None = None) -> int:
    from kdmobile.errors import UsageError

    p = argparse.ArgumentParser(prog="python -m kdmobile.zoo.coverage", description=__doc__.split("\n")[0])
    p.add_argument(
        "-o", "--out", type=Path, default=Path("docs/coverage.md"), help="Markdown (+ .json beside it)"
    )
    p.add_argument("--models", nargs="+", help="zoo entries (default: all)")
    p.add_argument("--targets", nargs="+", help="targets (default: all)")
    p.add_argument("--precisions", nargs="+", help="precisions (default: every one each target offers)")
    p.add_argument("--calibration", type=int, default=32, help="int8 calibration samples per model")
    p.add_argument("--validation", type=int, default=64, help="validation samples per model")
    p.add_argument("--small", action="store_true", help="the reduced configurations (fast)")
    p.add_argument("--artifacts", type=Path, help="keep the artifacts here (default: a temporary folder)")
    p.add_argument("--resume", action="store_true", help="keep the cells already in the JSON, run the rest")
    p.add_argument("--merge", nargs="+", type=Path, help="only join these coverage JSONs into -o")
    args = p.parse_args(argv)
    if args.merge:
        data = merge(args.merge, args.out)
        print(f"wrote {args.out} ({len(data['cells'])} cells from {len(args.merge)} runs)")
        return 0
    command = "python -m kdmobile.zoo.coverage " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    try:
        data = run(
            args.out,
            models=args.models,
            targets=args.targets,
            precisions=args.precisions,
            n_calibration=args.calibration,
            n_validation=args.validation,
            small=args.small,
            artifacts=args.artifacts,
            resume=args.resume,
            command=command,
        )
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out} and {args.out.with_suffix('.json')} ({len(data['cells'])} cells, {data['wall_seconds'] / 60:.1f} min)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
