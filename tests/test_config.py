"""Configs: TOML + ``--set`` overrides into frozen dataclasses; every bad key or value names itself.

.venv/bin/python -m pytest tests/test_config.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kdmobile import config as C
from kdmobile.distill import CacheConfig, DistillConfig, OptimConfig, TrainConfig
from kdmobile.errors import ConfigError, UsageError

ROOT = Path(__file__).resolve().parents[1]

SAMPLE = """
task = "mnist"
[task_args]
subset = 100
[loss.kd]
temperature = 20
alpha = 0.1
[loss.hint]
type = "hidden_mse"
student_layer = "net.1"
teacher_layer = "net.2"
[train]
epochs = 2
batch_size = 32
[optim]
name = "sgd"
lr = 1
betas = [0.8, 0.99]
[cache]
enabled = true
topk = 4
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_toml_builds_typed_frozen_dataclasses(tmp_path):
    cfg = C.load(DistillConfig, write(tmp_path, SAMPLE))
    assert cfg.task == "mnist" and cfg.task_args == {"subset": 100}
    assert cfg.loss == {"kd": {"temperature": 20, "alpha": 0.1}, "hint": {"type": "hidden_mse",
                        "student_layer": "net.1", "teacher_layer": "net.2"}}  # fmt: skip
    assert cfg.train == TrainConfig(epochs=2, batch_size=32)
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float) and cfg.optim.betas == (0.8, 0.99)
    assert cfg.cache == CacheConfig(enabled=True, topk=4)
    with pytest.raises(AttributeError):
        cfg.train.epochs = 3  # type: ignore[misc]


def test_overrides_win_and_parse_toml_literals(tmp_path):
    cfg = C.load(
        DistillConfig,
        write(tmp_path, SAMPLE),
        [
            "train.epochs=5",
            "loss.kd.temperature=4.5",
            "optim.name=adamw",
            "task_args.subset=7",
            "cache.enabled=false",
        ],
    )
    assert cfg.train.epochs == 5 and cfg.loss["kd"]["temperature"] == 4.5 and cfg.optim.name == "adamw"
    assert cfg.task_args == {"subset": 7} and cfg.cache.enabled is False
    assert cfg.loss["kd"]["alpha"] == 0.1  # untouched keys stay


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epoch=3", r"unknown config key 'train\.epoch'; valid keys here: .*epochs"),
        ("trian.epochs=3", r"unknown config key 'trian'"),
        ("train.epochs=three", r"train\.epochs: expected int, got 'three'"),
        ("optim.name=adam", r"optim\.name: 'adam' is not one of 'adamw', 'sgd'"),
        ("train.epochs=0", r"train\.epochs must be >= 1"),
        ("optim.warmup=1.5", r"optim\.warmup"),
        ("cache.dtype=int8", r"cache\.dtype: 'int8' is not one of"),
        ("train.epochs", r"--set takes KEY=VALUE"),
    ],
)
def test_bad_keys_and_values_name_themselves(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        C.load(DistillConfig, write(tmp_path, SAMPLE), [override])


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(UsageError, match=r"config file not found: .*nope\.toml"):
        C.load(DistillConfig, tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        C.load(DistillConfig, write(tmp_path, "[train\nepochs = 1"))


def test_defaults_without_a_file_and_version_check():
    cfg = C.load(DistillConfig)
    assert cfg.loss == {"kd": {}} and cfg.optim == OptimConfig() and cfg.version == 1
    with pytest.raises(ConfigError, match="version 2 is not supported"):
        C.load(DistillConfig, None, ["version=2"])
    with pytest.raises(ConfigError, match="at least one loss term"):
        C.build(DistillConfig, {"loss": {}})


@pytest.mark.parametrize("name", ["mnist.toml", "mnist_quick.toml"])
def test_shipped_configs_parse(name):
    cfg = C.load(DistillConfig, ROOT / "configs" / name)
    assert cfg.task == "mnist" and "kd" in cfg.loss and cfg.train.epochs >= 1
    from kdmobile.distill import build_losses
    from kdmobile.tasks.mnist.task import MnistTaskConfig

    build_losses(cfg.loss)  # every loss setting is valid
    C.build(MnistTaskConfig, cfg.task_args, where="task_args")  # every task_args key is valid
