"""Fixtures shared by several test files."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def node_test() -> Callable[..., str]:
    """Run one ``node --test`` file (TAP output) with extra environment variables; return its output after
    asserting it exited 0 with no failed and ``passed`` passed tests. A missing node fails with the fix."""

    def run(test_file: Path, env: dict[str, str], passed: int) -> str:
        node = shutil.which("node")
        if node is None:
            pytest.fail(
                "node is not installed: `apt-get install nodejs` (the demo's tokenizers are tested in node)"
            )
        proc = subprocess.run(
            [node, "--test", "--test-reporter=tap", str(test_file)],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=120,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-6000:]
        assert "# fail 0" in out and f"# pass {passed}" in out, out[-3000:]
        return out

    return run
