"""``kdmobile distill`` under ``torchrun`` with 2 CPU processes (PyTorch DDP, gloo).

    .venv/bin/python -m pytest tests/test_distributed.py -q

Two ranks with batch 32 each see, step by step, the same 64 rows as one process with batch 64 (the
DistributedSampler deals rank r the rows r, r+2, ... of the same permutation), and DDP averages the
per-rank mean gradients: so without dropout the DDP student must equal the single-process one. The
teacher cache, built in two shards, must equal the cache one process builds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
task = "mnist"
[task_args]
teacher_checkpoint = "{teacher}"
subset = 512
eval_subset = 500
augment = "fixed"
copies = 1
student_hidden = [64]
[loss.kd]
temperature = 4.0
alpha = 0.2
[train]
epochs = 2
batch_size = {batch}
seed = 3
num_threads = 1
progress = false
checkpoint_every = 4
[optim]
name = "sgd"
lr = 0.05
momentum = 0.9
schedule = "cosine"
[cache]
enabled = true
"""


@pytest.mark.distributed
def test_torchrun_two_processes_match_one_process(tmp_path):
    from kdmobile.checkpoint import save_checkpoint
    from kdmobile.tasks.mnist.model import MLP

    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    save_checkpoint(teacher, MLP(hidden=[96]), architecture="mlp", model_config={"hidden": [96]})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    (tmp_path / "ddp.toml").write_text(CONFIG.format(teacher=teacher, batch=32))
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "kdmobile.cli", "distill", str(tmp_path / "ddp.toml"), "-o", str(tmp_path / "ddp")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    (tmp_path / "one.toml").write_text(CONFIG.format(teacher=teacher, batch=64))
    one = subprocess.run(
        [sys.executable, "-m", "kdmobile.cli", "distill", str(tmp_path / "one.toml"), "-o", str(tmp_path / "one")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]

    h = json.loads((tmp_path / "ddp" / "history.json").read_text())
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    assert [e["steps"] for e in h["epochs"]] == [e["steps"] for e in h1["epochs"]] == [8, 8]
    assert h["cache"]["status"] == "built"
    # the sharded cache equals the one-process cache
    a = np.load(tmp_path / "ddp" / "teacher_cache" / "logits.npy")
    b = np.load(tmp_path / "one" / "teacher_cache" / "logits.npy")
    assert a.shape == b.shape == (512, 10)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # the DDP student equals the one-process student
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "ddp" / "student.safetensors"))
    wb = load_file(str(tmp_path / "one" / "student.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=f"{k} differs")
    # only rank 0 wrote checkpoints; losses agree
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").glob("step-*")) == [
        "step-0000012",
        "step-0000016",
    ]
    assert h["epochs"][-1]["loss"] == pytest.approx(h1["epochs"][-1]["loss"], rel=1e-4)
