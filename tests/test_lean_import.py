"""``import kdmobile`` stays light: no export runtime, no transformers, no browser driver.

.venv/bin/python -m pytest tests/test_lean_import.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = [
    "executorch",
    "coremltools",
    "onnxruntime",
    "onnx",
    "onnxscript",
    "litert_torch",
    "ai_edge_litert",
    "tensorflow",
    "transformers",
    "playwright",
    "torch.onnx",
]


def loaded_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "statement",
    [
        "import kdmobile",
        "import kdmobile.cli",
        "import kdmobile.distill",
        "from kdmobile import Distiller, LOSSES",
        "import kdmobile.tasks.mnist.task",
    ],
)
def test_no_heavy_runtime_is_imported(statement):
    mods = loaded_after(statement)
    heavy = sorted(m for m in mods if m in HEAVY or m.split(".")[0] in HEAVY)
    assert heavy == [], f"{statement!r} imports {heavy}"


def test_cli_and_package_do_not_even_import_torch():
    assert "torch" not in loaded_after("import kdmobile, kdmobile.cli, kdmobile.commands.distill")
