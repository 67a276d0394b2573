"""Structured pruning (torch-pruning) with KD recovery against the unpruned model.

    kdmobile compress prune build/email/student.safetensors --dim 24 --hidden 64 -o build/pruned

Structured pruning removes whole channels, so the result is an ordinary smaller model: every exporter
takes it unchanged (no sparse kernels needed), and for the email student the pruned shapes are exactly
``EmailStudent(dim=..., hidden=...)``, so the checkpoint rebuilds from its ``model_config``.

- Channels are chosen by torch-pruning (PyPI ``torch-pruning``; its ``DependencyGraph`` finds every layer
  coupled to a pruned channel: the embedding's columns run through the pooling, the LayerNorm and the
  first Linear's inputs) with group L2-magnitude importance.
- The reading gate's one-column table meets the embedding only through a broadcast multiply, which the
  dependency graph cannot tell from a channel-wise one: it would couple the gate to every embedding
  channel and reject the group. The gate is therefore given a no-op pruner for the duration.
- Recovery: :class:`kdmobile.distill.Distiller` with the ``kd`` loss, teacher = the unpruned model (its
  outputs cached by the teacher-output cache), on unlabelled transfer rows.

Parameter budget: the email teacher (all-MiniLM-L6-v2) has 22.7 M parameters; 1/50 of it is 454 k. The
student (1.08 M) pruned to ``dim=24, hidden=64`` has 414 k (the embedding table is 16384 x dim).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdmobile.errors import UsageError


def count_params(model: Any) -> int:
    return sum(int(p.numel()) for p in model.parameters())


def prune_channels(
    model: Any,
    example_inputs: Sequence[Any],
    widths: dict[str, int],
    *,
    ignored: Sequence[str] = (),
    untouched: Sequence[str] = (),
) -> tuple[Any, dict[str, Any]]:
    """Prune a copy of ``model`` so each named layer keeps ``widths[name]`` output channels.

    Args:
        model: the float model (left untouched).
        example_inputs: one batch, for torch-pruning's tracing.
        widths: module name → channels to keep (``nn.Linear`` out features, ``nn.Embedding`` columns);
            every coupled layer (LayerNorm, the next Linear's inputs) follows.
        ignored: modules whose outputs must keep their width (e.g. the classifier head).
        untouched: ``nn.Embedding`` tables coupled only through a broadcast (one column): never pruned.

    Returns:
        (pruned model in eval mode, record with parameters before/after and every layer's new shape).
    """
    import torch
    import torch_pruning as tp
    from torch import nn

    model = copy.deepcopy(model).eval()
    modules = dict(model.named_modules())
    for name in (*widths, *ignored, *untouched):
        if name not in modules:
            raise UsageError(
                f"prune: the model has no module {name!r}; modules: {', '.join(n for n in modules if n)}"
            )
    ratios = {}
    for name, keep in widths.items():
        have = _width(modules[name])
        if not 0 < keep <= have:
            raise UsageError(f"prune: {name} has {have} channels; cannot keep {keep}")
        ratios[modules[name]] = (have - keep) / have
    before = count_params(model)
    shapes_before = {n: _width(m) for n, m in modules.items() if isinstance(m, nn.Linear | nn.Embedding)}
    gate_cls = _gate_class()
    saved = {n: type(modules[n]) for n in untouched}
    for n in untouched:
        modules[n].__class__ = gate_cls
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            tuple(example_inputs) if len(example_inputs) > 1 else example_inputs[0],
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio_dict=ratios,
            ignored_layers=[modules[n] for n in ignored],
            root_module_types=[nn.Linear, nn.Embedding],
            customized_pruners={gate_cls: _untouched_pruner()},
        )
        with torch.no_grad():
            pruner.step()
    finally:
        for n, cls in saved.items():
            modules[n].__class__ = cls
    got = {n: _width(modules[n]) for n in widths}
    if got != dict(widths):
        raise UsageError(f"prune: asked for widths {dict(widths)}, torch-pruning produced {got}")
    record = {
        "library": f"torch-pruning {_version('torch-pruning')}",
        "importance": "group L2 magnitude",
        "params_before": before,
        "params_after": count_params(model),
        "widths_before": {n: shapes_before[n] for n in widths},
        "widths_after": got,
        "untouched": list(untouched),
    }
    return model.eval(), record


def _width(module: Any) -> int:
    from torch import nn

    if isinstance(module, nn.Embedding):
        return int(module.embedding_dim)
    if isinstance(module, nn.Linear):
        return int(module.out_features)
    raise UsageError(f"prune: can prune nn.Linear and nn.Embedding outputs, not {type(module).__name__}")


@functools.cache
def _gate_class() -> type:
    from torch import nn

    class BroadcastOnlyEmbedding(nn.Embedding):
        """Marks a table for the no-op pruner while torch-pruning runs; the class is restored after."""

    return BroadcastOnlyEmbedding


@functools.cache
def _untouched_pruner() -> Any:
    import torch_pruning as tp

    class Untouched(tp.pruner.function.BasePruningFunc):
        def prune_out_channels(self, layer: Any, idxs: Sequence[int]) -> Any:
            return layer

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer: Any) -> None:
            return None  # None: torch-pruning's group check skips this layer

        get_in_channels = get_out_channels

    return Untouched()


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def recover_kd(
    pruned: Any,
    teacher: Any,
    train_set: Any,
    *,
    config: Any = None,
    eval_set: Any = None,
    run_dir: str | Path = "build/pruned/run",
    architecture: str | None = None,
    model_config: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Fine-tune ``pruned`` to match ``teacher`` (the unpruned model) with the ``kd`` loss.

    Returns (the recovered model in eval mode, the Distiller's history dict).
    """
    from kdmobile.distill import CacheConfig, DistillConfig, Distiller, OptimConfig, TrainConfig

    if config is None:
        config = DistillConfig(
            loss={"kd": {"weight": 1.0, "temperature": 2.0, "alpha": 0.0}},
            train=TrainConfig(epochs=4, batch_size=64, seed=0, progress=False),
            optim=OptimConfig(name="adamw", lr=3e-3, weight_decay=0.0, schedule="cosine"),
            cache=CacheConfig(enabled=True),
        )
    teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
    distiller = Distiller(
        pruned,
        teacher,
        config,
        run_dir=run_dir,
        architecture=architecture,
        model_config=model_config,
        log=log,
    )
    model, history = distiller.fit(train_set, eval_set=eval_set)
    return model.eval(), history.to_dict()


# -- the email student ---------------------------------------------------------------------------------
EMAIL_TEACHER_PARAMS = 22_731_696  # all-MiniLM-L6-v2 fine-tuned (README)


def prune_email_student(
    model: Any, *, dim: int, hidden: int, seq_len: int = 32
) -> tuple[Any, dict[str, Any]]:
    """Prune an :class:`~kdmobile.tasks.email.model.EmailStudent` to ``dim`` embedding columns, ``hidden`` units."""
    import torch

    ids = torch.arange(1, 2 * seq_len + 1, dtype=torch.long).reshape(2, seq_len)
    untouched = ("gate",) if getattr(model, "gate", None) is not None else ()
    pruned, record = prune_channels(
        model, (ids,), {"embed": dim, "hidden": hidden}, ignored=("head",), untouched=untouched
    )
    record["teacher_fraction"] = record["params_after"] / EMAIL_TEACHER_PARAMS
    return pruned, record


def email_transfer_set(tokenizer_config: Any, n: int, seed: int) -> Any:
    """Unlabelled generated emails tokenised for the student: a Distiller dataset (label -1)."""
    import torch

    from kdmobile.tasks.email import sample_inputs
    from kdmobile.tasks.email.pipeline import EmailSet

    ids = torch.from_numpy(sample_inputs(tokenizer_config, n=n, split="generated", seed=seed))
    return EmailSet(ids, (ids,), torch.full((len(ids),), -1, dtype=torch.long))


def prune_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    dim: int,
    hidden: int,
    n_transfer: int = 4000,
    epochs: int = 4,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Prune an email-student checkpoint, recover it with KD, write ``out_dir/student.safetensors``.

    Returns the checkpoint path and a record (params, widths, agreement with the unpruned model on the
    hand-written held-out emails before and after recovery).
    """
    import torch

    from kdmobile.checkpoint import load_checkpoint, save_checkpoint
    from kdmobile.io import write_json
    from kdmobile.tasks.email import sample_inputs

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    model, meta = load_checkpoint(checkpoint)
    if meta.get("architecture") != "email-student":
        raise UsageError(
            f"{checkpoint}: kdmobile compress prune handles email-student checkpoints, got {meta.get('architecture')!r}; "
            "from Python, use kdmobile.compress.prune.prune_channels + recover_kd"
        )
    model.eval()
    tok = meta.get("tokenizer")
    heldout = torch.from_numpy(sample_inputs(tok, n=len(_heldout()), split="heldout"))

    def agreement(m: Any) -> float:
        with torch.no_grad():
            return float((m(heldout).argmax(1) == ref).float().mean())

    with torch.no_grad():
        ref = model(heldout).argmax(1)
    pruned, record = prune_email_student(model, dim=dim, hidden=hidden)
    record["heldout_agreement_pruned"] = agreement(pruned)
    mc = {**meta.get("model_config", {}), "dim": dim, "hidden": hidden}
    train_set = email_transfer_set(tok, n_transfer, seed)
    from kdmobile.distill import CacheConfig, DistillConfig, OptimConfig, TrainConfig

    config = DistillConfig(
        loss={"kd": {"weight": 1.0, "temperature": 2.0, "alpha": 0.0}},
        train=TrainConfig(epochs=epochs, batch_size=64, seed=seed, progress=False),
        optim=OptimConfig(name="adamw", lr=3e-3, weight_decay=0.0, schedule="cosine"),
        cache=CacheConfig(enabled=True),
    )
    torch.manual_seed(seed)
    recovered, history = recover_kd(
        pruned, model, train_set, config=config, run_dir=out_dir / "run", architecture="email-student",
        model_config=mc, log=log,
    )  # fmt: skip
    record["heldout_agreement_recovered"] = agreement(recovered)
    record["heldout_n"] = int(len(heldout))
    record["recovery"] = {
        "epochs": epochs,
        "transfer_rows": n_transfer,
        "loss": "kd T=2 vs the unpruned model",
    }
    record["history"] = history["epochs"]
    extra = {k: v for k, v in meta.items() if k in ("task", "tokenizer", "intents")}
    path = save_checkpoint(
        out_dir / "student.safetensors",
        recovered,
        architecture="email-student",
        model_config=mc,
        metadata={
            **extra,
            "pruned_from": str(checkpoint),
            "pruning": {k: v for k, v in record.items() if k != "history"},
        },
    )
    write_json(out_dir / "prune.json", record)
    return path, record


def _heldout() -> list[Any]:
    from kdmobile.tasks.email import load_heldout

    return load_heldout()


__all__ = [
    "EMAIL_TEACHER_PARAMS",
    "count_params",
    "email_transfer_set",
    "prune_channels",
    "prune_checkpoint",
    "prune_email_student",
    "recover_kd",
]


def distill_checkpoint(
    checkpoint: str | Path,
    config: str | Path,
    out_dir: str | Path,
    *,
    overrides: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Distil an (already pruned) checkpoint again with a ``kdmobile distill`` config: its task's teacher,
    transfer data, losses and schedule, starting from the checkpoint's weights instead of a fresh student.

    The config's task builds the teacher and the data exactly as ``kdmobile distill`` does (so its
    teacher-output cache is reused when ``cache.dir`` points at it); only the student is replaced.
    Writes ``out_dir/student.safetensors`` with the checkpoint's metadata (task, tokenizer, labels) plus
    ``distilled_after_pruning``; returns (path, the Distiller's history).
    """
    import torch

    from kdmobile import config as C
    from kdmobile.checkpoint import load_checkpoint, save_checkpoint
    from kdmobile.distill import Distiller
    from kdmobile.distill.config import DistillConfig
    from kdmobile.distill.tasks import get_task

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    model, meta = load_checkpoint(checkpoint)
    cfg = C.load(DistillConfig, str(config), list(overrides))
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    task = get_task(cfg.task)(dict(cfg.task_args), seed=cfg.train.seed)
    if task.architecture != meta.get("architecture"):
        raise UsageError(
            f"{checkpoint}: architecture {meta.get('architecture')!r}, but {config}'s task trains {task.architecture!r}"
        )
    distiller = Distiller(
        model.train(),
        task.teacher,
        cfg,
        run_dir=out_dir / "run",
        architecture=task.architecture,
        model_config=meta.get("model_config"),
        teacher_id=task.teacher_id,
        log=log,
    )
    student, history = distiller.fit(task.train, task.eval)
    keep = {
        k: v for k, v in meta.items() if k not in ("format_version", "architecture", "model_config", "sha256")
    }
    path = save_checkpoint(
        out_dir / "student.safetensors",
        student.eval(),
        architecture=task.architecture,
        model_config=meta.get("model_config"),
        metadata={**keep, "distilled_after_pruning": {"from": str(checkpoint), "config": str(config)}},
    )
    return path, history.to_dict()
