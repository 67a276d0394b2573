"""A small, deterministic email student and a stand-in teacher: what the harness's own tests bench.

    python -m kdmobile.tasks.selftest build/selftest            # train both (seconds), print the paths
    kdmobile export build/selftest/student.safetensors --all --bundle -o build/selftest/export
    kdmobile bench build/selftest/export --task selftest -o build/selftest/report

Both models are trained here in a few seconds on the email task's hand-written held-out set itself (they
memorise it on purpose: their figures then depend only on that set, the tokenizer and the metrics, not on
the training-data generator), single-threaded and seeded, so every run produces the same weights on a
machine: the committed ``baselines/selftest-<machine_class>.json`` can then be checked against a fresh
export in ``make test``.
The teacher is a real (if small) two-layer Transformer encoder over the same hashed ids, not a mock: the
bench times it and computes agreement and retention against it exactly as for the email teacher.
The ``selftest`` task (``plugin.py``) benches on the email task's hand-written held-out set and metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdmobile.harness.tasks import EvalSet, TeacherModel

STUDENT_CONFIG = {"num_buckets": 4096, "dim": 32, "hidden": 64, "dropout": 0.0}
# Pinned in full (not the tokenizer's defaults), so the committed baseline does not move when they change.
TOKENIZER = {"num_buckets": 4096, "max_len": 128, "max_chars": 2000, "word_ngrams": 2, "char_ngrams": (0, 0)}
TEACHER_CONFIG = {"num_buckets": 4096, "dim": 64, "heads": 4, "layers": 2, "ff": 128}
EPOCHS = 12
SEED = 0


class SelftestTeacher(nn.Module):
    """``ids: int64[B, L]`` → logits: embedding, a 2-layer Transformer encoder, masked mean pooling, head."""

    def __init__(
        self, num_buckets: int, dim: int, heads: int, layers: int, ff: int, num_intents: int
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_buckets, dim, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(1, 512, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, ff, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, num_intents)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids > 0
        h = self.encoder(self.embed(ids) + self.pos[:, : ids.shape[1]], src_key_padding_mask=~mask)
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1).clamp(min=1.0))


def _training_data(tok: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out emails and their first acceptable intent: the selftest models memorise the evaluation
    set on purpose, so their figures depend only on it (and the tokenizer and metrics), not on the
    training-data generator, which other work tunes. They are a fixed point for tests, not a quality claim."""
    from kdmobile.tasks.email.data import intent_ids, load_heldout

    index = {name: i for i, name in enumerate(intent_ids())}
    rows = load_heldout()
    ids = torch.from_numpy(tok.encode_batch([r["text"] for r in rows]))
    labels = torch.tensor([index[r["intents"][0]] for r in rows])
    return ids, labels


def _fit(
    model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, epochs: int, lr: float, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(ids), generator=gen)
        for s in range(0, len(ids), 64):
            b = order[s : s + 64]
            loss = nn.functional.cross_entropy(model(ids[b]), labels[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def train(
    out_dir: str | Path,
    *,
    seed: int = SEED,
    epochs: int = EPOCHS,
    student_config: dict[str, Any] | None = None,
    with_teacher: bool = True,
) -> dict[str, Path]:
    """Train the selftest student (and teacher) into ``out_dir``; deterministic for a seed on one machine.

    Returns:
        ``{"student": .../student.safetensors, "teacher": .../teacher.safetensors}`` (no teacher without
        ``with_teacher``).
    """
    from safetensors.torch import save_file

    from kdmobile.checkpoint import save_checkpoint
    from kdmobile.io import atomic_path, write_json
    from kdmobile.tasks.email.data import intent_ids
    from kdmobile.tasks.email.model import EmailStudent
    from kdmobile.tasks.email.tokenizer import HashTokenizer, TokenizerConfig

    out_dir = Path(out_dir)
    student_config = {**STUDENT_CONFIG, **(student_config or {})}
    tok_cfg = {**TOKENIZER, "num_buckets": student_config["num_buckets"]}
    tok = HashTokenizer(TokenizerConfig(**tok_cfg))
    intents = intent_ids()
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same weights on every run
    try:
        ids, labels = _training_data(tok)
        torch.manual_seed(seed)
        student = EmailStudent(**student_config, num_intents=len(intents))
        _fit(student, ids, labels, epochs=epochs, lr=1e-2, seed=seed)
        if with_teacher:
            torch.manual_seed(seed + 1)
            tcfg = {**TEACHER_CONFIG, "num_buckets": tok_cfg["num_buckets"], "num_intents": len(intents)}
            teacher = SelftestTeacher(**tcfg)
            _fit(teacher, ids, labels, epochs=epochs, lr=3e-3, seed=seed + 1)
    finally:
        torch.set_num_threads(prev)
    teacher_path = out_dir / "teacher.safetensors"
    if with_teacher:
        with atomic_path(teacher_path) as tmp:
            save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(tmp))
        write_json(
            teacher_path.with_suffix(".json"), {"architecture": "selftest-teacher", "model_config": tcfg}
        )
    student_path = save_checkpoint(
        out_dir / "student.safetensors",
        student,
        architecture="email-student",
        model_config={**student_config, "num_intents": len(intents)},
        metadata={
            "task": "email",
            "tokenizer": json.loads(tok.to_json()),
            "intents": intents,
            "teacher_checkpoint": str(teacher_path) if with_teacher else None,
            "note": "kdmobile.tasks.selftest student (for the harness's tests)",
        },
    )
    return {"student": student_path, "teacher": teacher_path} if with_teacher else {"student": student_path}


# The targets that run on Linux and the precisions the selftest exports (Core ML only converts here).
TARGETS = ("executorch", "tflite", "onnx-web")
PRECISIONS = ("fp32", "int8")


def export(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    targets: tuple[str, ...] = TARGETS,
    precisions: tuple[str, ...] = PRECISIONS,
    bundle: bool = True,
) -> Path:
    """``kdmobile export CHECKPOINT --target ... --precision ... [--bundle] -o OUT_DIR`` through the API."""
    from kdmobile.export import export_checkpoint

    export_checkpoint(
        checkpoint, out_dir, targets=list(targets), precisions=list(precisions), bundle=bundle, n_heldout=128
    )
    return Path(out_dir)


def bench_options(**overrides: Any) -> Any:
    """The short measurement window the selftest uses (the committed baseline uses a longer one)."""
    from kdmobile.harness.bench import BenchOptions

    base: dict[str, Any] = {
        "min_runs": 200,
        "min_seconds": 1.0,
        "browser_min_seconds": 1.0,
        "browser_threads": (1, 2),
    }
    return BenchOptions(**{**base, **overrides})


def baseline_path(machine_class: str | None = None) -> Path:
    """``baselines/selftest-<machine_class>.json`` of this checkout."""
    from kdmobile.harness.machine import machine_class as mc

    return Path(__file__).resolve().parents[3] / "baselines" / f"selftest-{machine_class or mc()}.json"


def update_baseline(workdir: str | Path, out: str | Path | None = None, min_seconds: float = 3.0) -> Path:
    """Train, export and bench the selftest student with a longer window; write its committed baseline."""
    from kdmobile.harness.baseline import make_baseline
    from kdmobile.harness.bench import run_bench
    from kdmobile.io import write_json

    workdir = Path(workdir)
    paths = train(workdir)
    export(paths["student"], workdir / "export")
    opts = bench_options(min_seconds=min_seconds, browser_min_seconds=min_seconds)
    report = run_bench(workdir / "export", task="selftest", out=workdir / "report", options=opts)
    out = Path(out) if out else baseline_path()
    return write_json(
        out, make_baseline(report, source="python -m kdmobile.tasks.selftest --update-baseline")
    )


def perturb(src: str | Path, dst: str | Path, *, scale: float = 0.5, seed: int = 0) -> Path:
    """A copy of checkpoint ``src`` whose weights got Gaussian noise (``scale`` × each tensor's std)."""
    from kdmobile.checkpoint import load_checkpoint, read_metadata, save_checkpoint

    model, meta = load_checkpoint(src)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * float(p.std()) * scale)
    extra = {
        k: v
        for k, v in read_metadata(src).items()
        if k not in ("format_version", "architecture", "model_config", "sha256")
    }
    return save_checkpoint(
        dst, model, architecture=meta["architecture"], model_config=meta["model_config"], metadata=extra
    )


def write_portable_pte(checkpoint: str | Path, out: str | Path) -> Path:
    """The same student as an ExecuTorch program *without* the XNNPACK delegate (portable kernels only):
    a genuinely slower artifact of an unchanged model, for the regression tests. A sidecar beside ``out``
    gets the new file's sha256 and size (the bench refuses an artifact that does not match its sidecar)."""
    from executorch.exir import to_edge_transform_and_lower

    from kdmobile.checkpoint import load_checkpoint, read_metadata
    from kdmobile.io import atomic_path, sha256_file, write_json
    from kdmobile.tasks.email.bench import tokenizer_from_meta

    model, _ = load_checkpoint(checkpoint)
    tok = tokenizer_from_meta(read_metadata(checkpoint))
    example = (torch.from_numpy(tok.encode_batch(["Can we meet on Tuesday at 3pm?"])),)
    program = to_edge_transform_and_lower(
        torch.export.export(model, example, strict=False), partitioner=[]
    ).to_executorch()
    with atomic_path(out) as tmp:
        tmp.write_bytes(program.buffer)
    sidecar = Path(out).with_name(Path(out).name + ".json")
    if sidecar.is_file():
        meta = json.loads(sidecar.read_text())
        meta.update(sha256=sha256_file(out), size_bytes=Path(out).stat().st_size, flavour="portable-fp32")
        write_json(sidecar, meta)
    return Path(out)


def load_teacher(path: str, eval_set: EvalSet, threads: int) -> TeacherModel:
    """The stand-in Transformer teacher written by ``train`` (its config is in the JSON beside it)."""
    from safetensors.torch import load_file

    from kdmobile.harness.machine import model_flops

    cfg = json.loads(Path(path).with_suffix(".json").read_text())["model_config"]
    model = SelftestTeacher(**cfg)
    model.load_state_dict(load_file(str(path)))
    model.eval().requires_grad_(False)
    ids = torch.from_numpy(eval_set.ids)

    def trimmed(idx: list[int]) -> torch.Tensor:
        x = ids[idx]
        used = int((x != 0).sum(1).max().clamp(min=1))
        return x[:, :used]  # like a server tokenizer, pad only to the longest in the batch

    def call(idx: list[int]) -> Any:
        x = trimmed(idx)

        def run() -> Any:
            with torch.inference_mode():
                return model(x)

        return run

    def logits() -> np.ndarray:
        with torch.inference_mode():
            return np.concatenate(
                [
                    model(trimmed(list(range(s, min(s + 32, len(ids)))))).numpy()
                    for s in range(0, len(ids), 32)
                ]
            )

    return TeacherModel(
        "selftest Transformer teacher",
        str(path),
        Path(path).stat().st_size,
        call,
        logits,
        lambda idx: model_flops(model, (trimmed(idx),)),
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m kdmobile.tasks.selftest", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("workdir", nargs="?", default="build/selftest")
    ap.add_argument(
        "--update-baseline",
        action="store_true",
        help="also export, bench and write baselines/selftest-<class>.json",
    )
    args = ap.parse_args(argv)
    if args.update_baseline:
        print(update_baseline(args.workdir))
    else:
        print(json.dumps({k: str(v) for k, v in train(args.workdir).items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
