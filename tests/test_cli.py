"""The ``kdmobile`` console script: help, exit codes, and a small real ``distill`` run on MNIST.

    .venv/bin/python -m pytest tests/test_cli.py -q

Exit codes: 0 ok, 1 a failed check, 2 bad usage (bad config key, missing file) with a message naming it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KDMOBILE = Path(sys.executable).parent / "kdmobile"
QUICK = ROOT / "configs" / "mnist_quick.toml"


def kdm(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    exe = [str(KDMOBILE)] if KDMOBILE.exists() else [sys.executable, "-m", "kdmobile.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*exe, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_help_exits_0():
    top = kdm("--help")
    assert top.returncode == 0 and "distill" in top.stdout
    sub = kdm("distill", "--help")
    assert sub.returncode == 0 and "--resume" in sub.stdout and "--set" in sub.stdout


@pytest.mark.parametrize(
    "args,names",
    [
        (["distill", "configs/does_not_exist.toml"], "config file not found: configs/does_not_exist.toml"),
        (["distill", str(QUICK), "--set", "train.epoch=2"], "unknown config key 'train.epoch'"),
        (["distill", str(QUICK), "--set", "loss.kd.temprature=2"], "loss.kd.temprature"),
        (["distill", str(QUICK), "--set", "task_args.subsett=10"], "task_args.subsett"),
        (["distill", str(QUICK), "--set", "task=nosuchtask"], "unknown task 'nosuchtask'"),
        (
            ["distill", str(QUICK), "--set", 'task_args.teacher_checkpoint="missing/teacher.safetensors"'],
            "missing/teacher.safetensors not found",
        ),
    ],
)
def test_bad_usage_exits_2_naming_the_problem(args, names):
    r = kdm(*args)
    assert r.returncode == 2, r.stderr
    assert names in r.stderr and "Traceback" not in r.stderr


def test_no_subcommand_or_unknown_flag_exits_2():
    assert kdm().returncode == 2
    assert kdm("distill", str(QUICK), "--bogus").returncode == 2


def test_distill_runs_end_to_end_on_mnist(tmp_path):
    run = tmp_path / "run"
    r = kdm(
        "distill", str(QUICK), "-o", str(run),
        "--set", "task_args.subset=2000", "--set", "task_args.teacher_epochs=4",
        "--set", f'task_args.teacher_root="{tmp_path / "teachers"}"', "--set", "task_args.eval_subset=2000",
        "--set", "train.epochs=3", "--set", "train.num_threads=1", "--set", "train.progress=false",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    history = json.loads((run / "history.json").read_text())
    assert [e["teacher"] for e in history["epochs"]] == ["cache"] * 3
    assert history["cache"]["status"] == "built"
    from kdmobile.checkpoint import load_checkpoint
    from kdmobile.distill import evaluate
    from kdmobile.tasks.mnist.data import make_set, split

    student, meta = load_checkpoint(run / "student.safetensors")
    assert meta["architecture"] == "mlp" and meta["model_config"]["hidden"] == [800, 800]
    x, y = split("test", 2000)
    errors = evaluate(student, make_set(x, y))["errors"]
    assert errors == history["epochs"][-1]["eval"]["errors"]  # the reloaded checkpoint is the trained student
    assert errors < 0.4 * 2000  # chance is 90% errors: it learned from its (weak, 4-epoch) teacher
