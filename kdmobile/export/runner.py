"""Export one checkpoint to every requested target and precision, validate each artifact, write a summary.

    kdmobile export build/email/student.safetensors --all --bundle -o build/export

Per artifact: export → lower → serialize (into a temporary path) → load → run → compare with the eager
model; only an artifact that passed is renamed into place, so a failure at any stage leaves no file
behind. One target failing never stops the others; its result names the stage and the reason. A runtime
that cannot run here (Core ML off macOS) is not a failure: the artifact is kept as
``conversion_validated`` with the reason. See ``kdmobile/export/__init__.py`` for the output contract.
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdmobile.errors import UsageError
from kdmobile.export.base import (
    STAGE_STATUS,
    ExportError,
    MismatchError,
    ModelSpec,
    Runtime,
    RuntimeUnavailable,
    Stage,
    Status,
    Target,
    clean_message,
    hints_for,
    precision_family,
    with_hint,
)
from kdmobile.io import atomic_path, sha256_file, write_json

SCHEMA_VERSION = 1
BASE_PACKAGES = ("torch", "numpy", "kdmobile")


def artifact_metadata_path(artifact: str | Path) -> Path:
    """The sidecar JSON of an artifact: ``model_int8.tflite`` → ``model_int8.tflite.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def read_summary(path: str | Path) -> dict[str, Any]:
    """Read ``summary.json`` (a directory is taken to contain it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    if not path.is_file():
        raise UsageError(f"export summary not found: {path} (run `kdmobile export ... -o DIR` first)")
    data = json.loads(path.read_text())
    if data.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(
            f"{path}: schema_version {data.get('schema_version')} != {SCHEMA_VERSION}; re-run kdmobile export"
        )
    return data


def load_artifact(path: str | Path, threads: int = 1) -> Runtime:
    """Load an exported artifact in its runtime, using its sidecar to find the target."""
    from kdmobile.export.discovery import get_target

    path = Path(path)
    meta_file = artifact_metadata_path(path)
    if not meta_file.is_file():
        raise UsageError(f"no metadata sidecar {meta_file} beside {path}: was it written by kdmobile export?")
    meta = json.loads(meta_file.read_text())
    return get_target(meta["target"]).load(path, threads=threads)


def tool_versions(packages: Sequence[str]) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


@dataclass
class Result:
    """One artifact's outcome; ``to_dict`` is the summary row (see the package docstring)."""

    target: str
    precision: str
    status: Status
    path: Path | None = None
    metadata: Path | None = None
    stage: Stage | None = None
    reason: str | None = None
    op: str | None = None
    flavour: str | None = None
    error_stats: dict[str, Any] | None = None
    error_stats_by_split: dict[str, Any] | None = None
    tolerance: dict[str, Any] | None = None
    size_bytes: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    inputs: list[Any] = field(default_factory=list, repr=False)
    outputs: list[Any] = field(default_factory=list, repr=False)
    sha256: str | None = None

    @property
    def failed(self) -> bool:
        return self.status not in (Status.OK, Status.VALIDATED_CONVERSION, Status.UNAVAILABLE)

    def to_dict(self, root: Path) -> dict[str, Any]:
        def rel(p: Path | None) -> str | None:
            return None if p is None else os.path.relpath(p, root)

        return {
            "target": self.target,
            "precision": self.precision,
            "flavour": self.flavour,
            "path": rel(self.path),
            "metadata": rel(self.metadata),
            "status": self.status.value,
            "stage": self.stage.value if self.stage else None,
            "reason": self.reason,
            "op": self.op,
            "error_stats": self.error_stats,
            "error_stats_by_split": self.error_stats_by_split,
            "tolerance": self.tolerance,
            "size_bytes": self.size_bytes,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "flags": self.flags,
            "details": self.details,
        }


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def export_one(
    target: Target,
    model: Any,
    spec: ModelSpec,
    eager: dict[str, Any],
    precision: str,
    out_dir: Path,
    *,
    source: dict[str, Any],
    threads: int = 1,
    options: dict[str, Any] | None = None,
    others: dict[str, list[Any]] | None = None,
) -> Result:
    """Export, validate and (only on success) write one artifact and its sidecar. Never raises ExportError.

    A target may offer several variants of a precision (``Target.variants``, e.g. ExecuTorch int8: static,
    then dynamic); they are tried in order and the first that passes validation is kept. Every failed
    attempt is recorded under ``details.attempts`` with its stage, reason and error stats. A filesystem
    error (e.g. the target's folder is not writable) fails this artifact only, at the ``serialize`` stage.
    ``eager`` is the reference's first output per split, ``others`` its further outputs (if any).
    """
    from kdmobile.export.validate import judged_tolerance

    tol = judged_tolerance(target.tolerance(precision), spec)  # what the result records is what is applied
    tolerance = {
        "atol": tol.atol,
        "rtol": tol.rtol,
        "min_sqnr_db": tol.min_sqnr_db,
        "min_top1_agreement": tol.min_top1_agreement,
    }
    attempts: list[dict[str, Any]] = []
    variants = [v for v in target.variants(precision) if target.variant_applies(v, model)]
    variants = variants or [target.variants(precision)[-1]]
    for i, variant in enumerate(variants):
        res = Result(target.name, precision, Status.OK, tolerance=tolerance)
        _attempt(res, target, model, spec, eager, precision, out_dir, variant, threads, others)
        if res.stage is None or i == len(variants) - 1:
            break
        attempts.append(
            {
                "variant": variant,
                "flavour": res.flavour,
                "status": res.status.value,
                "stage": res.stage.value,
                "reason": res.reason,
                "error_stats": res.error_stats,
                "error_stats_by_split": res.error_stats_by_split,
            }
        )
    if attempts:
        res.details["attempts"] = attempts
        if res.stage is None:
            res.flags.append(
                f"variant {attempts[-1]['variant']!r} failed ({attempts[-1]['reason']}); kept {res.flavour}"
            )
    if res.stage is not None:
        if attempts:  # every variant failed: the last one's reason alone can hide the telling one
            earlier = "; ".join(f"{a['variant']}: {_short(a['reason'])}" for a in attempts)
            res.reason = f"{res.reason} [earlier variants failed too: {earlier}]"
        return res
    try:
        _post_export(res, target, out_dir, options or {})
        _finish(res, target, spec, out_dir, source)
    except OSError as e:
        _fail_fs(res, target, e)
    return res


def _short(reason: str | None, limit: int = 160) -> str:
    """The first line of a failure reason, cut to ``limit`` characters."""
    line = reason.strip().splitlines()[0] if reason and reason.strip() else "no reason given"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _fail_fs(res: Result, target: Target, e: OSError) -> None:
    """A filesystem error fails this artifact (its files are removed); the other targets carry on."""
    for p in (res.metadata, res.path):
        if p is not None and p.exists():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    res.status, res.stage = Status.EXPORT_FAILED, Stage.SERIALIZE
    res.reason = f"{target.name}: serialize failed: {clean_message(e)}"
    res.path = res.metadata = None


def _post_export(res: Result, target: Target, out_dir: Path, options: dict[str, Any]) -> None:
    """The target's extra steps on a validated artifact (e.g. onnx-web's ``.ort``); a failure is a flag."""
    assert res.path is not None
    try:
        res.details.update(target.post_export(res.path, res.precision, options, out_dir))
    except Exception as e:  # noqa: BLE001 - an optional extra: reported, never fatal
        res.flags.append(f"post-export step failed: {clean_message(e)}")


def _attempt(
    res: Result,
    target: Target,
    model: Any,
    spec: ModelSpec,
    eager: dict[str, Any],
    precision: str,
    out_dir: Path,
    variant: str | None,
    threads: int,
    others: dict[str, list[Any]] | None = None,
) -> None:
    """One export + validation into a temporary path; renamed into place only on success."""
    from kdmobile.export.validate import validate

    dest = out_dir / target.name / target.artifact_name(precision)
    t0 = time.perf_counter()
    try:
        with atomic_path(dest, is_dir=target.is_dir_artifact) as tmp:
            if target.is_dir_artifact:
                tmp.rmdir()  # the exporter creates the package directory itself
            try:
                details = target.export(copy.deepcopy(model).eval(), spec, tmp, precision, variant=variant)
            except ExportError:
                raise
            except Exception as e:  # noqa: BLE001 - a bug in an exporter is still a staged failure
                raise ExportError(Stage.EXPORT, target.name, with_hint(clean_message(e))) from e
            res.seconds["export"] = time.perf_counter() - t0
            res.flavour = details.pop("flavour", precision)
            res.details.update(details)
            t1 = time.perf_counter()
            try:
                with target.stage(Stage.LOAD):
                    runtime = target.load(tmp, threads=threads)
            except RuntimeUnavailable as e:
                res.status, res.reason = Status.VALIDATED_CONVERSION, e.reason
            else:
                with target.stage(Stage.RUN):
                    stats, by_split, _, rest = validate(
                        runtime, spec, eager, target.tolerance(precision), target.name, others
                    )
                del runtime
                res.error_stats = stats.to_dict()
                res.error_stats_by_split = {k: v.to_dict() for k, v in by_split.items()}
                if rest:
                    res.details["outputs"] = {name: s.to_dict() for name, s in rest.items()}
                res.details.update(target.extra_validation(tmp, spec, eager, precision))
            res.seconds["validate"] = time.perf_counter() - t1
            res.inputs, res.outputs = target.inspect(tmp)
            res.size_bytes = _size(tmp)
            res.sha256 = sha256_file(tmp)
    except ExportError as e:
        res.status = STAGE_STATUS[e.stage]
        res.stage, res.reason, res.op = e.stage, str(e), e.op
        if isinstance(e, MismatchError) and e.stats is not None:
            res.error_stats, res.error_stats_by_split = e.stats, e.by_split
        res.seconds.setdefault("export", time.perf_counter() - t0)
        return
    except OSError as e:  # the destination folder itself (mkdir, rename): this artifact only
        res.seconds.setdefault("export", time.perf_counter() - t0)
        _fail_fs(res, target, e)
        return
    res.path = dest


def _finish(res: Result, target: Target, spec: ModelSpec, out_dir: Path, source: dict[str, Any]) -> None:
    """Flags and the metadata sidecar of an artifact that passed."""
    assert res.path is not None
    res.flags.extend(target.flags(res.details))
    res.metadata = artifact_metadata_path(res.path)
    write_json(
        res.metadata,
        {
            "schema_version": SCHEMA_VERSION,
            "target": target.name,
            "runtime": target.runtime,
            "precision": res.precision,
            "flavour": res.flavour,
            "artifact": res.path.name,
            "size_bytes": res.size_bytes,
            "sha256": res.sha256,
            "inputs": [s.to_dict() for s in res.inputs],
            "outputs": [s.to_dict() for s in res.outputs],
            "model_inputs": [s.to_dict() for s in spec.inputs],
            "model_outputs": [s.to_dict() for s in spec.outputs],
            **source,
            "tool_versions": tool_versions((*BASE_PACKAGES, *target.packages)),
            "status": res.status.value,
            "reason": res.reason,
            "tolerance": res.tolerance,
            "error_stats": res.error_stats,
            "error_stats_by_split": res.error_stats_by_split,
            "flags": res.flags,
            "details": res.details,
            "created": _now(),
        },
    )


def resolve_selection(
    names: Sequence[str] | None, precisions: Sequence[str] | None, all_targets: bool
) -> list[tuple[Target, list[str], list[str]]]:
    """[(target, precisions to export, requested precisions it does not offer)]; bad names → UsageError."""
    from kdmobile.export.base import PRECISIONS
    from kdmobile.export.discovery import discover

    registry = discover()
    if all_targets or not names:
        if not all_targets:
            raise UsageError(
                "name at least one --target (choices: " + ", ".join(registry.names()) + ") or pass --all"
            )
        names = registry.names()
    chosen = []
    for n in dict.fromkeys(names):
        if n not in registry:
            raise UsageError(f"unknown target {n!r}; valid: {', '.join(registry.names())}")
        chosen.append(registry.get(n)())
    for p in precisions or ():
        if p not in PRECISIONS:
            raise UsageError(f"unknown precision {p!r}; valid: {', '.join(PRECISIONS)}")
    plan = []
    for t in chosen:
        if precisions:
            wanted = [p for p in dict.fromkeys(precisions) if p in t.precisions]
            # --precision int8 also brings a target's other int8 flavours only when asked by name
            missing = [p for p in dict.fromkeys(precisions) if p not in t.precisions]
        else:
            wanted, missing = list(t.default_precisions or t.precisions), []
        plan.append((t, wanted, missing))
    if precisions and not any(w for _, w, _ in plan):
        raise UsageError(f"no selected target offers precision {', '.join(precisions)}")
    return plan


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    targets: Sequence[str] | None = None,
    all_targets: bool = False,
    precisions: Sequence[str] | None = None,
    bundle: bool = False,
    ort_format: bool = False,
    n_heldout: int = 512,
    n_random: int = 64,
    n_calibration: int = 128,
    seed: int = 0,
    threads: int = 1,
    trust_unverified: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Export a checkpoint whose metadata names its task; write and return ``summary.json``'s dict.

    The task plug-in (``kdmobile.task``) builds the spec with real samples; the rest is ``run_export``,
    the core of ``kdmobile.export``. ``trust_unverified`` accepts a checkpoint without a sha256
    (see :func:`kdmobile.checkpoint.load_checkpoint`).
    """
    import torch

    from kdmobile.checkpoint import load_checkpoint
    from kdmobile.export.specs import model_spec_for

    plan = resolve_selection(targets, precisions, all_targets)
    checkpoint = Path(checkpoint)
    model, meta = load_checkpoint(checkpoint, trust_unverified=trust_unverified)
    torch.manual_seed(seed)
    spec = model_spec_for(
        model, meta, n_heldout=n_heldout, n_random=n_random, n_calibration=n_calibration, seed=seed
    )
    source = {
        "source_checkpoint": str(checkpoint),
        "checkpoint_sha256": meta.get("sha256") or sha256_file(checkpoint),
        "architecture": meta.get("architecture"),
        "task": spec.task,
    }
    from kdmobile.task import get_task

    result = run_export(
        model,
        spec,
        plan,
        out_dir,
        source=source,
        bundle=bundle,
        task=get_task(spec.task) if bundle else None,
        meta=meta,
        checkpoint=checkpoint,
        options={"ort": True} if ort_format else None,
        threads=threads,
        seed=seed,
        log=log,
    )
    return result.summary


class ExportResult:
    """What ``kdmobile.export`` returns: the per-artifact ``Result``\\ s and the summary.

    Iterate it for the ``Result``\\ s; ``ok`` is False if any artifact failed; ``summary`` is the dict
    written to ``out_dir/summary.json``; ``load(target, precision)`` loads an artifact in its runtime;
    ``str()`` is the human table (with the warnings first).
    """

    def __init__(self, out_dir: Path, results: list[Result], summary: dict[str, Any]) -> None:
        self.out_dir, self.results, self.summary = out_dir, results, summary

    def __iter__(self) -> Iterator[Result]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    @property
    def ok(self) -> bool:
        return bool(self.summary["ok"])

    def result(self, target: str, precision: str = "fp32") -> Result:
        for r in self.results:
            if r.target == target and r.precision == precision:
                return r
        have = ", ".join(f"{r.target}/{r.precision}" for r in self.results)
        raise KeyError(f"no {target}/{precision} result; have {have}")

    def load(self, target: str, precision: str = "fp32", threads: int = 1) -> Runtime:
        """The artifact of ``target``/``precision`` loaded in its runtime (numpy in, list of numpy out)."""
        from kdmobile.export.discovery import get_target

        r = self.result(target, precision)
        if r.path is None:
            raise UsageError(f"{target}/{precision} wrote no artifact: {r.status.value} ({r.reason})")
        return get_target(target).load(r.path, threads=threads)

    def __str__(self) -> str:
        head = [f"! {w}" for w in self.summary.get("warnings", [])]
        return "\n".join([*head, format_table(self.summary)])

    def __repr__(self) -> str:
        n_ok = sum(not r.failed for r in self.results)
        return f"ExportResult({str(self.out_dir)!r}, {n_ok}/{len(self.results)} not failed, ok={self.ok})"


def run_export(
    model: Any,
    spec: ModelSpec,
    plan: list[tuple[Target, list[str], list[str]]],
    out_dir: str | os.PathLike[str],
    *,
    source: dict[str, Any],
    reference: Any = None,
    bundle: bool = False,
    task: Any = None,
    meta: dict[str, Any] | None = None,
    checkpoint: Path | None = None,
    options: dict[str, Any] | None = None,
    threads: int = 1,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    warnings: Sequence[str] = (),
    extra_validation: dict[str, Any] | None = None,
) -> ExportResult:
    """The core of every export: every (target, precision) of ``plan``, validated; bundles; the summary.

    Everything is written into a fresh staging folder beside ``out_dir`` (``.NAME.*.staging.tmp``) and
    swapped in whole at the end, so ``out_dir`` is either the previous export or this one, never a mix;
    an error or Ctrl-C on the way removes the staging folder and leaves ``out_dir`` as it was.
    """
    from kdmobile.export.validate import eager_all_outputs

    log = log or (lambda _msg: None)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    eager_all = eager_all_outputs(model if reference is None else reference, spec)
    eager = {split: outs[0] for split, outs in eager_all.items()}
    others = {split: outs[1:] for split, outs in eager_all.items()} if len(spec.outputs) > 1 else None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: the folder becomes out_dir, with the usual permissions (mkdtemp's are 0700)
    staging = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:12]}.staging.tmp"
    staging.mkdir()
    try:
        results: list[Result] = []
        t_all = time.perf_counter()
        for target, wanted, missing in plan:
            ok, reason = target.availability()
            for p in wanted:
                if not ok:
                    results.append(Result(target.name, p, Status.UNAVAILABLE, reason=reason))
                    log(f"{target.name:<10} {p:<9} unavailable: {reason}")
                    continue
                log(f"{target.name:<10} {p:<9} exporting ...")
                res = export_one(
                    target,
                    model,
                    spec,
                    eager,
                    p,
                    staging,
                    source=source,
                    threads=threads,
                    options=options,
                    others=others,
                )
                results.append(res)
                log(_line(res))
            for p in missing:
                log(f"{target.name:<10} {p:<9} skipped: {target.name} offers {', '.join(target.precisions)}")
        bundles: dict[str, str] = {}
        if bundle:
            from kdmobile.export.bundle import write_bundles

            bundles = write_bundles(
                staging, [t for t, _, _ in plan], results, spec, meta or {}, checkpoint, task=task, log=log
            )
        summary = {
            "schema_version": SCHEMA_VERSION,
            **{k: source.get(k) for k in ("architecture", "task", "checkpoint_sha256")},
            "checkpoint": source.get("source_checkpoint"),
            **({"weights_sha256": source["weights_sha256"]} if source.get("weights_sha256") else {}),
            "created": _now(),
            "tool_versions": tool_versions(
                (*BASE_PACKAGES, *sorted({p for t, _, _ in plan for p in t.packages}))
            ),
            "validation": {
                "splits": {k: int(len(v[0])) for k, v in spec.validation.items()},
                "real_split": spec.real_split,
                "calibration_samples": int(len(spec.calibration[0])),
                "input_specs": [s.to_dict() for s in spec.inputs],
                "output_specs": [s.to_dict() for s in spec.outputs],
                "seed": seed,
                **(extra_validation or {}),
            },
            # a hint shared by the failures (e.g. a data-dependent shape) is said once, up front
            "warnings": [
                *warnings,
                *dict.fromkeys(h for r in results if r.reason for h in hints_for(r.reason)),
            ],
            "results": [r.to_dict(staging) for r in results],
            "bundles": bundles,
            "seconds": round(time.perf_counter() - t_all, 2),
            "ok": not any(r.failed for r in results),
        }
        write_json(staging / "summary.json", summary)
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for r in results:  # the staging paths now live under out_dir
        r.path = None if r.path is None else out_dir / r.path.relative_to(staging)
        r.metadata = None if r.metadata is None else out_dir / r.metadata.relative_to(staging)
    return ExportResult(out_dir, results, summary)


def _check_out_dir(out_dir: Path) -> None:
    """``out_dir`` is replaced whole: refuse a folder that is not a previous export (or the cwd)."""
    here = Path.cwd().resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output {out_dir} exists and is not a folder")
    if out_dir.is_dir():
        resolved = out_dir.resolve()
        if resolved == here or resolved in here.parents:
            raise UsageError(f"output {out_dir} contains the current folder: pick a new folder, e.g. -o out")
        from kdmobile.export.discovery import target_names

        # A previous export: its summary.json, or (one interrupted before it) only target folders.
        ours = {"summary.json", *target_names()}
        if not (out_dir / "summary.json").is_file() and any(p.name not in ours for p in out_dir.iterdir()):
            raise UsageError(
                f"output {out_dir} is a non-empty folder without a summary.json: an export replaces its "
                "output folder whole, so pick a new or empty folder (or a previous export's)"
            )


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` with ``staging`` (two renames; the old export is removed after)."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old.tmp", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        if old is not None:  # put the previous export back
            os.replace(old / out_dir.name, out_dir)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _line(r: Result) -> str:
    head = f"{r.target:<10} {r.precision:<9} {r.status.value:<20}"
    if r.error_stats:
        s = r.error_stats
        head += f" top1 {s['top1_agreement']:.4f}  sqnr {s['sqnr_db']:.1f} dB  max|d| {s['max_abs']:.2e}"
    if r.size_bytes is not None:
        head += f"  {r.size_bytes / 1024:.0f} KiB"
    if r.reason:
        head += f"  ({r.reason})"
    return head


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table of a summary, for the CLI."""
    rows = [
        (
            "target",
            "precision",
            "status",
            "top1(real)",
            "SQNR dB",
            "max|d|",
            "size KiB",
            "flavour / reason",
        )
    ]
    for r in summary["results"]:
        st = r.get("error_stats") or {}
        real = (r.get("error_stats_by_split") or {}).get(summary["validation"].get("real_split") or "", {})
        rows.append(
            (
                r["target"],
                r["precision"],
                r["status"] + (f" @{r['stage']}" if r.get("stage") else ""),
                f"{real.get('top1_agreement', st.get('top1_agreement', float('nan'))):.4f}" if st else "-",
                f"{st['sqnr_db']:.1f}" if st else "-",
                f"{st['max_abs']:.2e}" if st else "-",
                f"{r['size_bytes'] / 1024:.0f}" if r.get("size_bytes") is not None else "-",
                (r.get("reason") or r.get("flavour") or "")[:110],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows
    ]
    flags = [
        f"  ! {r['target']} {r['precision']}: {f}" for r in summary["results"] for f in r.get("flags", [])
    ]
    return "\n".join(lines + (["flags:", *flags] if flags else []))


__all__ = [
    "ExportResult",
    "Result",
    "artifact_metadata_path",
    "export_checkpoint",
    "export_one",
    "format_table",
    "load_artifact",
    "precision_family",
    "read_summary",
    "resolve_selection",
    "run_export",
    "tool_versions",
]
