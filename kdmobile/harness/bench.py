"""Measure every exported artifact in its real runtime, plus the teacher and the eager student; one report.

    kdmobile bench build/export --task email --data heldout -o build/report

Per entry: file size, load time, batch-1 latency (warm-up, then at least ``min_runs`` runs and
``min_seconds``; p50/p90/p99/mean/std), peak memory, threads, accuracy on the evaluation set (top-1,
recall@3), agreement with the teacher's top-1 and retention (top-1 / teacher top-1). Every Python-side entry
runs in its own worker process (``kdmobile.harness.worker``), interleaved with the same-run reference.

**The same-run reference of the teacher (and of an artifact whose target cannot export the fixed
reference model) is the eager student** (PyTorch, same threads, same input): it is the same model,
so it has the same kind of cost as the artifacts (a few small ops, dominated by dispatch and memory rather
than arithmetic) and moves with the machine the way they do, whereas the teacher is a compute-bound
Transformer ~1000× slower whose ratio would drift with the machine's matmul speed. It is also cheap enough
to interleave with every artifact in short blocks, which cancels the drift of a shared machine. Ratios to
the teacher (speed-up) and to the compute floor (FLOPs / the matmul rate measured in the same run) are
reported too. The web bundle also runs in headless Chromium (``kdmobile.harness.browser``), 1 thread and
multi-threaded, with the JavaScript tokenizer, and must give the same token ids and the same top-1 as
Python onnxruntime on every evaluation example; its reference is a fixed ONNX model timed in the same page
(``kdmobile.harness.reference``), since a browser cannot share a process with the eager student, and the
ONNX artifacts in Python onnxruntime use that model too (a reference in another runtime reacts to load
differently), and every other artifact (ExecuTorch, LiteRT, ...) divides by the same network exported
through its own target and timed in its worker process (``reference.runtime_reference``: cached, named by
its sha256 and converter versions). Each entry names its reference (``ratio_reference``); ``kdmobile
check`` refuses to compare ratios to different ones.

Every entry with accuracy figures also records its per-example ``outcomes`` (which examples it got right,
and its top class per example), with the evaluation set's fingerprint: ``kdmobile check`` judges an
accuracy change by a paired test on the examples that flipped.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdmobile.errors import UsageError
from kdmobile.harness.integrity import ExportFolder, open_export
from kdmobile.harness.report import (
    SCHEMA,
    SCHEMA_VERSION,
    all_entries,
    display_name,
    entry_id,
    new_entry,
    sort_key,
    write_report,
)
from kdmobile.harness.tasks import fidelity, is_npz
from kdmobile.interrupt import sigterm_as_interrupt

# Statuses that fail a bench. ``corrupt``: the artifact's sha256 differs from its sidecar (never measured).
FAILED = ("load_failed", "run_failed", "mismatch", "corrupt")
PY_REFERENCE = "eager student (PyTorch, same worker process)"


@dataclass
class BenchOptions:
    """How to measure. The defaults are for real bench runs; tests pass a short window."""

    threads: int = 1
    min_runs: int = 200
    min_seconds: float = 10.0
    max_seconds: float | None = None
    warmup_runs: int = 20
    server_batch: int = 32
    browser: bool = True
    browser_threads: tuple[int, ...] | None = None  # default: (1, min(4, cores))
    browser_min_seconds: float | None = None  # default: min_seconds
    teacher: str | None = None  # teacher weights; default: the task finds them
    student: str | None = None  # student checkpoint; default: the one named in summary.json
    targets: tuple[str, ...] | None = None  # only these targets (default: every artifact in the summary)
    precisions: tuple[str, ...] | None = None  # only these precisions (default: all)
    include_teacher: bool = True  # measure the teacher (speed-up, agreement and retention need it)
    include_student: bool = True  # measure the eager student (browser ratios need it)
    trust_unverified: bool = False  # accept a student checkpoint without a sha256 (--trust-unverified)
    worker_timeout: float = 900.0
    extra: dict[str, Any] = field(default_factory=dict)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version(dist: str | None) -> str | None:
    import importlib.metadata

    if not dist:
        return None
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def run_worker(
    job: dict[str, Any], workdir: Path, timeout: float
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Run one job in a fresh Python process; a crash or timeout becomes a ``run_failed`` result."""
    out = Path(tempfile.mkdtemp(prefix=f"{job['kind']}-", dir=workdir))
    job = {**job, "out": str(out)}
    (out / "job.json").write_text(json.dumps(job))
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "kdmobile.harness.worker", str(out / "job.json")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {
            "status": "run_failed",
            "reason": f"the measurement did not finish within {timeout:.0f} s",
        }, None
    res_file = out / "result.json"
    if not res_file.is_file():
        tail = " | ".join(line for line in proc.stderr.strip().splitlines()[-5:])
        return {"status": "run_failed", "reason": f"worker exited with code {proc.returncode}: {tail}"}, None
    result = json.loads(res_file.read_text())
    logits_file = out / "logits.npy"
    logits = np.load(logits_file) if result.get("status") == "ok" and logits_file.is_file() else None
    return result, logits


class _Bench:
    """One bench run (state shared by the steps of ``run_bench``)."""

    def __init__(
        self,
        folder: ExportFolder,
        task: str | None,
        data: str,
        options: BenchOptions,
        log: Callable[[str], None],
    ):
        from kdmobile.checkpoint import read_metadata
        from kdmobile.harness.tasks import eval_set_for

        self.folder, self.dir, self.summary = folder, folder.dir, folder.summary
        self.task_name, self.data, self.opt, self.log = task, data, options, log
        self.checkpoint = folder.eager  # the eager model the artifacts came from (None: not here)
        if self.checkpoint is None and not is_npz(data):
            raise UsageError(
                f"no student checkpoint: {folder.eager_note}; run `kdmobile bench` from the directory "
                "`kdmobile export` ran in, or pass --student PATH (or bench on your own --data FILE.npz)"
            )
        is_ckpt = self.checkpoint is not None and Path(self.checkpoint).suffix not in (".pt2",)
        self.student_meta = read_metadata(self.checkpoint) if is_ckpt else {}
        self.validation = self.summary.get("validation") or {}
        self.eval_set = eval_set_for(task, data, self.student_meta, self.validation)
        self.task = None
        if task:
            from kdmobile.task import get_task

            self.task = get_task(task)
        self.reference = self.checkpoint or self._fp32_artifact()
        self.reference_id: str | None = "student" if self.checkpoint else None  # set for an artifact
        self.workdir: Path | None = None  # made by run_bench, inside its clean-up
        self.versions: dict[str, Any] = {}
        self.teacher_logits: np.ndarray | None = None
        self.logits: dict[str, np.ndarray] = {}
        self.runtime_refs: dict[str, dict[str, Any]] = {}  # target -> its exported fixed reference
        self.student_flops = self._student_flops()

    def _fp32_artifact(self) -> str | None:
        """With no eager model here, the first verified fp32 artifact that runs here is the reference."""
        from kdmobile.export import discover

        registry = discover()
        for rec in sorted(
            self.folder.records,
            key=lambda r: registry.get(r.row["target"]).report_order if r.row["target"] in registry else 1000,
        ):
            r = rec.row
            if r["status"] == "ok" and r["precision"] == "fp32" and rec.path and not rec.problem:
                return str(rec.path)
        return None

    def _student_flops(self) -> int | None:
        from kdmobile.harness.eager import load_model

        if self.checkpoint is None:
            return None
        i = self.eval_set.latency_index
        return load_model(self.checkpoint, trust_unverified=self.opt.trust_unverified).flops(
            self.eval_set.rows([i])
        )

    def runtime_reference(self, target: str) -> dict[str, Any] | None:
        """The fixed reference exported through ``target`` (``kdmobile.harness.reference``), built once per
        machine and converter versions; None (the eager model is the reference) if it cannot be built."""
        from kdmobile.harness.reference import runtime_reference

        if target not in self.runtime_refs:
            try:
                self.runtime_refs[target] = runtime_reference(target)
            except Exception as e:  # noqa: BLE001 - a converter failing on it: fall back, and say so
                self.runtime_refs[target] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                self.log(f"bench: no fixed {target} reference ({self.runtime_refs[target]['error']})")
        ref = self.runtime_refs[target]
        return None if "error" in ref else ref

    def job(self, kind: str, **extra: Any) -> dict[str, Any]:
        o = self.opt
        return {
            "kind": kind,
            "task": self.task_name,
            "data": self.data,
            "student_checkpoint": self.checkpoint,
            "reference": self.reference,
            "trust_unverified": o.trust_unverified,
            "validation": {k: self.validation.get(k) for k in ("input_specs", "output_specs")},
            "threads": o.threads,
            "server_batch": o.server_batch,
            "timing": {
                "warmup_runs": o.warmup_runs,
                "min_runs": o.min_runs,
                "min_seconds": o.min_seconds,
                "max_seconds": o.max_seconds,
            },
            **extra,
        }

    def fill_measured(
        self, entry: dict[str, Any], res: dict[str, Any], logits: np.ndarray | None
    ) -> dict[str, Any]:
        entry["status"] = res.get("status", "run_failed")
        entry["reason"] = res.get("reason")
        if entry["status"] != "ok":
            return entry
        lat = res["latency"]
        entry["latency_ms"] = lat["summary"]
        entry["samples_ms"] = lat["samples_ms"]
        entry["ratio_samples"] = lat["ratio_samples"] or None
        entry["ratio_to_reference"] = lat["ratio_p50"]
        entry["ratio_reference"] = (
            (res.get("ratio_reference") or PY_REFERENCE) if lat["ratio_samples"] else None
        )
        entry["load_ms"] = res.get("load_ms")
        entry["peak_memory_bytes"] = res.get("peak_memory_bytes")
        entry["measurement"] = {k: lat[k] for k in ("rounds", "seconds", "warmup_runs")}
        if lat.get("reference"):
            entry["measurement"]["reference_latency_ms"] = lat["reference"]
        entry["details"].update(res.get("details") or {})
        entry["details"]["os_threads"] = res.get("os_threads")
        if logits is not None:
            self.logits[entry["id"]] = logits
        return entry


def outcomes(
    logits: np.ndarray, acceptable: list[list[int]] | None, teacher_logits: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Per-example outcomes behind the accuracy figures: ``top1`` (the top class is acceptable),
    ``recall_at_3`` (an acceptable class is among the 3 best), ``teacher_agreement`` (same top class as the
    teacher) and ``top1_class``. Ties go to the lower class index, as ``np.argmax`` and a stable sort do."""
    logits = np.asarray(logits)
    top = np.argsort(-logits, axis=1, kind="stable")[:, :3]
    out = {"top1_class": top[:, 0]}
    if acceptable is not None:  # an unlabelled evaluation set (a user's .npz without labels) has none
        ok = [set(a) for a in acceptable]
        out["top1"] = np.array([t[0] in a for t, a in zip(top, ok, strict=True)])
        out["recall_at_3"] = np.array([any(int(c) in a for c in t) for t, a in zip(top, ok, strict=True)])
    if teacher_logits is not None:
        out["teacher_agreement"] = np.asarray(teacher_logits).argmax(1) == top[:, 0]
    return out


def _accuracy(entry: dict[str, Any], logits: np.ndarray | None, b: _Bench) -> None:
    """Metrics on the evaluation set (classifiers) and fidelity to the reference model's outputs."""
    from kdmobile.harness.stats import pack_bits

    if logits is None:
        return
    ref_id = "student" if b.checkpoint else b.reference_id
    ref = b.logits.get(ref_id)
    if ref is not None and entry["id"] != ref_id and entry["kind"] != "teacher" and ref.shape == logits.shape:
        what = "the eager model" if b.checkpoint else f"{ref_id} (no eager model here)"
        entry["details"]["fidelity"] = {"vs": what, **fidelity(logits, ref)}
    if not b.eval_set.info.get("classifier", True):
        return
    m = b.eval_set.metrics(logits, b.teacher_logits)
    entry["top1"] = m.get("top1")
    entry["recall_at_3"] = m.get("recall_at_3")
    entry["teacher_agreement"] = m.get("teacher_agreement")
    entry["n_examples"] = int(m["n"])
    if m.get("kl") is not None:
        entry["details"]["kl_to_teacher"] = m["kl"]
    # What `kdmobile check` tests pairwise. A metric whose per-example mean is not the task's own figure
    # (a task with other metric definitions) is left out rather than judged on something else.
    # A task whose last outputs are not classes to rank (the email task's "no reply" column) names how
    # many leading columns its metrics rank; the per-example outcomes rank the same ones.
    cols = b.eval_set.info.get("score_columns")
    teacher = b.teacher_logits
    if cols is not None:
        logits = np.asarray(logits)[:, :cols]
        teacher = None if teacher is None else np.asarray(teacher)[:, :cols]
    per = outcomes(logits, b.eval_set.acceptable, teacher)
    kept: dict[str, Any] = {"n": int(len(logits)), "eval_fingerprint": b.eval_set.fingerprint()}
    for metric in ("top1", "recall_at_3", "teacher_agreement"):
        if metric in per and m.get(metric) is not None and abs(float(per[metric].mean()) - m[metric]) < 1e-9:
            kept[metric] = pack_bits(per[metric])
    kept["top1_class"] = [int(c) for c in per["top1_class"]]
    entry["outcomes"] = kept


def _measure_student(b: _Bench) -> dict[str, Any]:
    e = new_entry(
        id="student",
        kind="student",
        target="eager",
        precision="fp32",
        runtime="PyTorch eager",
        runtime_version=_version("torch"),
        path=b.checkpoint,
        threads=b.opt.threads,
        batch=1,
        details={"role": "same-run reference"},
    )
    if b.checkpoint is None:
        e["status"] = "unavailable"
        e["reason"] = (
            f"{b.folder.eager_note}: artifacts are judged against the fp32 artifact "
            f"{b.reference or '(none runs here)'} instead (pass --student PATH for the eager model)"
        )
        return e
    b.log("bench: eager student (PyTorch) ...")
    res, logits = run_worker(b.job("student"), b.workdir, b.opt.worker_timeout)
    e["size_bytes"] = _size(Path(b.checkpoint))
    b.fill_measured(e, res, logits)
    e["flops"] = b.student_flops
    return e


def _measure_teacher(b: _Bench) -> dict[str, Any]:
    path = b.opt.teacher or (b.task.find_teacher(b.student_meta, b.checkpoint) if b.task else None)
    e = new_entry(
        id="teacher",
        kind="teacher",
        target="server",
        precision="fp32",
        runtime="PyTorch eager",
        runtime_version=_version("torch"),
        threads=b.opt.threads,
        batch=1,
        path=path,
    )
    if not path or not Path(path).exists():
        e["status"] = "unavailable"
        e["reason"] = f"no teacher weights found ({path or 'none named'}): pass --teacher PATH"
        return e
    b.log("bench: teacher (batch 1 and server batch) ...")
    res, logits = run_worker(b.job("teacher", teacher=str(path)), b.workdir, b.opt.worker_timeout)
    b.fill_measured(e, res, logits)
    if e["status"] == "ok":
        e["size_bytes"] = res.get("size_bytes")
        e["flops"] = res.get("flops")
        e["runtime"] = res.get("runtime") or "PyTorch eager"
        e["flavour"] = res.get("name")
        b.teacher_logits = logits
        b.logits["teacher"] = logits
    return e


def _measure_artifacts(b: _Bench) -> list[dict[str, Any]]:
    from kdmobile.export import discover

    registry = discover()
    out = []
    records = [
        rec
        for rec in b.folder.records
        if (not b.opt.targets or rec.row["target"] in b.opt.targets)
        and (not b.opt.precisions or rec.row["precision"] in b.opt.precisions)
    ]
    # With no eager model here the fp32 reference artifact goes first: the others' fidelity is judged on it.
    records.sort(key=lambda rec: str(rec.path) != b.reference)
    for rec in records:
        r, path = rec.row, rec.path
        target = registry.get(r["target"])() if r["target"] in registry else None
        label = (target.runtime_label or target.runtime) if target else r["target"]
        dist = (target.runtime_dist or (target.packages[0] if target.packages else None)) if target else None
        e = new_entry(
            id=entry_id(r["target"], r["precision"], label),
            kind="artifact",
            target=r["target"],
            precision=r["precision"],
            runtime=label,
            runtime_version=_version(dist),
            flavour=r.get("flavour"),
            status=r.get("status"),
            reason=r.get("reason"),
            path=str(path) if path else None,
            size_bytes=_size(path) if path and path.exists() else r.get("size_bytes"),
            threads=b.opt.threads,
            batch=1,
            details={
                "export_stage": r.get("stage"),
                "error_stats": r.get("error_stats"),
                "sha256": rec.sha256,
            },
        )
        if str(path) == b.reference:
            b.reference_id = e["id"]
        if rec.problem:
            e["status"], e["reason"] = ("corrupt" if rec.sha256 else "load_failed"), rec.problem
            out.append(e)
            continue
        if r.get("status") != "ok" or path is None or target is None:
            if r.get("status") == "ok":
                e["status"], e["reason"] = (
                    "load_failed",
                    f"the target {r['target']!r} of {path} is not installed",
                )
            else:
                e["details"]["from_export"] = True  # not measured here: the export summary's verdict
            out.append(e)
            continue
        b.log(f"bench: {r['target']} {r['precision']} ({label}) ...")
        # ONNX artifacts divide by the fixed ONNX model in onnxruntime (the worker builds it); the others
        # by the same network exported through their own target.
        ref = b.runtime_reference(r["target"]) if path.suffix != ".onnx" else None
        job = b.job("artifact", target=r["target"], artifact=str(path))
        if ref:
            job["runtime_reference"] = {"target": r["target"], "path": ref["path"], "id": ref["id"]}
        res, logits = run_worker(job, b.workdir, b.opt.worker_timeout)
        b.fill_measured(e, res, logits)
        if e["status"] == "ok":
            e["details"]["input_dtype"] = res.get("input_dtype")
        out.append(e)
    return out


def _measure_browser(b: _Bench, artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from kdmobile.harness import browser as B
    from kdmobile.harness.reference import REFERENCE_ID

    bundle = b.dir / "onnx-web" / "bundle"
    py = {e["precision"]: e for e in artifacts if e["target"] == "onnx-web"}
    wanted = b.opt.precisions or ("fp32", "int8")
    models = [
        (p, f"model_{p}.onnx")
        for p in ("fp32", "int8")
        if p in wanted and (bundle / f"model_{p}.onnx").is_file()
    ]
    py = {p: e for p, e in py.items() if p in wanted}
    if b.opt.targets and "onnx-web" not in b.opt.targets:
        return []
    threads = b.opt.browser_threads or (1, max(2, min(4, os.cpu_count() or 2)))
    entries: dict[tuple[str, int], dict[str, Any]] = {}
    for p, _ in models or [(p, None) for p in py]:
        for t in threads:
            entries[(p, t)] = new_entry(
                id=entry_id("onnx-web", p, "browser", t, kind="browser"),
                kind="browser",
                target="onnx-web",
                precision=p,
                runtime="onnxruntime-web (Chromium wasm)",
                runtime_version=B.ort_web_version(),
                path=str(bundle / f"model_{p}.onnx"),
                size_bytes=_size(bundle / f"model_{p}.onnx")
                if (bundle / f"model_{p}.onnx").is_file()
                else None,
                threads=t,
                batch=1,
                status="unavailable",
            )
    if not entries:
        return []
    if not models:
        for e in entries.values():
            e["reason"] = f"no web bundle at {bundle} (export with --bundle)"
        return list(entries.values())
    damaged = {e["precision"] for e in entries.values() if e["path"] in b.folder.bundle_problems}
    for e in entries.values():
        if e["precision"] in damaged:
            e["status"], e["reason"] = "corrupt", b.folder.bundle_problems[e["path"]]
    models = [(p, m) for p, m in models if p not in damaged]
    if not models:
        return list(entries.values())
    if b.eval_set.texts is None:
        for e in entries.values():
            if e["status"] != "corrupt":
                e["reason"] = "the in-browser run needs a text task (the page tokenises texts in JavaScript)"
        return list(entries.values())
    ok, reason = B.availability()
    if not b.opt.browser or not ok:
        for e in entries.values():
            if e["status"] != "corrupt":
                e["reason"] = reason or "browser runs disabled (--no-browser)"
        return list(entries.values())
    b.log(f"bench: onnx-web in headless Chromium ({', '.join(f'{t} thread(s)' for t in threads)}) ...")
    try:
        runs, versions = B.run_bundle(
            bundle,
            b.eval_set.texts,
            models=[m for _, m in models],
            threads=threads,
            latency_index=b.eval_set.latency_index,
            warmup_runs=b.opt.warmup_runs,
            min_runs=b.opt.min_runs,
            min_seconds=b.opt.browser_min_seconds
            if b.opt.browser_min_seconds is not None
            else b.opt.min_seconds,
            max_seconds=b.opt.max_seconds,
        )
    except Exception as e:  # noqa: BLE001 - the page or the browser failed: every browser entry says why
        for entry in entries.values():
            entry["status"], entry["reason"] = "run_failed", f"{type(e).__name__}: {e}"
        return list(entries.values())
    b.versions.update({k: v for k, v in versions.items() if v})
    from kdmobile.harness.stats import summarize, thin

    by_model = {m: p for p, m in models}
    for run in runs:
        p = by_model[run.model]
        e = entries[(p, run.requested_threads)]
        e["status"], e["reason"] = "ok", None
        e["latency_ms"] = summarize(run.samples_ms)
        e["samples_ms"] = thin(run.samples_ms, 3000)
        e["load_ms"] = run.load_ms
        e["measurement"] = {
            "runs": run.runs,
            "samples": int(run.samples_ms.size),
            "runs_per_sample": round(run.runs_per_sample, 2),
            "timer": "performance.now() (coarse); a sample is the mean per run over a sub-block of >= 0.1 ms",
        }
        if run.ratios.size:
            e["ratio_samples"] = thin(run.ratios, 3000)
            e["ratio_to_reference"] = float(np.median(run.ratios))
            e["ratio_reference"] = REFERENCE_ID
        e["details"].update(
            {
                "cross_origin_isolated": run.cross_origin_isolated,
                "effective_threads": run.threads,
                "tokenize_ms_total": run.tokenize_ms,
                "user_agent": run.user_agent,
                "reference_note": "ratios: model blocks alternate with blocks of the fixed reference model in the page",
            }
        )
        problems = []
        if run.threads != run.requested_threads:
            problems.append(f"asked for {run.requested_threads} wasm threads, got {run.threads}")
        if run.requested_threads > 1 and not run.cross_origin_isolated:
            problems.append("the page is not cross-origin isolated (COOP/COEP missing): no wasm threads")
        # The JS tokenizer must produce exactly the Python ids, on every example.
        if run.ids is not None:
            same = np.array_equal(run.ids, b.eval_set.ids)
            bad = (
                int((run.ids != b.eval_set.ids).any(axis=1).sum())
                if run.ids.shape == b.eval_set.ids.shape
                else len(b.eval_set.ids)
            )
            e["details"]["tokenizer_exact"] = bool(same)
            if not same:
                problems.append(
                    f"the JS tokenizer differs from Python on {bad} of {len(b.eval_set.ids)} examples"
                )
        ref = b.logits.get(py[p]["id"]) if p in py else None
        if ref is not None:
            agree = float(np.mean(run.logits.argmax(1) == ref.argmax(1)))
            e["details"]["python_top1_agreement"] = agree
            e["details"]["max_abs_logit_diff_vs_python"] = float(np.abs(run.logits - ref).max())
            if agree != 1.0:
                problems.append(
                    f"browser top-1 differs from Python onnxruntime on {fmt_share(1 - agree)} of examples"
                )
        else:
            problems.append("no Python onnxruntime result for this precision to compare with")
        b.logits[e["id"]] = run.logits
        _accuracy(e, run.logits, b)
        if problems:
            e["status"], e["reason"] = "mismatch", "; ".join(problems)
    return list(entries.values())


def fmt_share(x: float) -> str:
    return f"{100 * x:.2f}%"


def _derive(report: dict[str, Any], matmul_gflops: float, b_flops: int | None) -> None:
    """Ratios to the teacher and the eager student, speed-ups, compute floor, retention."""
    teacher, student = report["teacher"] or {}, report["student"] or {}
    t50 = (teacher.get("latency_ms") or {}).get("p50") if teacher.get("status") == "ok" else None
    s50 = (student.get("latency_ms") or {}).get("p50") if student.get("status") == "ok" else None
    t_top1 = teacher.get("top1") if teacher.get("status") == "ok" else None
    for e in all_entries(report):
        p50 = (e.get("latency_ms") or {}).get("p50")
        if p50:
            if t50:
                e["ratio_to_teacher"] = p50 / t50
                e["speedup_vs_teacher"] = t50 / p50
            if s50:
                e["ratio_to_student"] = p50 / s50
                e["speedup_vs_student"] = s50 / p50
            flops = e.get("flops") if e["kind"] == "teacher" else (student.get("flops") or b_flops)
            if flops and matmul_gflops:
                e["flops"] = flops
                e["compute_floor_ms"] = flops / (matmul_gflops * 1e9) * 1e3
                e["p50_over_floor"] = p50 / e["compute_floor_ms"]
        if e.get("top1") is not None and t_top1:
            e["retention"] = e["top1"] / t_top1


def goals(
    report: dict[str, Any], min_speedup: float = 20.0, min_retention: float = 0.95
) -> list[dict[str, Any]]:
    """The demo's headline claims, checked on the report (shown in report.md/html, never hard-coded)."""
    arts = [e for e in report["artifacts"] if e["status"] == "ok"]
    out = []
    speed = [(e["speedup_vs_teacher"], display_name(e)) for e in arts if e.get("speedup_vs_teacher")]
    if speed:
        worst = min(speed)
        out.append(
            {
                "goal": f"every student artifact that runs here is >= {min_speedup:g}x faster than the teacher (batch 1, same run)",
                "ok": worst[0] >= min_speedup,
                "detail": f"slowest: {worst[1]} at {worst[0]:.0f}x",
            }
        )
    ret = [
        (e["retention"], e["id"]) for e in arts if e["precision"] == "fp32" and e.get("retention") is not None
    ]
    if ret:
        worst = min(ret)
        out.append(
            {
                "goal": f"retention >= {min_retention:g} for every fp32 artifact",
                "ok": worst[0] >= min_retention,
                "detail": f"lowest: {worst[1]} at {worst[0]:.3f}",
            }
        )
    browser = [e for e in report["artifacts"] if e["kind"] == "browser"]
    if browser:
        same = [
            e for e in browser if e["status"] == "ok" and e["details"].get("python_top1_agreement") == 1.0
        ]
        out.append(
            {
                "goal": "in-browser top-1 equals Python onnxruntime's on every evaluation example (JS tokenizer exact)",
                "ok": len(same) == len(browser),
                "detail": f"{len(same)} of {len(browser)} browser runs identical",
            }
        )
    return out


def _check_output(out: str | Path | None) -> None:
    """``-o`` must be a directory (or not exist yet): refused before anything is measured."""
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"-o {out}: is an existing file, not a report directory; name a directory")


def _check_selection(folder: ExportFolder, options: BenchOptions) -> None:
    """``--target``/precision filters must name something in the folder (else nothing would be measured)."""
    rows = folder.summary["results"]
    for what, wanted, have in (
        ("target", options.targets, sorted({r["target"] for r in rows})),
        ("precision", options.precisions, sorted({r["precision"] for r in rows})),
    ):
        missing = [w for w in wanted or () if w not in have]
        if missing:
            raise UsageError(
                f"--{what} {', '.join(missing)}: not in {folder.dir}/summary.json, which holds "
                f"{', '.join(have) or 'no artifacts'}"
            )


def run_bench(
    artifacts_dir: str | Path,
    *,
    task: str | None = None,
    data: str | None = None,
    out: str | Path | None = None,
    options: BenchOptions | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Bench everything in ``artifacts_dir`` (written by ``kdmobile export``); write the report to ``out``.

    Args:
        task: the task plug-in whose evaluation set and teacher to use (default: the summary's task, none
            with a ``.npz`` ``data``).
        data: the task's split (default ``heldout``) or a ``.npz`` file of model inputs and ``labels``.

    Returns:
        the report dict (also written as report.json/.md/.html when ``out`` is given). ``report["ok"]`` is
        False when an entry failed here (damaged, load, run, or a browser/Python mismatch).
    """
    import shutil

    options = options or BenchOptions()
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    artifacts_dir = Path(artifacts_dir)
    if options.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {options.threads}")
    _check_output(out)
    if not artifacts_dir.is_dir():
        raise UsageError(
            f"artifacts directory not found: {artifacts_dir} "
            f"(run `kdmobile export CHECKPOINT --all --bundle -o {artifacts_dir}` first)"
        )
    t0 = time.perf_counter()
    folder = open_export(artifacts_dir, student=options.student)
    _check_selection(folder, options)
    data = data or "heldout"
    if task is None and not is_npz(data):
        task = folder.summary.get("task")
    import torch

    from kdmobile.harness.machine import machine_info, matmul_rate, tool_versions

    b = _Bench(folder, task, data, options, log)
    prev_threads = torch.get_num_threads()
    try:
        # SIGTERM too: the worker is killed (``subprocess.run`` kills its child on any exception) and the
        # temporary folder removed.
        with sigterm_as_interrupt():
            b.workdir = Path(tempfile.mkdtemp(prefix="kdmobile-bench-"))
            probe_seconds = min(0.3, max(0.05, options.min_seconds / 10))  # a short bench gets a short probe
            probe = matmul_rate(options.threads, seconds=probe_seconds)
            student = _measure_student(b) if options.include_student else None
            teacher = _measure_teacher(b) if options.include_teacher else None
            for e in (teacher, student):
                if e is not None:
                    _accuracy(e, b.logits.get(e["id"]), b)
            artifacts = _measure_artifacts(b)
            for e in artifacts:
                _accuracy(e, b.logits.get(e["id"]), b)
            artifacts += _measure_browser(b, artifacts)
            probe_end = matmul_rate(options.threads, seconds=probe_seconds)
    finally:
        torch.set_num_threads(prev_threads)
        if b.workdir is not None:
            shutil.rmtree(b.workdir, ignore_errors=True)
    machine = machine_info()
    gflops = float(np.median([probe["gflops"], probe_end["gflops"]]))
    machine["matmul_gflops"] = gflops
    machine["matmul_probe"] = {"start": probe, "end": probe_end}
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": _now(),
        "task": b.eval_set.task,
        "data": data,
        "n_examples": int(len(b.eval_set.ids)),
        "eval_fingerprint": b.eval_set.fingerprint(),
        "artifacts_dir": str(artifacts_dir),
        "export_summary": {
            "checkpoint": b.checkpoint,
            "checkpoint_sha256": folder.checkpoint_sha256,
            "created": b.summary.get("created"),
            "ok": b.summary.get("ok"),
            "verified_artifacts": sum(1 for r in folder.records if r.sha256 and not r.problem),
        },
        "machine": machine,
        "versions": tool_versions(b.versions),
        "settings": {**asdict(options), "reference": b.reference_id or "none"},
        "reference": {
            "id": b.reference_id,
            "what": (
                "the eager PyTorch student, same threads and input, interleaved with each Python-side entry "
                "in its worker"
                if b.checkpoint
                else f"no eager model here ({b.folder.eager_note}): the fp32 artifact {b.reference_id}, same "
                "threads and input, interleaved with each Python-side entry"
            )
            + "; ONNX artifacts in Python onnxruntime and in-browser entries: the fixed reference ONNX "
            "model, in the same process or page; the other artifacts: the same fixed network exported "
            "through their own target (``runtimes``), in the same worker process",
            "runtimes": b.runtime_refs,
        },
        "teacher": teacher,
        "student": student,
        "artifacts": sorted(artifacts, key=sort_key),
    }
    _derive(report, gflops, b.student_flops)
    everything = [e for e in (teacher, student, *artifacts) if e is not None]
    failures = [e["id"] for e in everything if e["status"] in FAILED and not e["details"].get("from_export")]
    report["failures"] = failures
    report["export_failures"] = [
        e["id"] for e in everything if e["status"] in FAILED and e["details"].get("from_export")
    ]
    report["ok"] = not failures
    report["goals"] = goals(report)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if out is not None:
        write_report(report, out)
    return report
