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
    """An instance of ``architecture`` built with ``config``.

    Raises:
        UsageError: an unknown name (the message lists the valid ones) or a module path that does not import.
        TypeError: ``config`` does not fit the constructor (``kdmobile.checkpoint`` names the bad keys).
    """
    from kdmobile.task import resolve_architecture

    return resolve_architecture(architecture)(**config)


def known_architectures() -> list[str]:
    """Every bare architecture name a registered task can rebuild (any ``module:Class`` works too)."""
    from kdmobile.task import TASKS, discover

    return sorted({a for name in discover().names() for a in TASKS.get(name).architectures})
