"""The training loop: reproducible, resumable after a real kill, NaN detection, checkpoints, weighted sums.

    .venv/bin/python -m pytest tests/test_trainer.py -q

``make_toy_task`` is also a task factory: the kill/resume test runs the real CLI on it in subprocesses
(``task = "test_trainer:make_toy_task"`` with this folder on PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from kdmobile.distill import DistillConfig, Distiller, NonFiniteLossError, OptimConfig, Task, TrainConfig
from kdmobile.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """Two cores are shared: one intra-op thread avoids oversubscription (and keeps runs deterministic)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class ToyData:
    def __init__(self, n: int = 200, seed: int = 0, unlabelled: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x[:, :3].sum(1) > 0).long()
        self.unlabelled = unlabelled

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        label = -1 if self.unlabelled or i % 5 == 0 else int(self.y[i])
        return {"student": self.x[i], "teacher": (self.x[i],), "label": label}


class ToyStudent(nn.Module):
    def __init__(self, hidden: int = 12) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Dropout(0.3))
        self.head = nn.Linear(hidden, 2)

    def forward(self, x):
        return self.head(self.body(x))


def toy_teacher() -> nn.Module:
    torch.manual_seed(123)
    return nn.Sequential(nn.Linear(8, 20), nn.Tanh(), nn.Linear(20, 2))


def make_toy_task(args: dict, seed: int = 0) -> Task:
    torch.manual_seed(seed)
    return Task(student=ToyStudent(), teacher=toy_teacher(), train=ToyData(), eval=ToyData(60, seed=9))


TOY_CONFIG = """
task = "test_trainer:make_toy_task"
[loss.kd]
temperature = 3.0
alpha = 0.4
[loss.hint]
type = "hidden_mse"
weight = 0.5
student_layer = "body.1"
teacher_layer = "1"
[train]
epochs = 3
batch_size = 16
seed = 11
checkpoint_every = 5
num_threads = 1
progress = false
[optim]
name = "adamw"
lr = 0.01
weight_decay = 0.01
schedule = "cosine"
warmup = 0.1
"""


def _cli(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "kdmobile.cli", "distill", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "student.safetensors"))


def test_resume_after_a_kill_mid_epoch_gives_the_same_weights(tmp_path):
    cfg = tmp_path / "toy.toml"
    cfg.write_text(TOY_CONFIG)
    # 200 rows / 16 = 13 steps per epoch; step 20 is the 7th step of epoch 2; last checkpoint: step 15.
    killed = _cli([str(cfg), "-o", str(tmp_path / "a")], {"KDMOBILE_FAULT_KILL_AT_STEP": "20"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "a" / "student.safetensors").exists()
    latest = json.loads((tmp_path / "a" / "checkpoints" / "latest.json").read_text())
    assert latest == {"checkpoint": "step-0000015", "global_step": 15, "epoch": 1}

    resumed = _cli([str(cfg), "-o", str(tmp_path / "a"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and "step-0000015" in resumed.stderr

    full = _cli([str(cfg), "-o", str(tmp_path / "b")])
    assert full.returncode == 0, full.stderr
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    ha = json.loads((tmp_path / "a" / "history.json").read_text())
    hb = json.loads((tmp_path / "b" / "history.json").read_text())
    assert ha["resumed_from"] == "step-0000015" and ha["steps"] == hb["steps"] == 39
    assert [e["loss"] for e in ha["epochs"]] == pytest.approx([e["loss"] for e in hb["epochs"]], rel=1e-9)
    # the student checkpoint carries its metadata; checkpoints are safetensors + JSON
    meta = json.loads((tmp_path / "b" / "student.json").read_text())
    assert meta["architecture"] == "ToyStudent" and meta["steps"] == 39
    ck = tmp_path / "b" / "checkpoints" / "step-0000039"
    assert (ck / "state.safetensors").is_file() and json.loads((ck / "state.json").read_text())["epoch"] == 3


def _fit(tmp_path, name, loss, *, data=None, teacher=None, epochs=2, seed=1, resume=False, **train):
    torch.manual_seed(0)
    student = ToyStudent()
    cfg = DistillConfig(
        loss=loss,
        train=TrainConfig(epochs=epochs, batch_size=32, seed=seed, progress=False, **train),
        optim=OptimConfig(name="sgd", lr=0.1, momentum=0.9, schedule="onecycle"),
    )
    d = Distiller(student, teacher if teacher is not None else toy_teacher(), cfg, run_dir=tmp_path / name,
                  log=lambda m: None)  # fmt: skip
    return d, *d.fit(data or ToyData(), resume=resume)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    loss = {"kd": {"temperature": 2.0, "alpha": 0.5}}
    _, a, _ = _fit(tmp_path, "a", loss)
    _, b, _ = _fit(tmp_path, "b", loss)
    _, c, _ = _fit(tmp_path, "c", loss, seed=2)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.head.weight, c.head.weight)


def test_total_is_the_weighted_sum_of_the_terms(tmp_path):
    _, _, h = _fit(
        tmp_path,
        "w",
        {"kd": {"weight": 0.25, "temperature": 2.0}, "mse": {"type": "logit_mse", "weight": 3.0}},
    )
    for e in h.epochs:
        assert e["loss"] == pytest.approx(0.25 * e["terms"]["kd"] + 3.0 * e["terms"]["mse"], rel=1e-6)


def test_projection_parameters_are_trained(tmp_path):
    loss = {"hint": {"type": "hidden_mse", "student_layer": "body.0", "teacher_layer": "0"}}
    d, _, _ = _fit(tmp_path, "p", loss)
    proj = d.terms["hint"].proj
    assert proj is not None and proj.weight.shape == (20, 12)
    torch.manual_seed(1 + 7919)  # train.seed + 7919: the probe's seed: the projection's initial weights
    init = nn.Linear(12, 20)
    assert not torch.allclose(proj.weight, init.weight)


def test_only_unlabelled_rows_still_trains(tmp_path):
    _, s, h = _fit(tmp_path, "u", {"kd": {"temperature": 2.0, "alpha": 0.5}}, data=ToyData(unlabelled=True))
    assert all(e["loss"] > 0 for e in h.epochs)
    torch.manual_seed(0)
    assert not torch.equal(ToyStudent().head.weight, s.head.weight)


def test_nan_loss_names_the_step_and_the_term(tmp_path):
    calls = {"n": 0}
    base = toy_teacher()

    def flaky_teacher(x):
        calls["n"] += 1
        out = base(x)
        return out * float("nan") if calls["n"] == 5 else out  # the probe is call 1, step k is call k + 1

    with pytest.raises(NonFiniteLossError, match=r"loss term 'kd' is nan at step 4 \(epoch 1\)") as e:
        _fit(tmp_path, "n", {"ce": {}, "kd": {"temperature": 2.0}}, teacher=flaky_teacher)
    assert e.value.step == 4 and e.value.term == "kd"


def test_resume_with_another_config_is_refused(tmp_path):
    loss = {"kd": {"temperature": 2.0}}
    _fit(tmp_path, "r", loss)
    with pytest.raises(UsageError, match=r"loss\.kd\.temperature: 2\.0 -> 3\.0"):
        _fit(tmp_path, "r", {"kd": {"temperature": 3.0}}, resume=True)
    # resuming a finished run changes nothing
    _, again, h = _fit(tmp_path, "r", loss, resume=True)
    assert h.resumed_from == "step-0000014" and len(h.epochs) == 2


def test_student_after_step_hook_runs_every_step(tmp_path):
    class Clamped(ToyStudent):
        steps = 0

        def after_step(self):
            Clamped.steps += 1
            with torch.no_grad():
                self.head.weight.clamp_(-0.01, 0.01)

    torch.manual_seed(0)
    cfg = DistillConfig(loss={"ce": {}}, train=TrainConfig(epochs=1, batch_size=50, progress=False))
    s, h = Distiller(Clamped(), None, cfg, run_dir=tmp_path / "h", log=lambda m: None).fit(ToyData())
    assert Clamped.steps == 4 == h.steps and s.head.weight.abs().max() <= 0.01


def test_missing_teacher_and_bad_layer_are_usage_errors(tmp_path):
    cfg = DistillConfig(loss={"kd": {}}, train=TrainConfig(progress=False))
    with pytest.raises(UsageError, match="need a teacher"):
        Distiller(ToyStudent(), None, cfg)
    bad = DistillConfig(
        loss={"h": {"type": "hidden_mse", "student_layer": "body.7", "teacher_layer": "0"}},
        train=TrainConfig(progress=False),
    )
    with pytest.raises(UsageError, match=r"the student has no module 'body.7'"):
        Distiller(ToyStudent(), toy_teacher(), bad, run_dir=tmp_path / "x", log=lambda m: None).fit(ToyData())


def test_teacher_runs_once_per_step_even_with_feature_hooks(tmp_path):
    teacher = toy_teacher()
    calls = {"n": 0}
    teacher.register_forward_pre_hook(lambda m, a: calls.__setitem__("n", calls["n"] + 1))
    loss = {"kd": {}, "hint": {"type": "hidden_mse", "student_layer": "body.0", "teacher_layer": "0"}}
    _, _, h = _fit(tmp_path, "c", loss, teacher=teacher)
    assert calls["n"] == h.steps + 1 == 15  # 14 steps + the set-up probe


class TiedStudent(nn.Module):
    """Two layers sharing one weight (tied weights; PT2E QAT shares observers the same way)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.b.weight = self.a.weight
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))))


def test_a_student_with_shared_tensors_checkpoints_and_resumes(tmp_path):
    """safetensors refuses aliased tensors; checkpoints and the final student store a copy of each, and a
    resumed run (which reloads them) ends with the uninterrupted run's weights, still tied."""
    from safetensors.torch import load_file

    from kdmobile.checkpoint import save_checkpoint

    def fit(name, epochs, resume=False):
        torch.manual_seed(0)
        cfg = DistillConfig(
            loss={"kd": {"temperature": 2.0, "alpha": 0.5}},
            train=TrainConfig(epochs=epochs, batch_size=32, seed=1, progress=False),
            optim=OptimConfig(name="sgd", lr=0.1, momentum=0.9),
        )
        d = Distiller(TiedStudent(), toy_teacher(), cfg, run_dir=tmp_path / name, log=lambda m: None)
        return d.fit(ToyData(), resume=resume)[0]

    whole = fit("whole", 2)
    fit("parts", 2)
    steps = sorted((tmp_path / "parts" / "checkpoints").glob("step-*"))
    assert len(steps) >= 2, steps
    for f in steps[-1].iterdir():  # as if killed before the last checkpoint: resume from the one before
        f.unlink()
    steps[-1].rmdir()
    resumed = fit("parts", 2, resume=True)
    assert resumed.b.weight is resumed.a.weight
    assert all(
        torch.equal(x, y)
        for x, y in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True)
    )
    path = save_checkpoint(tmp_path / "tied.safetensors", whole, architecture="x:Y", model_config={})
    saved = load_file(str(path))
    assert torch.equal(saved["a.weight"], saved["b.weight"])
