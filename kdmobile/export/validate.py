"""Numerical validation of an artifact against the eager model: ``ErrorStats`` and the tolerance check.

    kdmobile export build/email/student.safetensors --target tflite -o build/export

Every artifact runs at batch 1 on every validation sample (real held-out ones and seeded random ones) and
its outputs are compared with the eager model's outputs on the same samples. The first output is taken as
the class scores for top-1 agreement; every further output (a model returning a tuple or dict) is held to
the same bounds except top-1 (``details.outputs`` records its statistics).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from kdmobile.export.base import SQNR_CAP_DB, ErrorStats, MismatchError, ModelSpec, Runtime, Stage, Tolerance


def error_stats(reference: np.ndarray, output: np.ndarray) -> ErrorStats:
    """Compare ``output`` with ``reference`` (both ``[N, ...]``, first axis = samples).

    SQNR is ``10 log10(sum(ref^2) / sum((ref - out)^2))`` in dB, capped at 200 when the outputs are equal.
    Top-1 agreement compares the argmax over the last axis per sample.
    """
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(output, dtype=np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"output shape {out.shape} differs from the reference shape {ref.shape}")
    diff = np.abs(ref - out)
    noise = float(np.sum(diff**2))
    signal = float(np.sum(ref**2))
    if not np.all(np.isfinite(out)):
        sqnr = float("-inf")
    elif noise == 0.0:
        sqnr = SQNR_CAP_DB
    elif signal == 0.0:
        sqnr = float("-inf")
    else:
        sqnr = min(SQNR_CAP_DB, 10.0 * np.log10(signal / noise))
    n = ref.shape[0]
    flat_ref, flat_out = ref.reshape(n, -1), out.reshape(n, -1)
    top1 = float(np.mean(flat_ref.argmax(axis=1) == flat_out.argmax(axis=1))) if n else 0.0
    return ErrorStats(
        max_abs=float(diff.max()) if diff.size else 0.0,
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        sqnr_db=float(sqnr),
        top1_agreement=top1,
        n=int(n),
    )


def run_samples(runtime: Runtime, samples: tuple[np.ndarray, ...], n_outputs: int = 1) -> list[np.ndarray]:
    """Run ``runtime`` once per sample (batch 1); stack each of the first ``n_outputs`` outputs."""
    rows: list[list[np.ndarray]] = [[] for _ in range(n_outputs)]
    for k in range(len(samples[0])):
        res = runtime(*(x[k : k + 1] for x in samples))
        for i in range(n_outputs):
            rows[i].append(np.asarray(res[i], dtype=np.float32))
    return [np.concatenate(r, axis=0) for r in rows]


def eager_outputs(model: Any, spec: ModelSpec, index: int = 0) -> dict[str, np.ndarray]:
    """The eager model's first output for every validation split, at batch 1 like the artifacts."""
    return {split: outs[index] for split, outs in eager_all_outputs(model, spec, index + 1).items()}


def eager_all_outputs(
    model: Any, spec: ModelSpec, n_outputs: int | None = None
) -> dict[str, list[np.ndarray]]:
    """The eager model's first ``n_outputs`` outputs (default: all of ``spec.outputs``) per split."""
    import torch

    n = len(spec.outputs) if n_outputs is None else n_outputs
    out: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode():
        for split, samples in spec.validation.items():
            rows: list[list[np.ndarray]] = [[] for _ in range(n)]
            for k in range(len(samples[0])):
                args = [torch.from_numpy(np.ascontiguousarray(x[k : k + 1])) for x in samples]
                res = model(*args)
                res = list(res) if isinstance(res, tuple | list) else [res]
                for i in range(n):
                    rows[i].append(res[i].detach().float().numpy())
            out[split] = [np.concatenate(r, axis=0) for r in rows]
    return out


def validate(
    runtime: Runtime,
    spec: ModelSpec,
    eager: dict[str, np.ndarray],
    tolerance: Tolerance,
    target: str,
    others: dict[str, list[np.ndarray]] | None = None,
) -> tuple[ErrorStats, dict[str, ErrorStats], dict[str, np.ndarray], dict[str, ErrorStats]]:
    """Run every validation split through ``runtime``; raise ``MismatchError`` outside ``tolerance``.

    ``others`` holds the eager model's further outputs per split (outputs 1, 2, ...), when it has any.
    Returns the stats over all samples, the stats per split, the artifact's first output per split, and the
    stats of each further output by name. Errors while running are raised by the caller's ``Stage.RUN``.
    """
    n_out = 1 + (len(next(iter(others.values()))) if others else 0)
    runs = {split: run_samples(runtime, samples, n_out) for split, samples in spec.validation.items()}
    outputs = {split: outs[0] for split, outs in runs.items()}
    stats, by_split = compare(spec, eager, outputs)
    rest: dict[str, ErrorStats] = {}
    try:
        check(stats, by_split, spec, eager, tolerance, target)
        no_top1 = dataclasses.replace(tolerance, min_top1_agreement=0.0)  # top-1: the scores only
        for i, name in enumerate(spec.output_names[1:n_out], start=1):
            ref = {split: o[i - 1] for split, o in (others or {}).items()}
            got = {split: outs[i] for split, outs in runs.items()}
            rest[name], split_stats = compare(spec, ref, got)
            check(rest[name], split_stats, spec, ref, no_top1, target, what=f"output {name!r}: ")
    except MismatchError as e:
        e.stats, e.by_split = stats.to_dict(), {k: v.to_dict() for k, v in by_split.items()}
        raise
    return stats, by_split, outputs, rest


def compare(
    spec: ModelSpec, eager: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
) -> tuple[ErrorStats, dict[str, ErrorStats]]:
    by_split = {split: error_stats(eager[split], outputs[split]) for split in outputs}
    splits = list(outputs)
    stats = error_stats(
        np.concatenate([eager[s] for s in splits]), np.concatenate([outputs[s] for s in splits])
    )
    return stats, by_split


def judged_tolerance(tolerance: Tolerance, spec: ModelSpec) -> Tolerance:
    """The tolerance an artifact of ``spec`` is judged by: with stand-in inputs (``fidelity_only``), no
    top-1 bar, since the argmax of a random-init model's logits flips on noise."""
    if spec.metadata.get("fidelity_only"):
        return dataclasses.replace(tolerance, min_top1_agreement=0.0)
    return tolerance


def check(
    stats: ErrorStats,
    by_split: dict[str, ErrorStats],
    spec: ModelSpec,
    eager: dict[str, np.ndarray],
    tolerance: Tolerance,
    target: str,
    what: str = "",
) -> None:
    ref_max = float(max(np.abs(v).max() for v in eager.values()))
    real = by_split.get(spec.real_split) if spec.real_split else None
    problems = judged_tolerance(tolerance, spec).violations(stats, ref_max, real)
    if problems:
        raise MismatchError(target, f"{what}outside tolerance: " + "; ".join(problems))


__all__ = [
    "Stage",
    "check",
    "compare",
    "eager_all_outputs",
    "eager_outputs",
    "error_stats",
    "judged_tolerance",
    "run_samples",
    "validate",
]
