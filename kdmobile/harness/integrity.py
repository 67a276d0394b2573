"""Open an export folder for benching, trusting nothing in it: schema, paths, hashes, one source model.

    python -m kdmobile.harness.integrity build/export        # verify a folder; exit 1 if an artifact is damaged

``kdmobile bench`` measures only what passes here:

- ``summary.json`` must be JSON of the export schema (``results`` rows with ``target``, ``precision``,
  ``status`` strings and a ``path``), else ``UsageError`` (exit 2) naming the file;
- every ``path``/``metadata`` must stay inside the folder (no ``../x``, no absolute path, no symlink out):
  a summary is data, never a licence to read elsewhere (exit 2);
- every artifact's sidecar must name the summary's ``checkpoint_sha256`` (for an export from memory, which
  has no checkpoint: its ``weights_sha256``): a folder mixing artifacts of different models (a partial
  re-export) cannot be benched against one eager model (exit 2);
- every artifact must hash to its sidecar's ``sha256`` (and each web-bundle model to the bundle's
  ``meta.json``): a damaged file is reported as ``corrupt`` and fails the bench (exit 1), never measured;
- the eager source (the checkpoint named by the summary, or ``--student``: a checkpoint or a ``.pt2``
  program) must hash to the summary's ``checkpoint_sha256`` (the file) or ``weights_sha256`` (its
  weights): a retrained model is not the one the artifacts came from (exit 2).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdmobile.errors import UsageError

SUMMARY_SCHEMA_VERSION = 1
REEXPORT = "re-export the folder with `kdmobile export ... -o DIR` (into an empty folder)"


@dataclass
class ArtifactRecord:
    """One ``results`` row of the summary, with its verified file (``problem`` says why it is not usable)."""

    row: dict[str, Any]
    path: Path | None
    sidecar: dict[str, Any] | None = None
    sha256: str | None = None
    problem: str | None = None


@dataclass
class ExportFolder:
    dir: Path
    summary: dict[str, Any]
    records: list[ArtifactRecord]
    checkpoint_sha256: str | None  # the source's identity: the summary's checkpoint_sha256 or weights_sha256
    eager: str | None  # the model the artifacts were exported from, when it is here
    eager_note: str | None = None  # why there is none
    bundle_problems: dict[str, str] = field(default_factory=dict)  # bundle model file -> problem


def read_json(path: Path, what: str) -> Any:
    """Parse ``path`` as JSON; a clear ``UsageError`` naming the file otherwise."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: {what} is not valid JSON ({e}); {REEXPORT}") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read {what} ({e.strerror})") from None


def validate_summary(data: Any, where: str) -> dict[str, Any]:
    """The export summary's schema as the bench reads it (``kdmobile/export/__init__.py`` documents it)."""

    def bad(msg: str) -> UsageError:
        return UsageError(f"{where}: {msg}; not an export summary written by this kdmobile ({REEXPORT})")

    if not isinstance(data, dict):
        raise bad(f"expected a JSON object, got {type(data).__name__}")
    if data.get("schema_version") != SUMMARY_SCHEMA_VERSION:
        raise bad(f"schema_version {data.get('schema_version')!r} != {SUMMARY_SCHEMA_VERSION}")
    results = data.get("results")
    if not isinstance(results, list):
        raise bad("'results' must be a list")
    if data.get("validation") is not None and not isinstance(data["validation"], dict):
        raise bad("'validation' must be an object")
    for key in ("checkpoint", "checkpoint_sha256", "weights_sha256", "task"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise bad(f"{key!r} must be a string")
    seen = set()
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise bad(f"results[{i}] is not an object")
        for key in ("target", "precision", "status"):
            if not isinstance(r.get(key), str):
                raise bad(f"results[{i}].{key} must be a string, got {r.get(key)!r}")
        for key in ("path", "metadata"):
            if r.get(key) is not None and not isinstance(r[key], str):
                raise bad(f"results[{i}].{key} must be a string or null")
        if (r["target"], r["precision"]) in seen:
            raise bad(f"results list {r['target']} {r['precision']} twice")
        seen.add((r["target"], r["precision"]))
    return data


def inside(root: Path, rel: str, where: str, what: str) -> Path:
    """``root / rel``, refusing a path that is absolute or leaves ``root`` (also through a symlink)."""
    p = Path(rel)
    target = (root / p).resolve()
    if p.is_absolute() or ".." in p.parts or not target.is_relative_to(root.resolve()):
        raise UsageError(
            f"{where}: {what} {rel!r} is outside the export folder {root}; the bench reads only files inside "
            f"it ({REEXPORT})"
        )
    return root / p


def _verify(rec: ArtifactRecord, root: Path, where: str, ident_key: str, ident: str | None) -> None:
    from kdmobile.export.runner import artifact_metadata_path
    from kdmobile.io import sha256_file

    r = rec.row
    if rec.path is None or not rec.path.exists():
        if r["status"] == "ok":
            rec.problem = (
                f"the summary says ok but the artifact {rec.path or '(no path)'} is missing; {REEXPORT}"
            )
        return
    meta_rel = r.get("metadata") or os.path.relpath(artifact_metadata_path(rec.path), root)
    meta = inside(root, meta_rel, where, f"{r['target']} {r['precision']} metadata")
    if not meta.is_file():
        rec.problem = (
            f"no metadata sidecar {meta} beside the artifact: its hash cannot be verified; {REEXPORT}"
        )
        return
    side = read_json(meta, "the artifact's metadata sidecar")
    if not isinstance(side, dict) or not isinstance(side.get("sha256"), str):
        raise UsageError(f"{meta}: not an artifact sidecar (no 'sha256' string); {REEXPORT}")
    rec.sidecar = side
    other = side.get(ident_key)
    if ident and other != ident:
        raise UsageError(
            f"{meta}: {r['target']} {r['precision']} was exported from another checkpoint ({ident_key} "
            f"{str(other)[:12]}…, the summary's is {ident[:12]}…): the folder mixes exports; {REEXPORT}"
        )
    rec.sha256 = sha256_file(rec.path)
    if rec.sha256 != side["sha256"]:
        rec.problem = (
            f"{rec.path} is damaged or was replaced: its sha256 {rec.sha256[:12]}… differs from the sidecar's "
            f"{side['sha256'][:12]}…; {REEXPORT}"
        )


def _verify_bundles(folder: ExportFolder) -> None:
    from kdmobile.io import sha256_file

    where = str(folder.dir / "summary.json")
    for rel in (folder.summary.get("bundles") or {}).values():
        if not isinstance(rel, str):
            raise UsageError(f"{where}: 'bundles' must map targets to folder paths; {REEXPORT}")
        bundle = inside(folder.dir, rel, where, "bundle")
        meta_file = bundle / "meta.json"
        if not meta_file.is_file():
            continue
        meta = read_json(meta_file, "the bundle's meta.json")
        for m in (meta.get("models") or {}).values() if isinstance(meta, dict) else ():
            f = inside(bundle, str(m.get("file")), str(meta_file), "model")
            if f.is_file() and m.get("sha256") and sha256_file(f) != m["sha256"]:
                folder.bundle_problems[str(f)] = (
                    f"{f} is damaged or was replaced: its sha256 differs from {meta_file}; {REEXPORT}"
                )


def _weights_sha256(path: str) -> str:
    """The ``weights_sha256`` an export from memory records, of a checkpoint or ``.pt2`` program's module."""
    from kdmobile.export.api import weights_sha256
    from kdmobile.harness.eager import load_model

    model = load_model(path)
    if model.module is None:
        raise UsageError(
            f"{path}: an exported artifact is not an eager model; pass a checkpoint or a .pt2 program"
        )
    return weights_sha256(model.module)


def open_export(artifacts_dir: str | Path, student: str | None = None) -> ExportFolder:
    """Read and verify an export folder (see the module docstring). Damaged artifacts are recorded in
    ``ArtifactRecord.problem``; everything else that is wrong raises ``UsageError``."""
    from kdmobile.io import sha256_file

    root = Path(artifacts_dir)
    path = root / "summary.json"
    if not path.is_file():
        raise UsageError(f"export summary not found: {path} (run `kdmobile export ... -o {root}` first)")
    summary = validate_summary(read_json(path, "the export summary"), str(path))
    ident_key = "checkpoint_sha256" if summary.get("checkpoint_sha256") else "weights_sha256"
    ident = summary.get(ident_key)
    records = []
    for r in summary["results"]:
        p = (
            inside(root, r["path"], str(path), f"{r['target']} {r['precision']} path")
            if r.get("path")
            else None
        )
        rec = ArtifactRecord(r, p)
        _verify(rec, root, str(path), ident_key, ident)
        records.append(rec)
    eager, note = student or summary.get("checkpoint"), None
    if not eager or not Path(eager).exists():
        note = (
            f"the eager model {eager!r} named in {path} is not here"
            if eager
            else f"{path} names no eager model the artifacts came from"
        )
        eager = None
    elif ident:
        got = sha256_file(eager) if ident_key == "checkpoint_sha256" else _weights_sha256(eager)
        if got != ident:
            raise UsageError(
                f"{eager}: not the model the artifacts in {root} were exported from ({ident_key} {got[:12]}…, "
                f"the summary's {ident[:12]}…): pass the original with --student, or {REEXPORT}"
            )
    folder = ExportFolder(root, summary, records, ident, str(eager) if eager else None, note)
    _verify_bundles(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        folder = open_export(argv[0] if argv else "build/export")
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    bad = [r.problem for r in folder.records if r.problem] + list(folder.bundle_problems.values())
    for line in bad:
        print(line)
    print(f"{folder.dir}: {len(folder.records)} results, {len(bad)} damaged")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
