"""The generic layers never import an example task: they reach tasks through ``kdmobile.task`` only.

    .venv/bin/python -m pytest -q tests/test_layering.py

Parsed with ``ast`` (imports, ``from kdmobile import tasks``, and module-name strings such as
``importlib.import_module("kdmobile.tasks.email")``), so a comment or docstring that names a task does not
count and a lazy import inside a function does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = "kdmobile.tasks"


def task_imports(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line name`` of every reference to the example tasks package in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []

    def hit(name: str) -> bool:
        return name == EXAMPLES or name.startswith(EXAMPLES + ".")

    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            names = [node.value]
        first = next((n for n in names if hit(n)), None)  # one report per statement
        if first:
            found.append(f"{path.relative_to(root)}:{node.lineno} {first}")
    return found


def _scan(package: str) -> list[str]:
    return [hit for path in sorted((ROOT / package).rglob("*.py")) for hit in task_imports(path)]


def test_the_scanner_sees_imports(tmp_path: Path) -> None:
    """The check itself: every form of import is seen, a docstring mention is not."""
    src = tmp_path / "m.py"
    src.write_text(
        '"""Mentions kdmobile.tasks.email in prose."""\n'
        "import kdmobile.tasks.email\n"
        "from kdmobile.tasks.mnist.data import split\n"
        "from kdmobile import tasks\n"
        "def f():\n"
        '    """kdmobile.tasks too."""\n'
        '    return __import__("importlib").import_module("kdmobile.tasks.email.tokenizer")\n'
    )
    hits = task_imports(src, root=tmp_path)
    assert [h.split(" ", 1)[0] for h in hits] == ["m.py:2", "m.py:3", "m.py:4", "m.py:7"], hits


def test_export_never_imports_an_example_task() -> None:
    assert _scan("kdmobile/export") == []
    assert _scan("targets") == []


@pytest.mark.xfail(
    strict=False,
    reason="kdmobile/harness moves to the task seam in helper h4's branch (bench eval sets and teachers)",
)
def test_harness_never_imports_an_example_task() -> None:
    assert _scan("kdmobile/harness") == []
