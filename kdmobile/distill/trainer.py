"""The distillation training loop: seeded, resumable, checkpointed atomically, DDP-ready.

    kdmobile distill configs/mnist_quick.toml -o build/runs/mnist            # then, after a crash:
    kdmobile distill configs/mnist_quick.toml -o build/runs/mnist --resume
    kdmobile distill configs/mnist_quick.toml -o build/runs/mnist --overwrite   # start again, keep the old

Reproducibility: ``fit`` seeds torch/numpy/random from ``train.seed``; the shuffling order of each epoch
comes from ``DistributedSampler(seed, epoch)`` (its own generator), batches are fetched in the main
process (no DataLoader worker seeds), and the set-up probe runs under ``torch.random.fork_rng``. A
checkpoint holds the model, loss-term (projection) weights, optimizer and scheduler state, every RNG
state, the epoch, the position inside the epoch and the running loss sums, so a resumed run replays
exactly the batches and dropout masks the interrupted one would have seen.

Files: the trainer writes ``RUN_DIR/checkpoints/step-NNNNNNN/`` (``state.safetensors`` + ``state.json``
with a ``checkpoint_version``) and ``RUN_DIR/checkpoints/latest.json``, and deletes only folders it
recognises as its own by that name and metadata (when pruning to ``train.keep_checkpoints``, or with
``on_existing="discard"``), file by file, never a whole folder tree: anything else a user put there
survives. A new run into a run dir that already holds an earlier run (checkpoints, student, history) is
an error unless it resumes or says what to do with it (``on_existing``). A checkpoint that fails its sha256 or cannot be read is renamed
``step-NNNNNNN.corrupt-<UTC time>`` and reported, and ``--resume`` falls back to the newest valid one.

Fault injection for tests: ``KDMOBILE_FAULT_KILL_AT_STEP=N`` makes the process SIGKILL itself right after
optimizer step N, before that step's checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdmobile.distill import distributed as D
from kdmobile.distill.cache import TeacherCache, as_logits, teacher_logits
from kdmobile.distill.config import DistillConfig
from kdmobile.distill.data import Batch, fetch
from kdmobile.distill.hooks import FeatureHooks
from kdmobile.distill.losses import DistillLoss, build_losses
from kdmobile.errors import KDMobileError, UsageError
from kdmobile.io import atomic_path, sha256_file, unshared, write_json

CHECKPOINT_VERSION = 1
ON_EXISTING = ("error", "move", "discard")
# What a finished run leaves in its run dir besides its checkpoints (written atomically at the end of fit).
_RUN_OUTPUTS = ("student.safetensors", "student.json", "history.json")
_STEP_DIR = re.compile(r"step-\d{7}")
_STATE_FILES = ("state.safetensors", "state.json")
_STATE_KEYS = ("checkpoint_version", "epoch", "step_in_epoch", "global_step", "sums", "count", "config",
               "optimizer", "scheduler", "rng", "sha256")  # fmt: skip
FAULT_ENV = "KDMOBILE_FAULT_KILL_AT_STEP"
# Config fields that may change between an interrupted run and its resumption.
_RESUME_FREE = {("train", "progress"), ("train", "num_threads"), ("train", "checkpoint_every"),
                ("train", "keep_checkpoints"), ("train", "eval_batch_size"), ("cache", "dir"),
                ("cache", "batch_size"), ("run_dir",)}  # fmt: skip


class NonFiniteLossError(KDMobileError):
    """A loss term became NaN or inf; names the step and the term."""

    def __init__(self, step: int, epoch: int, term: str, value: float) -> None:
        self.step, self.epoch, self.term, self.value = step, epoch, term, value
        super().__init__(
            f"loss term {term!r} is {value} at step {step} (epoch {epoch}); lower the learning rate, check the "
            f"inputs, or resume from the last checkpoint with other settings"
        )


@dataclass
class History:
    """What ``fit`` returns besides the student.

    Attributes:
        epochs: one dict per epoch: ``epoch``, ``loss`` (mean total), ``terms`` (mean per term), ``steps``,
            ``seconds`` (training steps incl. data and teacher), ``examples_per_second``, ``teacher``
            (``"online"``, ``"cache"`` or ``"none"``), ``lr``, and ``eval`` when an eval set is given.
        cache: the cache's build/reuse info, or None when the teacher runs online.
        steps: optimizer steps done.
        resumed_from: the checkpoint the run continued from, if any.
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    cache: dict[str, Any] | None = None
    steps: int = 0
    resumed_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Objective(nn.Module):
    """Student + loss terms in one module, so DDP syncs the projections' gradients too."""

    def __init__(
        self, student: nn.Module, terms: nn.ModuleDict, weights: dict[str, float], hooks: FeatureHooks | None
    ):
        super().__init__()
        self.student = student
        self.terms = terms
        self.weights = weights
        self._hooks = hooks

    def forward(
        self,
        student_inputs: tuple[torch.Tensor, ...],
        teacher_out: torch.Tensor | None,
        teacher_feats: dict[str, torch.Tensor],
        target: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self._hooks is not None:
            self._hooks.clear()
        s_out = _as_logits(self.student(*student_inputs))
        parts: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            if term.inputs == "features":
                parts[name] = term(self._hooks.features[name], teacher_feats[name], target)
            else:
                parts[name] = term(s_out, teacher_out, target)
        total = sum(self.weights[n] * v for n, v in parts.items())
        return total, parts


def _as_logits(out: Any) -> torch.Tensor:
    return as_logits(out, "student")


def evaluate(
    model: Callable[..., Any],
    dataset: Any,
    *,
    batch_size: int = 256,
    inputs: str = "student",
    env: D.DistEnv | None = None,
) -> dict[str, Any]:
    """Top-1 accuracy of ``model`` on the labelled items of ``dataset`` (label >= 0).

    Args:
        model: called as ``model(*item[inputs])``; put in eval mode if it is an ``nn.Module``.
        inputs: ``"student"`` or ``"teacher"``: which inputs of each item to feed.
        env: under DDP, every rank evaluates a shard and the counts are summed.

    Returns:
        ``{"n": labelled rows, "errors": int, "accuracy": float}``.
    """
    env = env or D.DistEnv()
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    n = len(dataset)
    mine = list(range(env.rank, n, env.world_size))
    wrong = total = 0
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            batch = fetch(dataset, mine[start : start + batch_size]).to(env.device)
            z = _as_logits(model(*getattr(batch, inputs)))
            y = batch.label
            keep = y >= 0
            pred = z.argmax(-1)
            wrong += int((pred[keep] != y[keep]).sum())
            total += int(keep.sum())
    wrong, total = (int(v) for v in D.all_reduce_sum(env, [wrong, total]))
    if was_training:
        model.train()
    return {"n": total, "errors": wrong, "accuracy": (1.0 - wrong / total) if total else float("nan")}


class Distiller:
    """Train ``student`` to match ``teacher`` with the losses of ``config``.

    Args:
        student: the module to train (its current weights are the starting point).
        teacher: ``nn.Module`` or callable returning logits (or ``.logits``); None if no term needs it.
        config: a :class:`DistillConfig` (``task``/``task_args`` are ignored here).
        run_dir: checkpoints, ``history.json`` and the final ``student.safetensors``; default
            ``config.run_dir`` or ``build/runs/distill``.
        architecture: ``kdmobile.models`` name recorded in the student checkpoint (default: class name).
        model_config: keyword arguments that rebuild the student, recorded in its checkpoint.
        teacher_id: identity of a teacher without a ``state_dict`` (for the cache key).
        log: where one-line messages go (default: stderr, rank 0 only).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: Callable[..., Any] | None = None,
        config: DistillConfig | None = None,
        *,
        run_dir: str | os.PathLike[str] | None = None,
        architecture: str | None = None,
        model_config: dict[str, Any] | None = None,
        teacher_id: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config or DistillConfig()
        self.student = student
        self.teacher = teacher
        self.run_dir = Path(run_dir or self.config.run_dir or "build/runs/distill")
        self.architecture = architecture or type(student).__name__
        self.model_config = dict(model_config or {})
        self.teacher_id = teacher_id
        self._log = log
        self.terms, self.weights = build_losses(self.config.loss)
        self.needs_teacher = any(t.needs_teacher for t in self.terms.values())
        feature_terms = [n for n, t in self.terms.items() if t.inputs == "features"]
        if self.needs_teacher and teacher is None:
            need = [n for n, t in self.terms.items() if t.needs_teacher]
            raise UsageError(f"loss term(s) {', '.join(need)} need a teacher, but none was given")
        if feature_terms and self.config.cache.enabled:
            raise UsageError(
                f"loss term(s) {', '.join(feature_terms)} compare hidden features, which the teacher-output cache "
                "does not store: set cache.enabled = false (teacher online)"
            )
        if feature_terms and not isinstance(teacher, nn.Module):
            raise UsageError(
                f"loss term(s) {', '.join(feature_terms)} hook teacher modules: the teacher must be an nn.Module"
            )
        self.env = D.DistEnv()
        self.history = History()

    # ----------------------------------------------------------------------------------------- helpers
    def log(self, msg: str) -> None:
        if self.env.is_main:
            (self._log or (lambda m: print(m, file=sys.stderr)))(msg)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def _teacher_forward(self, batch: Batch, cache: TeacherCache | None) -> torch.Tensor | None:
        if not self.needs_teacher:
            return None
        if cache is not None:
            return cache.logits(batch.index).to(self.env.device)
        with torch.no_grad():
            return teacher_logits(self.teacher, batch.teacher).detach()

    # --------------------------------------------------------------------------------------------- fit
    def fit(
        self, train_set: Any, eval_set: Any = None, *, resume: bool = False, on_existing: str = "error"
    ) -> tuple[nn.Module, History]:
        """Train; return ``(student, history)``.

        Args:
            resume: continue from the newest valid checkpoint in ``run_dir/checkpoints`` (corrupt newer
                ones are moved aside); an error if there is none.
            on_existing: when not resuming, what to do with what an earlier run left in ``run_dir``
                (checkpoints, ``student.safetensors`` + ``.json``, ``history.json``): ``"error"`` (refuse),
                ``"move"`` (move it all into ``run_dir/previous-<UTC time>/``) or ``"discard"`` (delete the
                checkpoints, only folders this trainer wrote, see the module docstring; the rest is
                replaced at the end).

        Raises:
            NonFiniteLossError: a loss term became NaN/inf (names step and term).
            UsageError: bad set-up (mismatched shapes, missing modules, incompatible resume, checkpoints in
                the way or missing).
        """
        cfg = self.config
        tc, oc = cfg.train, cfg.optim
        self.env = env = D.setup()
        try:
            return self._fit(train_set, eval_set, resume, on_existing, env, cfg, tc, oc)
        finally:
            D.teardown(env)

    def _fit(self, train_set, eval_set, resume, on_existing, env, cfg, tc, oc) -> tuple[nn.Module, History]:
        from torch.utils.data import DistributedSampler
        from tqdm.auto import tqdm

        # Before anything slow (teacher cache): refuse a run that would lose or ignore checkpoints.
        latest = self._prepare_checkpoints(env, resume, on_existing)
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        n = len(train_set)
        if n == 0:
            raise UsageError("the transfer set is empty")
        device = env.device
        student = self.student.to(device)
        terms = self.terms.to(device)
        if isinstance(self.teacher, nn.Module):
            self.teacher.to(device).eval().requires_grad_(False)

        # Teacher-output cache: built (or verified) once, before any training step.
        cache = None
        if cfg.cache.enabled and self.needs_teacher:
            cache, info = TeacherCache.open_or_build(
                Path(cfg.cache.dir) if cfg.cache.dir else self.run_dir / "teacher_cache",
                self.teacher,
                train_set,
                topk=cfg.cache.topk,
                dtype=cfg.cache.dtype,
                batch_size=cfg.cache.batch_size or 2 * tc.batch_size,
                teacher_id=self.teacher_id,
                env=env,
                progress=tc.progress,
                log=self.log,
            )
            if len(cache) != n:
                raise UsageError(
                    f"teacher cache {cache.path} has {len(cache)} rows but the transfer set has {n}"
                )
            self.history.cache = info
            self.log(f"kdmobile: teacher cache {info['status']} in {info['seconds']:.1f}s: {info['path']}")

        # Feature hooks at the module paths the feature losses name.
        feat = {nm: t for nm, t in terms.items() if t.inputs == "features"}
        s_hooks = t_hooks = None
        if feat:
            idx = {nm: t.index for nm, t in feat.items()}
            s_hooks = FeatureHooks(
                student, {nm: t.student_layer for nm, t in feat.items()}, index=idx, role="student"
            )
            t_hooks = FeatureHooks(
                self.teacher,
                {nm: t.teacher_layer for nm, t in feat.items()},
                index=idx,
                detach=True,
                role="teacher",
            )

        # Set-up probe: shapes checked and projections created before the optimizer exists. It runs under
        # fork_rng with its own seed, so it neither consumes nor depends on the training RNG stream.
        probe = fetch(train_set, list(range(min(n, tc.batch_size)))).to(device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(tc.seed + 7919)
            student.eval()
            with torch.no_grad():
                s_out = _as_logits(student(*probe.student))
                s_feats = dict(s_hooks.features) if s_hooks else {}
                t_out = self._teacher_forward(probe, cache)
                t_feats = dict(t_hooks.features) if t_hooks else {}
            for name, term in terms.items():
                term: DistillLoss
                if term.inputs == "features":
                    term.setup(s_feats[name], t_feats[name], probe.label)
                else:
                    term.setup(s_out, t_out, probe.label)
            student.train()
        terms.to(device)
        if s_hooks:
            s_hooks.clear()
            t_hooks.clear()

        objective = _Objective(student, terms, self.weights, s_hooks)
        model: nn.Module = objective
        if env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(objective, device_ids=[device.index] if device.type == "cuda" else None)
        params = [p for p in objective.parameters() if p.requires_grad]
        optimizer = _make_optimizer(oc, params)

        sampler = DistributedSampler(
            range(n), num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=tc.seed, drop_last=False
        )
        per_rank = len(sampler)
        steps_per_epoch = per_rank // tc.batch_size if tc.drop_last else math.ceil(per_rank / tc.batch_size)
        if steps_per_epoch == 0:
            raise UsageError(
                f"train.batch_size={tc.batch_size} is larger than the {per_rank} rows per process"
            )
        total_steps = steps_per_epoch * tc.epochs
        scheduler = _make_scheduler(oc, optimizer, total_steps)

        # Fresh start or resume.
        state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "sums": {}, "count": 0}
        if latest is not None:
            state = self._load(latest, objective, optimizer, scheduler, cfg)
            self.history.resumed_from = latest.name
            self.log(
                f"kdmobile: resuming from {latest} (epoch {state['epoch']}, step {state['global_step']})"
            )
        else:
            torch.manual_seed(tc.seed)
            np.random.seed(tc.seed % 2**32)
            random.seed(tc.seed)
        D.barrier(env)

        fault = int(os.environ.get(FAULT_ENV, "0") or 0)
        after_step = getattr(student, "after_step", None)
        after_step = after_step if callable(after_step) else None
        global_step = state["global_step"]
        for epoch in range(state["epoch"], tc.epochs):
            if hasattr(train_set, "set_epoch"):
                if cache is not None:
                    raise UsageError(
                        "a dataset with set_epoch() changes every epoch: it cannot use the teacher cache"
                    )
                train_set.set_epoch(epoch)
            sampler.set_epoch(epoch)
            order = list(sampler)
            batches = [order[i : i + tc.batch_size] for i in range(0, len(order), tc.batch_size)]
            if tc.drop_last:
                batches = [b for b in batches if len(b) == tc.batch_size]
            skip = state["step_in_epoch"] if epoch == state["epoch"] else 0
            sums: dict[str, float] = dict(state["sums"]) if skip else {}
            count = state["count"] if skip else 0
            objective.train()
            t0 = time.perf_counter()
            bar = tqdm(
                total=len(batches), initial=skip, desc=f"epoch {epoch + 1}/{tc.epochs}", unit="step",
                disable=not (tc.progress and env.is_main), leave=False,
            )  # fmt: skip
            ckpt_seconds = 0.0
            for step_in_epoch in range(skip, len(batches)):
                batch = fetch(train_set, batches[step_in_epoch]).to(device)
                if t_hooks is not None:
                    t_hooks.clear()
                t_out = self._teacher_forward(batch, cache)  # online: the hooks capture its features too
                t_feats = dict(t_hooks.features) if t_hooks is not None else {}
                total, parts = model(batch.student, t_out, t_feats, batch.label)
                values = [float(v.detach()) for v in parts.values()]
                self._check_finite(env, global_step + 1, epoch, list(parts), values)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                if oc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, oc.grad_clip)
                optimizer.step()
                if after_step is not None:
                    after_step()  # e.g. a max-norm weight constraint
                scheduler.step()
                global_step += 1
                rows = len(batch)
                for name, v in zip(parts, values, strict=True):
                    sums[name] = sums.get(name, 0.0) + v * rows
                sums["__total__"] = sums.get("__total__", 0.0) + float(total.detach()) * rows
                count += rows
                bar.update(1)
                bar.set_postfix(loss=f"{float(total.detach()):.4f}", refresh=False)
                if fault and global_step == fault:
                    os.kill(os.getpid(), signal.SIGKILL)
                last = step_in_epoch + 1 == len(batches)
                if tc.checkpoint_every and global_step % tc.checkpoint_every == 0 and not last:
                    c0 = time.perf_counter()
                    self._save(
                        objective,
                        optimizer,
                        scheduler,
                        cfg,
                        epoch,
                        step_in_epoch + 1,
                        global_step,
                        sums,
                        count,
                    )
                    ckpt_seconds += time.perf_counter() - c0
            bar.close()
            seconds = time.perf_counter() - t0 - ckpt_seconds
            g = D.all_reduce_sum(env, [sums.get(k, 0.0) for k in [*self.terms, "__total__"]] + [count])
            gcount = max(g[-1], 1.0)
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": g[-2] / gcount,
                "terms": {k: g[i] / gcount for i, k in enumerate(self.terms)},
                "steps": len(batches),
                "seconds": round(seconds, 4),
                "examples_per_second": round(count * env.world_size / seconds, 1) if seconds > 0 else None,
                "teacher": "none" if not self.needs_teacher else ("cache" if cache is not None else "online"),
                "lr": optimizer.param_groups[0]["lr"],
            }
            if eval_set is not None:
                e0 = time.perf_counter()
                record["eval"] = evaluate(
                    student, eval_set, batch_size=tc.eval_batch_size or 2 * tc.batch_size, env=env
                )
                record["eval"]["seconds"] = round(time.perf_counter() - e0, 3)
                student.train()
            self.history.epochs.append(record)
            self.history.steps = global_step
            msg = f"kdmobile: epoch {epoch + 1}/{tc.epochs} loss {record['loss']:.4f} ({seconds:.1f}s, {record['teacher']})"
            if "eval" in record:
                msg += f" eval errors {record['eval']['errors']}/{record['eval']['n']}"
            self.log(msg)
            self._save(objective, optimizer, scheduler, cfg, epoch + 1, 0, global_step, {}, 0)

        if s_hooks:
            s_hooks.remove()
            t_hooks.remove()
        self.history.steps = global_step
        if env.is_main:
            from kdmobile.checkpoint import save_checkpoint

            save_checkpoint(
                self.run_dir / "student.safetensors",
                student,
                architecture=self.architecture,
                model_config=self.model_config,
                metadata={
                    "config": _config_dict(cfg),
                    "steps": global_step,
                    "history": self.history.to_dict(),
                },
            )
            write_json(self.run_dir / "history.json", self.history.to_dict())
        D.barrier(env)
        student.eval()
        return student, self.history

    # -------------------------------------------------------------------------------------- NaN checks
    def _check_finite(
        self, env: D.DistEnv, step: int, epoch: int, names: list[str], values: list[float]
    ) -> None:
        bad = [0.0 if math.isfinite(v) else 1.0 for v in values]
        if env.distributed:
            bad = D.all_reduce_sum(env, bad)
        for name, b, v in zip(names, bad, values, strict=True):
            if b:
                raise NonFiniteLossError(step, epoch + 1, name, v if not math.isfinite(v) else float("nan"))

    # ---------------------------------------------------------------------------------- checkpointing
    def _prepare_checkpoints(self, env: D.DistEnv, resume: bool, on_existing: str) -> Path | None:
        """Check the run dir, set earlier checkpoints aside as asked; return the checkpoint to resume from."""
        check_run_dir(self.run_dir, resume=resume, on_existing=on_existing)  # every rank: same verdict
        root = self.checkpoint_dir
        if env.is_main and not resume and _earlier_run(self.run_dir):
            if on_existing == "move":
                dest = _move_aside(self.run_dir, _earlier_run(self.run_dir))
                self.log(f"kdmobile: --overwrite: moved the earlier run to {dest}")
            else:
                for c in _own_checkpoints(root):
                    if not _remove_checkpoint(c):
                        self.log(f"kdmobile: {c} is not a checkpoint this trainer wrote; moved it to "
                                 f"{_rename_aside(c, 'corrupt').name}")  # fmt: skip
                _remove_own_latest(root)
        # Rank 0 moves corrupt checkpoints aside first, so every rank then finds the same valid one.
        latest = _latest_checkpoint(root, self.log) if resume and env.is_main else None
        D.barrier(env)
        if resume and not env.is_main:
            latest = _latest_checkpoint(root, None)
        if resume and latest is None:
            raise UsageError(
                f"--resume: no valid checkpoint left in {root} (the corrupt ones were renamed *.corrupt-*): "
                "start a new run with --overwrite"
            )
        return latest

    def _save(
        self,
        objective: _Objective,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        cfg: DistillConfig,
        epoch: int,
        step_in_epoch: int,
        global_step: int,
        sums: dict[str, float],
        count: int,
    ) -> None:
        if not self.env.is_main:
            return
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        for k, v in objective.student.state_dict().items():
            tensors[f"model.{k}"] = v.detach().cpu().contiguous()
        for k, v in objective.terms.state_dict().items():
            tensors[f"terms.{k}"] = v.detach().cpu().contiguous()
        opt = optimizer.state_dict()
        opt_extra: dict[str, dict[str, Any]] = {}
        for pid, st in opt["state"].items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
                else:
                    opt_extra.setdefault(str(pid), {})[k] = v
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        np_state = np.random.get_state()
        tensors["rng.numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
        meta = {
            "checkpoint_version": CHECKPOINT_VERSION,
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": global_step,
            "sums": sums,
            "count": count,
            "config": _config_dict(cfg),
            "optimizer": {"param_groups": opt["param_groups"], "extra": opt_extra},
            "scheduler": scheduler.state_dict(),
            "rng": {"numpy_pos": int(np_state[2]), "numpy_gauss": [int(np_state[3]), float(np_state[4])],
                    "python": _py_state(random.getstate())},
            "history": self.history.to_dict(),
        }  # fmt: skip
        name = f"step-{global_step:07d}"
        dest = self.checkpoint_dir / name
        if dest.exists():  # never replaced wholesale: whatever is there may hold someone's files
            self.log(f"kdmobile: {dest} was in the way; moved it to {_rename_aside(dest, 'replaced').name}")
        with atomic_path(dest, is_dir=True) as tmp:
            save_file(unshared(tensors), str(tmp / "state.safetensors"))
            meta["sha256"] = sha256_file(tmp / "state.safetensors")
            write_json(tmp / "state.json", meta)
        write_json(
            self.checkpoint_dir / "latest.json",
            {"checkpoint": name, "global_step": global_step, "epoch": epoch},
        )
        for old in _own_checkpoints(self.checkpoint_dir)[: -self.config.train.keep_checkpoints]:
            _remove_checkpoint(old)

    def _load(
        self,
        path: Path,
        objective: _Objective,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        cfg: DistillConfig,
    ) -> dict[str, Any]:
        from safetensors.torch import load_file

        meta = json.loads((path / "state.json").read_text())
        _check_resume_config(meta["config"], _config_dict(cfg), path)
        tensors = load_file(str(path / "state.safetensors"))
        dev = self.env.device
        objective.student.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        objective.terms.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("terms.")})
        opt_state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, key = k.split(".", 2)
                opt_state.setdefault(int(pid), {})[key] = v.to(dev) if key != "step" else v
        for pid, extra in meta["optimizer"]["extra"].items():
            opt_state.setdefault(int(pid), {}).update(extra)
        optimizer.load_state_dict({"state": opt_state, "param_groups": meta["optimizer"]["param_groups"]})
        scheduler.load_state_dict(meta["scheduler"])
        torch.set_rng_state(tensors["rng.torch"])
        if torch.cuda.is_available():
            cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
            if cuda_states:
                torch.cuda.set_rng_state_all(cuda_states)
        r = meta["rng"]
        np.random.set_state(
            ("MT19937", tensors["rng.numpy"].numpy().astype(np.uint32), r["numpy_pos"], *r["numpy_gauss"])
        )
        random.setstate(_py_state_back(r["python"]))
        h = meta.get("history") or {}
        self.history = History(epochs=h.get("epochs", []), cache=self.history.cache, steps=h.get("steps", 0))
        return {k: meta[k] for k in ("epoch", "step_in_epoch", "global_step", "sums", "count")}


# ------------------------------------------------------------------------------------------------ utils
def _config_dict(cfg: DistillConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg), default=str))


def _check_resume_config(old: dict[str, Any], new: dict[str, Any], where: Path) -> None:
    diffs: list[str] = []

    def walk(a: Any, b: Any, path: tuple[str, ...]) -> None:
        if path in _RESUME_FREE:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), (*path, k))
        elif a != b:
            diffs.append(f"{'.'.join(path)}: {a!r} -> {b!r}")

    walk(old, new, ())
    if diffs:
        raise UsageError(
            f"cannot resume from {where}: the config changed ({'; '.join(diffs[:5])}); use the same settings, or "
            "start a new run without --resume"
        )


def _py_state(state: tuple) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _py_state_back(obj: list[Any]) -> tuple:
    return (obj[0], tuple(obj[1]), obj[2])


def check_run_dir(
    run_dir: str | os.PathLike[str], *, resume: bool = False, on_existing: str = "error"
) -> None:
    """Refuse, before anything is built or written, a run that would lose an earlier run or ignore it.

    Read-only (``kdmobile distill`` calls it before building the task's teacher); see :meth:`Distiller.fit`
    for the arguments.

    Raises:
        UsageError: ``resume`` but no checkpoint folder in ``run_dir/checkpoints``; not ``resume`` and an
            earlier run's files are there with ``on_existing="error"``; a bad ``on_existing``.
    """
    root = Path(run_dir) / "checkpoints"
    if on_existing not in ON_EXISTING:
        raise UsageError(f"on_existing must be one of {', '.join(ON_EXISTING)}, got {on_existing!r}")
    found = _own_checkpoints(root)
    if resume:
        if on_existing != "error":
            raise UsageError("--resume continues the checkpoints that --overwrite would move aside: pass one")
        if not found:
            where = f"{root} holds no step-NNNNNNN checkpoint" if root.is_dir() else f"there is no {root}"
            raise UsageError(
                f"--resume: {where}: check -o RUN_DIR (the run dir the interrupted run wrote), or start a "
                "new run without --resume"
            )
    elif on_existing == "error" and (earlier := _earlier_run(Path(run_dir))):
        what = ", ".join(str(p.relative_to(run_dir)) for p in earlier)
        raise UsageError(
            f"{run_dir} already holds an earlier run ({what}): pass --resume to continue it, --overwrite to "
            "move it to RUN_DIR/previous-<time>/ and start again, or choose another -o RUN_DIR"
        )


def _earlier_run(run_dir: Path) -> list[Path]:
    """What an earlier run left in ``run_dir`` that a new one would replace: checkpoints, student, history."""
    root = run_dir / "checkpoints"
    found = [*_own_checkpoints(root), root / "latest.json", *(run_dir / name for name in _RUN_OUTPUTS)]
    return [p for p in found if p.exists()]


def _own_checkpoints(root: Path) -> list[Path]:
    """The checkpoint folders under ``root`` named as this trainer names them, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name))


def _checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from, or None if it is complete and verifies."""
    try:
        meta = json.loads((path / "state.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"state.json unreadable: {e}"
    if not isinstance(meta, dict) or any(k not in meta for k in _STATE_KEYS):
        return "state.json lacks checkpoint fields"
    try:
        if sha256_file(path / "state.safetensors") != meta["sha256"]:
            return "state.safetensors does not match its sha256"
    except OSError as e:
        return f"state.safetensors unreadable: {e}"
    return None


def _latest_checkpoint(root: Path, log: Callable[[str], None] | None) -> Path | None:
    """The newest checkpoint that verifies; with ``log``, corrupt newer ones are renamed aside and reported.

    Checkpoint folders are written atomically, so the newest complete one is the one to continue from
    (``latest.json`` may lag it by a crash between the two writes).
    """
    for c in reversed(_own_checkpoints(root)):
        problem = _checkpoint_problem(c)
        if problem is None:
            return c
        if log is not None:
            try:
                moved = f"renamed it {_rename_aside(c, 'corrupt').name}"
            except OSError as e:
                moved = f"could not rename it ({e})"
            log(f"kdmobile: checkpoint {c} is corrupt ({problem}); {moved}; trying an older one")
    return None


def _is_own(path: Path) -> bool:
    """A checkpoint folder this trainer wrote: its name, and a state.json with a checkpoint_version."""
    try:
        meta = json.loads((path / "state.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return bool(_STEP_DIR.fullmatch(path.name)) and isinstance(meta, dict) and "checkpoint_version" in meta


def _remove_checkpoint(path: Path) -> bool:
    """Delete a checkpoint folder this trainer wrote: its two files, then the folder if nothing else is in it.

    Returns False (and touches nothing) if ``path`` is not recognisably one of ours.
    """
    if not _is_own(path):
        return False
    for name in _STATE_FILES:
        (path / name).unlink(missing_ok=True)
    try:
        path.rmdir()
    except OSError:
        pass  # someone put other files in it: they stay
    return True


def _remove_own_latest(root: Path) -> None:
    latest = root / "latest.json"
    try:
        if set(json.loads(latest.read_text())) == {"checkpoint", "global_step", "epoch"}:
            latest.unlink()
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        pass


def _utc_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... : the first that does not exist (renames never overwrite)."""
    n, candidate = 1, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _rename_aside(path: Path, tag: str) -> Path:
    """Rename ``path`` to ``path.<tag>-<UTC time>`` beside it; return the new path."""
    dest = _free_name(path.with_name(f"{path.name}.{tag}-{_utc_stamp()}"))
    os.rename(path, dest)
    return dest


def _move_aside(root: Path, paths: list[Path]) -> Path:
    """Move ``paths`` (under ``root``) into a new ``root/previous-<UTC time>/``, keeping their relative
    paths; return that folder."""
    dest = _free_name(root / f"previous-{_utc_stamp()}")
    for p in paths:
        target = dest / p.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(p, target)
    return dest


def _make_optimizer(oc: Any, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if oc.name == "adamw":
        return torch.optim.AdamW(params, lr=oc.lr, betas=tuple(oc.betas), weight_decay=oc.weight_decay)
    return torch.optim.SGD(
        params, lr=oc.lr, momentum=oc.momentum, nesterov=oc.nesterov, weight_decay=oc.weight_decay
    )


def _make_scheduler(oc: Any, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    if oc.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=oc.lr,
            total_steps=total_steps,
            pct_start=oc.warmup or 0.3,
            anneal_strategy="cos",
        )
    warm = int(oc.warmup * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if oc.schedule == "constant":
            return 1.0
        frac = (step - warm) / max(1, total_steps - warm)
        if oc.schedule == "linear":
            return max(0.0, 1.0 - frac)
        return oc.min_lr_ratio + (1.0 - oc.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
