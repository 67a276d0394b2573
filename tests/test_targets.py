"""The target registry, discovery, availability reporting and the lean-import promise.

.venv/bin/python -m pytest -q tests/test_targets.py
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from kdmobile.cli import main
from kdmobile.export import discover, get_target


def test_registry_discovers_one_file_per_target() -> None:
    from pathlib import Path

    import targets

    files = sorted(p.stem for p in Path(targets.__path__[0]).glob("*.py") if not p.stem.startswith("_"))
    names = discover().names()
    assert len(names) == len(files) == 4
    assert names == ["coreml", "executorch", "onnx-web", "tflite"]
    with pytest.raises(KeyError, match="valid: coreml, executorch, onnx-web, tflite"):
        get_target("tensorrt")


def test_targets_command_reports_availability(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"coreml", "executorch", "onnx-web", "tflite"}
    assert all(r["export"] for r in rows.values()), rows  # everything installs in this venv
    if platform.system() != "Darwin":
        assert rows["coreml"]["run"] is False and "macOS" in rows["coreml"]["run_reason"]
    assert rows["executorch"]["run"] and rows["tflite"]["run"]


def test_missing_module_makes_target_unavailable_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    t = get_target("executorch")
    monkeypatch.setattr(type(t), "requires", ("executorch", "no_such_module_kdmobile"))
    ok, reason = t.availability()
    assert not ok and "no_such_module_kdmobile" in reason and "kdmobile[executorch]" in reason


def test_import_stays_light() -> None:
    code = (
        "import sys, kdmobile, kdmobile.export\n"
        "from kdmobile.export import discover\n"
        "discover()\n"
        "import kdmobile.cli; kdmobile.cli.build_parser()\n"
        "heavy = [m for m in ('executorch', 'coremltools', 'litert_torch', 'ai_edge_litert', 'onnxruntime', 'onnx', 'transformers', 'torchao') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
