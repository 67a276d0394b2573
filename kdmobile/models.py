"""Rebuild a checkpoint's module from its ``architecture`` name, through the task seam.

    python -c "from kdmobile.models import build_model; print(build_model('mlp', hidden=[32]))"

A checkpoint's JSON metadata records ``{"architecture": NAME, "model_config": {...}}``; ``build_model(NAME,
**config)`` rebuilds the module. ``NAME`` is an importable ``"package.module:Class"`` (a user's own model,
no package edit needed) or a bare name from a task plug-in's ``architectures``
(``kdmobile.task.resolve_architecture``).
"""

from __future__ import annotations

from typing import Any

from torch import nn


def build_model(architecture: str, **config: Any) -> nn.Module:
    """An instance of ``architecture`` built with ``config`` (UsageError naming the valid names on a miss)."""
    from kdmobile.errors import UsageError
    from kdmobile.task import resolve_architecture

    cls = resolve_architecture(architecture)
    try:
        return cls(**config)
    except TypeError as e:
        raise UsageError(
            f"architecture {architecture!r} cannot be built from model_config {config}: {e}"
        ) from None
