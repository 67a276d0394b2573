"""One bench measurement in its own process: load one artifact (or the teacher, or the eager student), run
the evaluation set through it, time it interleaved with the same-run reference, record its peak memory.

    python -m kdmobile.harness.worker JOB.json        # what `kdmobile bench` runs for every entry

A process per entry keeps runtimes apart (thread pools, allocators), makes the peak-memory figure that of
this entry alone, and stops one crashing runtime from taking the whole bench down. The job and the result
are JSON files (``job["out"]/result.json``; logits go to ``logits.npy``).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MAX_SAMPLES = 3000  # per-run samples kept in the report per entry (evenly spaced in time)


def _latency_dict(lat: Any) -> dict[str, Any]:
    from kdmobile.harness.stats import summarize, thin

    out = {
        "summary": lat.summary(),
        "samples_ms": thin(lat.samples_ms, MAX_SAMPLES),
        "ratio_samples": thin(lat.ratios, MAX_SAMPLES),
        "ratio_p50": lat.ratio_p50,
        "rounds": lat.rounds,
        "seconds": round(lat.seconds, 3),
        "warmup_runs": lat.warmup_runs,
    }
    if lat.ref_samples_ms.size:
        out["reference"] = summarize(lat.ref_samples_ms)
    return out


def _reference(job: dict[str, Any], eval_set: Any, threads: int) -> Callable[[], Any] | None:
    """The same-run reference on the timed example (the eager student, or with no eager model here the
    fp32 artifact): every entry's runs are divided by its runs, interleaved. None: no reference at all."""
    from kdmobile.harness.eager import load_model

    if not job.get("reference"):
        return None
    model = load_model(job["reference"], threads, trust_unverified=job.get("trust_unverified", False))
    return model.call(eval_set.rows([eval_set.latency_index]))


def _timing(job: dict[str, Any]) -> dict[str, Any]:
    t = job["timing"]
    return {
        "warmup_runs": int(t["warmup_runs"]),
        "min_runs": int(t["min_runs"]),
        "min_seconds": float(t["min_seconds"]),
        "max_seconds": t.get("max_seconds"),
    }


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job (see ``kdmobile.harness.bench``); never raises for a failing runtime: it reports it."""
    import psutil
    import torch

    from kdmobile.checkpoint import read_metadata
    from kdmobile.harness.eager import load_model
    from kdmobile.harness.tasks import eval_set_for, teacher_for
    from kdmobile.harness.timing import PeakMemory, measure_latency, timed

    threads = int(job["threads"])
    torch.set_num_threads(threads)
    out_dir = Path(job["out"])
    ckpt = job.get("student_checkpoint")
    meta = read_metadata(ckpt) if ckpt and Path(ckpt).suffix != ".pt2" else {}
    eval_set = eval_set_for(job.get("task"), job["data"], meta, job.get("validation") or {})
    index = eval_set.latency_index
    timing = _timing(job)
    result: dict[str, Any] = {"status": "ok", "reason": None, "details": {}}
    kind = job["kind"]

    if kind == "student":
        with PeakMemory() as mem:
            model, load_ms = timed(
                lambda: load_model(ckpt, threads, trust_unverified=job.get("trust_unverified", False))
            )
            lat = measure_latency(model.call(eval_set.rows([index])), **timing)
        logits = model.predict_all(eval_set.inputs)  # the eager model is batch-independent
        result.update(load_ms=load_ms, latency=_latency_dict(lat), peak_memory_bytes=mem.peak_bytes)
        np.save(out_dir / "logits.npy", logits.astype(np.float32))

    elif kind == "teacher":
        ref = _reference(job, eval_set, threads)
        with PeakMemory() as mem:  # load (cold: includes importing its framework) + batch-1 runs
            teacher, load_ms = timed(lambda: teacher_for(job.get("task"), job["teacher"], eval_set, threads))
            lat = measure_latency(teacher.call([index]), reference=ref, **timing)
        logits = teacher.logits()
        batch = min(int(job["server_batch"]), len(eval_set))
        server = measure_latency(
            teacher.call(list(range(batch))),
            warmup_runs=2,
            min_runs=int(job["timing"].get("server_min_runs", 20)),
            min_seconds=min(3.0, timing["min_seconds"]),
        )
        result.update(
            load_ms=load_ms,
            latency=_latency_dict(lat),
            peak_memory_bytes=mem.peak_bytes,
            size_bytes=teacher.size_bytes,
            flops=teacher.flops([index]),
            name=teacher.name,
            runtime=teacher.runtime,
            path=teacher.path,
        )
        s = server.summary()
        result["details"]["server_batch"] = {
            "batch": batch,
            "latency_ms": {k: s[k] for k in ("p50", "p90", "p99", "mean", "std", "n")},
            "per_example_ms": s["p50"] / batch,
        }
        np.save(out_dir / "logits.npy", np.asarray(logits, dtype=np.float32).reshape(len(eval_set), -1))

    elif kind == "artifact":
        from kdmobile.export import RuntimeUnavailable, discover, get_target

        discover()
        target = get_target(job["target"])
        ref = None
        if job.get("runtime_reference"):
            # The fixed reference exported through this target, in this runtime and process.
            from kdmobile.harness.reference import runtime_reference_call

            rr = job["runtime_reference"]
            try:
                ref = runtime_reference_call(rr["target"], rr["path"], threads)
                ref()
                result["ratio_reference"] = rr["id"]
            except Exception as e:  # noqa: BLE001 - fall back to the eager model, and say so
                ref = None
                result["details"]["reference_error"] = f"{type(e).__name__}: {e}"
        if ref is None:
            ref = _reference(job, eval_set, threads)
        path = Path(job["artifact"])
        # A first, untimed load pays the runtime's own import and start-up (an app pays that once, with
        # the library); load time and peak memory are then those of this model in a warm runtime.
        try:
            first, first_load_ms = timed(lambda: target.load(path, threads=threads))
            del first
        except RuntimeUnavailable as e:
            return {**result, "status": "unavailable", "reason": e.reason}
        except Exception as e:  # noqa: BLE001 - a failing runtime is a result, not a crash
            return {**result, "status": "load_failed", "reason": f"{type(e).__name__}: {e}"}
        result["details"]["first_load_ms"] = first_load_ms
        with PeakMemory() as mem:
            try:
                runtime, load_ms = timed(lambda: target.load(path, threads=threads))
            except Exception as e:  # noqa: BLE001
                return {**result, "status": "load_failed", "reason": f"{type(e).__name__}: {e}"}
            specs = list(getattr(runtime, "inputs", []) or [])
            dtypes = [np.dtype(sp.dtype) for sp in specs] if specs else [x.dtype for x in eval_set.inputs]
            rows = [x.astype(dt) for x, dt in zip(eval_set.inputs, dtypes, strict=False)]
            try:
                logits = np.concatenate(
                    [
                        np.concatenate(
                            [np.asarray(o).reshape(1, -1) for o in runtime(*[x[i : i + 1] for x in rows])], 1
                        )
                        for i in range(len(eval_set))
                    ]
                )
                xs = [np.ascontiguousarray(x[index : index + 1]) for x in rows]
                if path.suffix == ".onnx":
                    # The fixed reference is an ONNX model: time it in the artifact's own runtime.
                    from kdmobile.harness.reference import ORT_REFERENCE_ID, ort_reference, reference_ids

                    ref = ort_reference(reference_ids(eval_set, index), threads)
                    result["ratio_reference"] = ORT_REFERENCE_ID
                lat = measure_latency(lambda: runtime(*xs), reference=ref, **timing)
            except Exception as e:  # noqa: BLE001
                return {**result, "status": "run_failed", "reason": f"{type(e).__name__}: {e}"}
        result.update(
            load_ms=load_ms,
            latency=_latency_dict(lat),
            peak_memory_bytes=mem.peak_bytes,
            input_dtype=",".join(str(dt) for dt in dtypes),
        )
        np.save(out_dir / "logits.npy", logits.astype(np.float32))
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    result["os_threads"] = psutil.Process().num_threads()
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m kdmobile.harness.worker JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    out = Path(job["out"]) / "result.json"
    try:
        result = run_job(job)
    except Exception as e:  # noqa: BLE001 - reported to the parent with the traceback
        result = {
            "status": "run_failed",
            "reason": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
        }
    from kdmobile.io import write_json

    write_json(out, result)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: some runtimes crash in their atexit handlers


if __name__ == "__main__":
    sys.exit(main())
