"""Checkpoints: ``NAME.safetensors`` (weights) + ``NAME.json`` (metadata), both written atomically.

    from kdmobile.checkpoint import save_checkpoint, load_checkpoint
    save_checkpoint("build/email/student.safetensors", model, architecture="email-student",
                    model_config={"dim": 64}, metadata={"task": "email"})
    model, meta = load_checkpoint("build/email/student.safetensors")

The JSON carries ``architecture`` and ``model_config`` so a checkpoint rebuilds its module alone, plus a
``sha256`` of the weights file, checked on load (a corrupt or swapped file is an error, never used).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from kdmobile.errors import UsageError
from kdmobile.io import atomic_path, sha256_file, write_json

FORMAT_VERSION = 1


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
        save_file(state, str(tmp))
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
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    mp = meta_path(path)
    if not mp.is_file():
        raise UsageError(f"checkpoint metadata not found: {mp} (expected beside {path.name})")
    return json.loads(mp.read_text())


def load_checkpoint(path: str | Path, *, verify: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    from safetensors.torch import load_file

    from kdmobile.models import build_model

    path = Path(path)
    meta = read_metadata(path)
    if verify and meta.get("sha256") and sha256_file(path) != meta["sha256"]:
        raise UsageError(
            f"checkpoint {path} does not match the sha256 in {meta_path(path).name}: corrupt or replaced"
        )
    model = build_model(meta["architecture"], **meta.get("model_config", {}))
    model.load_state_dict(load_file(str(path)))
    return model.eval(), meta
