"""Checkpoints: ``NAME.safetensors`` (weights) + ``NAME.json`` (metadata), both written atomically.

    from kdmobile.checkpoint import save_checkpoint, load_checkpoint
    save_checkpoint("build/email/student.safetensors", model, architecture="email-student",
                    model_config={"dim": 64}, metadata={"task": "email"})
    model, meta = load_checkpoint("build/email/student.safetensors")

The JSON carries ``architecture`` and ``model_config`` so a checkpoint rebuilds its module alone, plus a
``sha256`` of the weights file, checked on load: a corrupt or swapped file is an error, never used, and so
is a checkpoint without a sha256 unless the caller says it trusts it (``trust_unverified=True``; the
``--trust-unverified`` flag of ``kdmobile export`` and ``kdmobile bench``).

Every problem with a checkpoint is a :class:`~kdmobile.errors.UsageError` (CLI exit 2) that names the file
and says what to do: metadata that is not JSON, a missing or unknown ``architecture``, a ``model_config``
the architecture's constructor does not take, weights whose tensors do not fit the architecture.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from torch import nn

from kdmobile.errors import UsageError
from kdmobile.io import atomic_path, sha256_file, unshared, write_json

FORMAT_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_UNEXPECTED_KWARG = re.compile(r"unexpected keyword argument '([^']+)'")
_RESAVE = "restore it, or write the checkpoint again with kdmobile.checkpoint.save_checkpoint"


def meta_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    architecture: str,
    model_config: dict[str, Any],
    metadata: dict[str, Any] | None = None,
) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise UsageError(f"checkpoint path must end in .safetensors, got {path}")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(unshared(state), str(tmp))
        digest = sha256_file(tmp)
    meta = {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "model_config": model_config,
        "sha256": digest,
        **(metadata or {}),
    }
    write_json(meta_path(path), meta)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata beside the weights file ``path``.

    Raises:
        UsageError: the weights or the metadata file is missing, or the metadata is not a JSON object.
    """
    return _read_meta_checked(Path(path))


def load_checkpoint(path: str | Path, *, trust_unverified: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the module of checkpoint ``path`` and load its weights; return ``(model in eval mode, meta)``.

    Args:
        path: the ``.safetensors`` weights; the metadata is the ``.json`` beside it.
        trust_unverified: accept a checkpoint whose metadata has no sha256 (its weights then load
            unverified). A sha256 that is there but does not match is an error either way.

    Raises:
        UsageError: any problem with the files, naming the file and what to do (see the module docstring).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta = _read_meta_checked(path)
    _verify(path, meta, trust_unverified)
    model = _build(meta, meta_path(path))
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UsageError(f"cannot read the weights {path}: {e}") from None
    _check_fits(model, state, path, meta)
    model.load_state_dict(state)
    return model.eval(), meta


def _read_meta_checked(path: Path) -> dict[str, Any]:
    """The metadata of weights ``path``, with a clear error for a missing file or a file that is not JSON."""
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    mp = meta_path(path)
    if not mp.is_file():
        raise UsageError(f"checkpoint metadata not found: {mp} (expected beside {path.name})")
    try:
        meta = json.loads(mp.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"checkpoint metadata {mp} is not text (not JSON): {_RESAVE}") from None
    except json.JSONDecodeError as e:
        raise UsageError(
            f"checkpoint metadata {mp} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}): "
            f"{_RESAVE}"
        ) from None
    if not isinstance(meta, dict):
        raise UsageError(
            f"checkpoint metadata {mp} must hold a JSON object, not a {type(meta).__name__}: {_RESAVE}"
        )
    return meta


def _verify(path: Path, meta: dict[str, Any], trust_unverified: bool) -> None:
    digest = meta.get("sha256")
    if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
        if trust_unverified:
            return
        what = "no sha256" if digest is None else f"no valid sha256 (got {digest!r})"
        raise UsageError(
            f"checkpoint metadata {meta_path(path)} has {what} of {path.name}, so its weights cannot be "
            "verified: write the checkpoint with kdmobile.checkpoint.save_checkpoint, or, if you trust the "
            "file, pass --trust-unverified (kdmobile export, bench; Python: trust_unverified=True)"
        )
    if sha256_file(path) != digest:
        raise UsageError(
            f"checkpoint {path} does not match the sha256 in {meta_path(path).name}: corrupt or replaced"
        )


def _build(meta: dict[str, Any], mp: Path) -> nn.Module:
    """The untrained module ``meta`` describes; errors name the metadata file ``mp``."""
    from kdmobile.task import resolve_architecture

    arch = meta.get("architecture")
    if not isinstance(arch, str) or not arch:
        got = 'no "architecture"' if arch is None else f'a bad "architecture" ({arch!r})'
        raise UsageError(
            f"checkpoint metadata {mp} has {got}: set it to the model the weights belong to "
            f"(valid: {', '.join(_known_architectures())}, or an importable 'package.module:Class')"
        )
    config = meta.get("model_config", {})
    if not isinstance(config, dict):
        raise UsageError(
            f'checkpoint metadata {mp}: "model_config" must be a JSON object of constructor arguments for '
            f"{arch!r}, not a {type(config).__name__}"
        )
    try:
        cls = resolve_architecture(arch)  # its message lists the valid names
    except UsageError as e:
        raise UsageError(
            f'checkpoint metadata {mp}: {e}: set "architecture" to the model the weights belong to'
        ) from None
    try:
        return cls(**config)
    except TypeError as e:
        unknown = _unexpected_keys(cls, config)
        if unknown:
            raise UsageError(
                f'checkpoint metadata {mp}: "model_config" has key(s) {", ".join(map(repr, unknown))} that '
                f"architecture {arch!r} does not take: remove or rename them"
            ) from None
        raise UsageError(f'checkpoint metadata {mp}: "model_config" does not fit {arch!r}: {e}') from None
    except (ValueError, RuntimeError) as e:
        raise UsageError(f'checkpoint metadata {mp}: "model_config" does not fit {arch!r}: {e}') from None


def _known_architectures() -> list[str]:
    """The bare architecture names checkpoints can use (the task plug-ins'; ``module:Class`` works too)."""
    from kdmobile.models import known_architectures

    return known_architectures()


def _unexpected_keys(cls: type[nn.Module], config: dict[str, Any]) -> list[str]:
    """Every key of ``config`` the constructor rejects (Python names one per TypeError, so drop and retry)."""
    rest, unknown = dict(config), []
    while True:
        try:
            cls(**rest)
            return unknown
        except TypeError as e:
            m = _UNEXPECTED_KWARG.search(str(e))
            if not m or m.group(1) not in rest:
                return unknown
            unknown.append(m.group(1))
            del rest[m.group(1)]
        except Exception:  # noqa: BLE001 (the caller reports the original error)
            return unknown


def _check_fits(model: nn.Module, state: dict[str, Any], path: Path, meta: dict[str, Any]) -> None:
    """Name the tensors of ``state`` that do not fit ``model`` (load_state_dict's message is a wall)."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    problems = [f"{k}: {list(got[k])} in the file, {list(want[k])} in the model"
                for k in want if k in got and got[k] != want[k]]  # fmt: skip
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    if missing:
        problems.append(f"missing tensor(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if extra:
        problems.append(f"unexpected tensor(s) {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    if problems:
        raise UsageError(
            f"checkpoint {path} does not fit architecture {meta.get('architecture')!r} with the "
            f"model_config in {meta_path(path).name}: {'; '.join(problems[:5])}: the weights and the "
            'metadata come from different models; fix "model_config" or use the matching .json'
        )
