"""``kdmobile distill`` never deletes a file it did not write, and says what to do instead of guessing.

    .venv/bin/python -m pytest tests/test_no_lost_work.py -q

Every case runs the real CLI (``kdmobile.cli.main``) on the toy task of ``tests/test_trainer.py`` (a
2-second run) and plants files of "the user" in the run dir and in its ``checkpoints/`` folder first:
they must all survive, with their bytes, whatever the exit code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_trainer import TOY_CONFIG, _one_thread  # noqa: F401 (an autouse fixture: one thread)

from kdmobile.cli import main


@pytest.fixture
def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "toy.toml"
    cfg.write_text(TOY_CONFIG)  # 3 epochs of 13 steps, a checkpoint every 5 steps, the newest 2 kept
    return cfg


def _distill(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(["distill", *args])
    return rc, capsys.readouterr().err


def _plant(run: Path, extra: dict[Path, bytes] | None = None) -> dict[Path, bytes]:
    """The user's own files in the run dir and in its checkpoints folder (and ``extra`` ones)."""
    files = {
        run / "notes.txt": b"my notes\n",
        run / "checkpoints" / "README.txt": b"do not delete\n",
        run / "checkpoints" / "mine" / "data.bin": b"\x00\x01\x02",
        **(extra or {}),
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _assert_intact(files: dict[Path, bytes]) -> None:
    for path, data in files.items():
        assert path.is_file() and path.read_bytes() == data, f"{path} was lost or changed"


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "student.safetensors"))


def test_a_rerun_without_resume_is_refused_and_changes_nothing(tmp_path, config, capsys):
    run = tmp_path / "run"
    assert _distill(capsys, str(config), "-o", str(run))[0] == 0
    files = _plant(run)
    before = _tree(run)
    rc, err = _distill(capsys, str(config), "-o", str(run))
    assert rc == 2, err
    assert f"{run} already holds an earlier run (checkpoints/step-0000035, checkpoints/step-0000039" in err
    assert "--resume" in err and "--overwrite" in err and "-o RUN_DIR" in err
    assert "Traceback" not in err
    assert _tree(run) == before  # not one file touched
    _assert_intact(files)


def test_overwrite_moves_the_old_run_aside(tmp_path, config, capsys):
    run = tmp_path / "run"
    assert _distill(capsys, str(config), "-o", str(run), "--set", "train.seed=5")[0] == 0
    files = _plant(run)
    old = _tree(run)
    rc, err = _distill(capsys, str(config), "-o", str(run), "--overwrite")
    assert rc == 0, err
    (aside,) = run.glob("previous-*")
    assert str(aside) in err
    moved = ["checkpoints/latest.json", "history.json", "student.json", "student.safetensors"]
    moved += [n for n in old if n.startswith("checkpoints/step-")]
    assert _tree(aside) == {n: old[n] for n in moved}  # the earlier run, byte for byte, nothing else
    # the new run (another seed) wrote its own files in their place
    assert (run / "student.safetensors").read_bytes() != old["student.safetensors"]
    assert (run / "checkpoints" / "step-0000039" / "state.safetensors").is_file()
    _assert_intact(files)


def test_a_student_from_elsewhere_in_the_run_dir_is_not_replaced(tmp_path, config, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "student.safetensors").write_bytes(b"someone's weights")
    rc, err = _distill(capsys, str(config), "-o", str(run))
    assert rc == 2 and f"{run} already holds an earlier run (student.safetensors)" in err, err
    assert (run / "student.safetensors").read_bytes() == b"someone's weights"
    assert not (run / "checkpoints").exists()


def test_resume_falls_back_past_a_corrupt_checkpoint_and_keeps_it(tmp_path, config, capsys):
    run = tmp_path / "run"
    assert _distill(capsys, str(config), "-o", str(run))[0] == 0
    reference = _weights(run)
    ck = run / "checkpoints"
    files = _plant(run, {ck / "step-0000035" / "mine.txt": b"mine, inside a checkpoint folder"})
    newest = ck / "step-0000039" / "state.safetensors"
    corrupt = bytearray(newest.read_bytes())
    corrupt[-100:] = bytes(100)  # a torn write: the tail is zeros
    newest.write_bytes(bytes(corrupt))

    # keep_checkpoints may change on resume: keeping 1 prunes step 35 after the new step 39 is written
    rc, err = _distill(capsys, str(config), "-o", str(run), "--resume", "--set", "train.keep_checkpoints=1")
    assert rc == 0, err
    assert f"checkpoint {ck / 'step-0000039'} is corrupt" in err and "sha256" in err
    assert f"resuming from {ck / 'step-0000035'}" in err
    (moved,) = ck.glob("step-0000039.corrupt-*")
    assert moved.name in err and (moved / "state.safetensors").read_bytes() == bytes(corrupt)
    # resumed mid-epoch 3 from step 35: the same weights as the uninterrupted run
    resumed = _weights(run)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    # step 35 was pruned file by file: its state is gone, the user's file and so its folder stay
    assert sorted(p.name for p in (ck / "step-0000035").iterdir()) == ["mine.txt"]
    _assert_intact(files)


def test_resume_without_any_checkpoint_names_the_folder(tmp_path, config, capsys):
    typo = tmp_path / "rnu"
    rc, err = _distill(capsys, str(config), "-o", str(typo), "--resume")
    assert rc == 2 and f"there is no {typo / 'checkpoints'}" in err and "-o RUN_DIR" in err, err
    assert not typo.exists()  # nothing created, nothing trained

    run = tmp_path / "run"
    files = _plant(run)  # a checkpoints folder with only the user's files in it
    rc, err = _distill(capsys, str(config), "-o", str(run), "--resume")
    assert rc == 2 and f"{run / 'checkpoints'} holds no step-NNNNNNN checkpoint" in err, err
    _assert_intact(files)
    # a fresh run into it is fine: the user's files are not checkpoints, and they stay
    rc, err = _distill(capsys, str(config), "-o", str(run))
    assert rc == 0, err
    _assert_intact(files)


def test_resume_with_only_corrupt_checkpoints_is_an_error_that_keeps_them(tmp_path, config, capsys):
    run = tmp_path / "run"
    assert _distill(capsys, str(config), "-o", str(run))[0] == 0
    files = _plant(run)
    ck = run / "checkpoints"
    (ck / "step-0000035" / "state.json").write_text("{not json")
    (ck / "step-0000039" / "state.safetensors").write_bytes(b"")
    rc, err = _distill(capsys, str(config), "-o", str(run), "--resume")
    assert rc == 2 and f"no valid checkpoint left in {ck}" in err and "--overwrite" in err, err
    assert "state.json unreadable" in err and "does not match its sha256" in err
    assert sorted(p.name.split(".corrupt-")[0] for p in ck.glob("step-*.corrupt-*")) == [
        "step-0000035",
        "step-0000039",
    ]
    assert all((p / "state.json").is_file() for p in ck.glob("step-*.corrupt-*"))
    _assert_intact(files)


def test_resume_and_overwrite_together_is_a_usage_error(tmp_path, config, capsys):
    rc, err = _distill(capsys, str(config), "-o", str(tmp_path / "r"), "--resume", "--overwrite")
    assert rc == 2 and "--resume" in err and "--overwrite" in err


@pytest.mark.slow
@pytest.mark.distributed
def test_resume_past_a_corrupt_checkpoint_under_torchrun(tmp_path, config):
    """Rank 0 renames the corrupt checkpoint; both ranks then resume from the same older one (no hang)."""
    import os
    import subprocess
    import sys

    tests = Path(__file__).parent
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)]),
    }

    def torchrun(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             "-m", "kdmobile.cli", "distill", str(config), "-o", str(run), *args],
            capture_output=True, text=True, cwd=tests.parent, env=env, timeout=600,
        )  # fmt: skip

    run = tmp_path / "ddp"
    first = torchrun()
    assert first.returncode == 0, first.stderr[-3000:]
    reference = _weights(run)
    files = _plant(run)
    newest = sorted((run / "checkpoints").glob("step-*"))[-1]
    (newest / "state.safetensors").write_bytes(b"torn")
    resumed = torchrun("--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count(f"checkpoint {newest} is corrupt") == 1  # rank 0 only
    assert len(list(newest.parent.glob(f"{newest.name}.corrupt-*"))) == 1
    after = _weights(run)
    assert all(torch.equal(after[k], reference[k]) for k in reference)
    _assert_intact(files)


def test_discard_deletes_only_the_trainers_own_checkpoint_files(tmp_path, config, capsys):
    """``on_existing="discard"`` (the build pipelines' rerun) removes its own checkpoints, file by file."""
    from test_trainer import ToyData, ToyStudent, toy_teacher

    from kdmobile import config as C
    from kdmobile.distill import DistillConfig, Distiller

    run = tmp_path / "run"
    assert _distill(capsys, str(config), "-o", str(run))[0] == 0
    ck = run / "checkpoints"
    foreign = ck / "step-0000001"  # named like a checkpoint, but not one: no state.json of the trainer
    files = _plant(run, {ck / "step-0000039" / "mine.txt": b"mine", foreign / "state.json": b'{"mine": 1}'})

    cfg = C.load(DistillConfig, config, ["train.epochs=1"])
    Distiller(ToyStudent(), toy_teacher(), cfg, run_dir=run, log=lambda m: None).fit(
        ToyData(), on_existing="discard"
    )
    assert not (ck / "step-0000035").exists()  # the trainer's own: gone
    assert sorted(p.name for p in (ck / "step-0000039").iterdir()) == ["mine.txt"]  # only its state went
    (moved,) = ck.glob("step-0000001.corrupt-*")  # not recognisably ours: renamed, not deleted
    files = {(moved / p.name if p.parent == foreign else p): d for p, d in files.items()}
    _assert_intact(files)
    assert json.loads((ck / "latest.json").read_text())["checkpoint"] == "step-0000013"
