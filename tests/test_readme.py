"""The README's "Export your own model" snippets run, from the README's own text (so the doc cannot rot).

    .venv/bin/python -m pytest -q tests/test_readme.py              # all four; make test runs the first
    .venv/bin/python -m pytest -q tests/test_readme.py -m heavy     # the CLI one and the verbatim ones

The fast variants change only the model size (``small=True``: 64 px, depth multiplier 0.5) and the target
selection (onnx-web fp32) of the README text; the verbatim ones run it as written (minutes per target here).
Measured at load average 16 on the 2-core machine (a coverage run beside it): the fast Python snippet
218 s, the fast CLI lines 494 s (two more interpreters), so only the first is in ``make test``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _block(lang: str, must_contain: str) -> str:
    """The README's fenced ``lang`` block that contains ``must_contain`` (exactly one)."""
    blocks = re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)
    hits = [b for b in blocks if must_contain in b]
    assert len(hits) == 1, f"README.md: expected one ```{lang} block with {must_contain!r}, found {len(hits)}"
    return hits[0]


def _python_snippet(fast: bool) -> str:
    code = _block("python", 'build("mobilenet_v2")')
    assert len([line for line in code.splitlines() if line.strip()]) <= 5, "the README promises <= 5 lines"
    if fast:
        code = _sub(code, 'build("mobilenet_v2")', 'build("mobilenet_v2", small=True)')
        code = _sub(code, "out_dir=", 'targets="onnx-web", precisions=["fp32"], out_dir=')
    return code


def _cli_lines(fast: bool) -> list[list[str]]:
    text = _block("bash", "mobilenet_v2.pt2")
    if fast:
        text = _sub(text, "build('mobilenet_v2')", "build('mobilenet_v2', small=True)")
        text = _sub(text, "--all", "--target onnx-web --precision fp32")
    commands = []
    for line in text.strip().splitlines():
        argv = shlex.split(line)
        # the README's `python` / `kdmobile` are this interpreter and this checkout's CLI
        if argv[0] == "python":
            argv[0] = sys.executable
        elif argv[0] == "kdmobile":
            argv[:1] = [sys.executable, "-m", "kdmobile.cli"]
        commands.append(argv)
    return commands


def _sub(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"README snippet changed: {old!r} is no longer in it once"
    return text.replace(old, new)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _check_summary(out_dir: Path, n_expected: int) -> None:
    summary = json.loads((out_dir / "summary.json").read_text())
    rows = summary["results"]
    assert len(rows) >= n_expected
    bad = [(r["target"], r["precision"], r["status"], r["reason"]) for r in rows]
    bad = [b for b in bad if b[2] not in ("ok", "conversion_validated")]
    assert not bad, bad
    assert [s["name"] for s in summary["validation"]["input_specs"]] == ["pixel_values"]
    assert summary["validation"]["splits"] and not summary["validation"].get("synthetic")


def _run_python(tmp_path: Path, fast: bool) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(_python_snippet(fast))
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=7200
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "onnx-web" in proc.stdout
    _check_summary(tmp_path / "build" / "mobilenet_v2", 1 if fast else 8)


def _run_cli(tmp_path: Path, fast: bool) -> None:
    for argv in _cli_lines(fast):
        proc = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=7200)
        assert proc.returncode == 0, (argv[:4], proc.stdout[-2000:], proc.stderr[-3000:])
    _check_summary(tmp_path / "build" / "mobilenet_v2-cli", 1 if fast else 8)


@pytest.mark.slow
def test_readme_python_snippet_runs(tmp_path: Path) -> None:
    _run_python(tmp_path, fast=True)


@pytest.mark.heavy  # two more interpreters (save, export): 494 s at load 16, so not in `make test`
def test_readme_cli_pt2_runs(tmp_path: Path) -> None:
    _run_cli(tmp_path, fast=True)


@pytest.mark.heavy
def test_readme_python_snippet_verbatim(tmp_path: Path) -> None:
    _run_python(tmp_path, fast=False)


@pytest.mark.heavy
def test_readme_cli_pt2_verbatim(tmp_path: Path) -> None:
    _run_cli(tmp_path, fast=False)
