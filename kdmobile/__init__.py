"""kdmobile: distil a server model into a small student, export it to phones and browsers, prove it works.

    import kdmobile
    res = kdmobile.export(model, (example,), validation=(samples,), out_dir="out")   # every target, validated

The public API is deliberately small; everything heavy is imported lazily, so ``import kdmobile`` loads no
export runtime (a test keeps it so).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; resolved on first attribute access (PEP 562).
_LAZY = {
    "Distiller": "kdmobile.distill",
    "DistillConfig": "kdmobile.distill",
    "LOSSES": "kdmobile.distill",
    "export_model": "kdmobile.export.api",
    "ExportResult": "kdmobile.export.runner",
}

__all__ = ["__version__", "export", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "export":
        # The subpackage, callable: kdmobile.export(model, example_inputs, ...) (kdmobile/export/__init__.py).
        return importlib.import_module("kdmobile.export")
    if name == "export_model":
        return importlib.import_module("kdmobile.export.api").export
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kdmobile' has no attribute {name!r}")
