"""Discovery of export targets: every module in ``targets/`` is imported once and registers itself.

    python -c "from kdmobile.export import discover; print(discover().names())"

A new target is one new file in ``targets/`` decorated with ``@register_target``; the CLI choices, the
test parametrization and the report pick it up from here. Target modules import their runtimes lazily, so
discovery is cheap; a module that fails to import is recorded in ``DISCOVERY_ERRORS`` (shown by
``kdmobile targets``), never silently dropped.
"""

from __future__ import annotations

import importlib
import pkgutil

from kdmobile.export.base import TARGETS, Target
from kdmobile.registry import Registry

DISCOVERY_ERRORS: dict[str, str] = {}
_done = False


def discover() -> Registry[type[Target]]:
    """Import every module of the ``targets`` package (once); return the ``TARGETS`` registry."""
    global _done
    if not _done:
        import targets

        for info in sorted(pkgutil.iter_modules(targets.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            try:
                importlib.import_module(f"targets.{info.name}")
            except Exception as e:  # noqa: BLE001 - reported by `kdmobile targets`
                DISCOVERY_ERRORS[info.name] = f"{type(e).__name__}: {e}"
        _done = True
    return TARGETS


def target_names() -> list[str]:
    return discover().names()


def get_target(name: str) -> Target:
    """An instance of the target called ``name`` (KeyError naming the valid targets on a miss)."""
    return discover().get(name)()
