"""Architectures that checkpoints can name, resolved lazily (no heavy import until used).

A checkpoint's JSON metadata records ``{"architecture": NAME, "model_config": {...}}``;
``build_model(NAME, **config)`` rebuilds the module. Add an entry here for a new model family.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

ARCHITECTURES: dict[str, str] = {
    "email-student": "kdmobile.tasks.email.model:EmailStudent",
    "mlp": "kdmobile.tasks.mnist.model:MLP",
}


def build_model(architecture: str, **config: Any) -> nn.Module:
    try:
        target = ARCHITECTURES[architecture]
    except KeyError:
        raise KeyError(
            f"unknown architecture {architecture!r}; valid: {', '.join(sorted(ARCHITECTURES))}"
        ) from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(**config)
