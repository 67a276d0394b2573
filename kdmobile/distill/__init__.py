"""Knowledge distillation: losses picked by name, a teacher-output cache, a resumable training loop.

    kdmobile distill configs/mnist_quick.toml --set train.epochs=3 -o build/runs/mnist
    torchrun --nproc_per_node 2 -m kdmobile.cli distill configs/mnist_quick.toml -o build/runs/ddp

The same command runs single-process or under ``torchrun`` (PyTorch DDP: gloo on CPU, NCCL on GPUs).

Python API (no config file needed)::

    from kdmobile.distill import CacheConfig, DistillConfig, Distiller, OptimConfig, TrainConfig

    # A dataset item is a dict. Teacher and student may take different inputs (any number of tensors):
    #   {"student": (ids,), "teacher": (input_ids, attention_mask), "label": 3}
    # label -1 marks an unlabelled row: hard-label terms (the CE part of "kd", "ce") skip it, and a batch
    # of only unlabelled rows still trains on the soft terms. A single tensor may stand for a 1-tuple.
    cfg = DistillConfig(
        loss={"kd": {"weight": 1.0, "temperature": 4.0, "alpha": 0.3}},
        train=TrainConfig(epochs=3, batch_size=64, seed=0, checkpoint_every=200),
        optim=OptimConfig(name="adamw", lr=1e-3, weight_decay=0.01, schedule="cosine", warmup=0.05),
        cache=CacheConfig(enabled=True, topk=0, dtype="float32"),  # enabled=False: teacher online
    )
    distiller = Distiller(student, teacher, cfg, run_dir="build/runs/demo")
    student, history = distiller.fit(train_set, eval_set=val_set, resume=False)
    history.epochs[-1]  # {"epoch", "loss", "terms", "seconds", "steps", "teacher": "cache"|"online", ...}
    history.cache       # {"status": "built"|"reused"|"rebuilt", "seconds", "path", "key"} or None

``teacher`` is an ``nn.Module`` (put in eval mode, never trained) or any callable; it is called as
``teacher(*item["teacher"])`` on a collated batch and may return a logits tensor, an object with
``.logits`` (Hugging Face) or a tuple whose first element is the logits. ``teacher=None`` is allowed when
no loss needs it (e.g. ``loss={"ce": {}}`` trains on hard labels only).

Losses (``LOSSES`` registry; each docstring gives the paper and the formula). The config maps a term
name to its settings; ``type`` defaults to the term name, so one loss can appear twice::

    loss = {"kd": {"weight": 1.0, "temperature": 20.0, "alpha": 0.1},
            "h0": {"type": "hidden_mse", "weight": 0.5,
                   "student_layer": "encoder.layers.0", "teacher_layer": "encoder.layer.2"}}

- ``kd``          Hinton et al. 2015: a*CE(y) + (1-a)*T^2*KL(p_t^T || p_s^T), batchmean.
- ``ce``          cross-entropy on hard labels (rows with label -1 skipped).
- ``logit_mse``   Ba & Caruana 2014: mean squared error between logits.
- ``hidden_mse``  FitNets (Romero et al. 2015): MSE between hooked features, learned nn.Linear projection of
                  the student's feature when widths differ (trained with the student).
- ``attention``   TinyBERT (Jiao et al. 2020): MSE between hooked attention maps [B, H, L, L].
- ``token_kd``    token-level forward or reverse KL for causal LMs (logits [B, T, V]); positions whose
                  label is negative (padding) are masked; different vocab sizes are an error at set-up.
The total is the weighted sum; a NaN/inf term raises ``NonFiniteLossError`` naming the step and the term.

Teacher-output cache (``cache.enabled=True``): the teacher runs once over the transfer set (sharded
across DDP ranks), its logits go to ``<cache.dir or run_dir/teacher_cache>/`` as memory-mapped ``.npy``
files plus ``header.json`` holding the key (sha256 of the teacher's state_dict bytes, of every teacher
input tensor in dataset order, and of the settings) and a sha256 per file. A stale key or a corrupt
file (truncated, checksum mismatch) is reported on stderr and rebuilt, never used. ``topk=0`` stores all
logits (fp32 or fp16); ``topk=k`` stores the top-k logits in fp16, their indices and the remaining
probability mass (at T=1), and reading rebuilds dense logits by giving every other class the same logit,
chosen so the softmax at T=1 puts exactly the remaining mass on them (spread uniformly); the loss then
applies its own temperature. Feature losses (``hidden_mse``, ``attention``) need the teacher online.
Data items must be deterministic per index when the cache is used (fixed augmented copies, not random
augmentation); a dataset with ``set_epoch(epoch)`` is told the epoch before each epoch.

If the student has a method ``after_step()``, it is called after every optimizer step (e.g. a max-norm
weight constraint). Runs are reproducible (``train.seed``). ``run_dir`` gets ``checkpoints/step-NNNNNNN/`` (safetensors + JSON,
each written atomically; RNG states, sampler position, optimizer and scheduler state), ``history.json``
and, at the end, ``student.safetensors`` + ``student.json`` (``kdmobile.checkpoint`` format).
``fit(..., resume=True)`` continues from the last complete checkpoint and ends with the same weights as
an uninterrupted run. Under DDP only rank 0 writes.

Tasks for the CLI: the config's ``task = "mnist"`` names a task plug-in (``kdmobile.task``) whose
``distill_setup(args, seed)`` returns a :class:`Task` (``"pkg.module:function"`` names a bare factory).
"""

from __future__ import annotations

from kdmobile.distill.cache import CacheError, TeacherCache, state_dict_sha256
from kdmobile.distill.config import CacheConfig, DistillConfig, OptimConfig, TrainConfig
from kdmobile.distill.data import collate
from kdmobile.distill.hooks import FeatureHooks
from kdmobile.distill.losses import LOSSES, DistillLoss, build_losses
from kdmobile.distill.tasks import Task, get_task
from kdmobile.distill.trainer import Distiller, History, NonFiniteLossError, evaluate

__all__ = [
    "LOSSES",
    "CacheConfig",
    "CacheError",
    "DistillConfig",
    "DistillLoss",
    "Distiller",
    "FeatureHooks",
    "History",
    "NonFiniteLossError",
    "OptimConfig",
    "Task",
    "TeacherCache",
    "TrainConfig",
    "build_losses",
    "collate",
    "evaluate",
    "get_task",
    "state_dict_sha256",
]
