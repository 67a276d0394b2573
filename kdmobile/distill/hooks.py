"""Capture intermediate features with forward hooks at module paths named in the config.

hooks = FeatureHooks(student, {"h0": "encoder.layers.0"})
logits = student(x)
hooks.features["h0"]    # the output of student.encoder.layers.0 during that forward
hooks.remove()
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

from kdmobile.errors import UsageError


def get_submodule(model: nn.Module, path: str, *, role: str = "model") -> nn.Module:
    """``model``'s submodule at dotted ``path``; a ``UsageError`` naming close matches on a miss."""
    modules = dict(model.named_modules())
    if path in modules:
        return modules[path]
    close = difflib.get_close_matches(path, [m for m in modules if m], n=5, cutoff=0.4)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    names = [m for m in modules if m]
    listing = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    raise UsageError(f"the {role} has no module {path!r}{hint} (modules: {listing})")


class FeatureHooks:
    """Forward hooks that keep the latest output of named modules.

    Args:
        model: the module to hook.
        paths: feature name -> dotted module path.
        index: feature name -> element to take when the module returns a tuple/list (default 0).
        detach: detach captured tensors (for a teacher that is never trained).
        role: "student" or "teacher", for error messages.
    """

    def __init__(
        self,
        model: nn.Module,
        paths: dict[str, str],
        *,
        index: dict[str, int] | None = None,
        detach: bool = False,
        role: str = "model",
    ) -> None:
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []
        index = index or {}
        for name, path in paths.items():
            module = get_submodule(model, path, role=role)
            self._handles.append(
                module.register_forward_hook(self._make_hook(name, path, index.get(name, 0), detach))
            )

    def _make_hook(self, name: str, path: str, idx: int, detach: bool):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            out = output
            if isinstance(out, tuple | list):
                if idx >= len(out) or out[idx] is None:
                    raise UsageError(
                        f"module {path!r} returned {len(out)} outputs; index {idx} is not a tensor"
                    )
                out = out[idx]
            elif hasattr(out, "last_hidden_state") and not isinstance(out, torch.Tensor):
                out = out[idx]
            if not isinstance(out, torch.Tensor):
                raise UsageError(f"module {path!r} returned {type(out).__name__}, not a tensor")
            self.features[name] = out.detach() if detach else out

        return hook

    def clear(self) -> None:
        self.features.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.features.clear()

    def __enter__(self) -> FeatureHooks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
