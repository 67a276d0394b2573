"""kdmobile: distil a server model into a small student, export it to phones and browsers, prove it works.

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
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kdmobile' has no attribute {name!r}")
