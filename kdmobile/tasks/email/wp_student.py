"""Experiment: a small transformer student on the teacher's own WordPiece ids, next to the n-gram student.

    make demo                                              # the teacher, its output cache, the n-gram student
    OMP_NUM_THREADS=1 python -m kdmobile.tasks.email.wp_student --workdir build --epochs 4

Issue 12 asks for a student that follows the teacher on unseen wording (teacher agreement >= 70%). The
n-gram student of the pipeline plateaus near 50% (``tx_student``: about +5 points per tripling of the
transfer text). This module tries the other family: a 2-layer pre-norm transformer over the teacher's
WordPiece ids (``max_len`` 128, the ids the teacher saw), whose token table is the fine-tuned teacher's
word embeddings reduced by PCA to ``r`` columns (a linear map lifts them to the model width). It trains on
the pipeline's transfer set against the pipeline's **cached** teacher logits (KL at temperature ``T`` plus
``alpha`` x cross-entropy on the labelled rows), and is scored on the dev set (``heldout_eval.npz``:
the teacher's logits and the acceptable acts), like the n-gram student. Nothing here is used by the
pipeline or the demo; it reads the artifacts of a finished ``make demo`` and writes
``<workdir>/wp_student/result.json``.

It also reports the shipped n-gram student's agreement split by the teacher's margin (top act minus the
runner-up, in probability), to show how much of the gap sits on emails where the teacher itself hesitates.

Measured on 2026-12-02 (clean-clone ``make demo`` of commit fa8b769 as input; 1 thread; the machine
shared with two CPU hogs and a test run, ~160 s per epoch):

| student | params (non-embedding) | dev top-1 | dev recall@3 | agreement |
|---|---:|---:|---:|---:|
| teacher | 22,734,337 | 64.4% | 86.5% | 100% |
| n-gram student (pipeline, 3 seeds) | 1,080,503 | 56.7% | 78.5% | 48.6% |
| WordPiece transformer, d 128, r 64, 2 layers, 4 epochs | 2,250,679 (297,271) | 52.6% | 71.8% | 42.8% |

Per epoch the transformer went 35.9 -> 41.2 -> 39.4 -> 42.8% agreement while its training KL kept
falling (1.28 -> 0.41): it fits the generated transfer text and does not carry over to hand-written
mail. PCA to 64 columns keeps 42% of the embedding variance. The n-gram student's agreement by teacher
margin: 57.1% on the 71% of dev emails with margin >= 0.1, 70.2% on the 39% with margin >= 0.3, 84.5%
on the 18% with margin >= 0.5; the teacher's top act has probability <= 0.40 on half of the dev emails.
Neither student reaches the 70% goal; the next thing to try is richer targets (the teacher's pooled
sentence embedding, not only its 55 logits) on more varied transfer text.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def pca_rows(table: Any, r: int) -> tuple[Any, float]:
    """``table`` [V, D] centred and projected on its top ``r`` principal axes; and the variance share kept."""
    import torch

    centred = table.float() - table.float().mean(0)
    _, s, v = torch.pca_lowrank(centred, q=r, center=False)
    return centred @ v[:, :r], float((s[:r] ** 2).sum() / (centred**2).sum())


def build_student(init: Any, *, d: int, layers: int, heads: int, ffn: int, max_len: int, n_out: int) -> Any:
    """A pre-norm transformer over WordPiece ids (0 = padding) with masked mean pooling."""
    import torch
    from torch import nn

    class WordPieceStudent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding.from_pretrained(init.clone(), freeze=False, padding_idx=0)
            self.lift = nn.Linear(init.shape[1], d)
            self.pos = nn.Embedding(max_len, d)
            self.norm_in = nn.LayerNorm(d)
            layer = nn.TransformerEncoderLayer(
                d, heads, ffn, dropout=0.1, batch_first=True, norm_first=True, activation="gelu"
            )
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm_out = nn.LayerNorm(d)
            self.head = nn.Linear(d, n_out)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            keep = ids != 0
            x = self.lift(self.tok(ids)) + self.pos(torch.arange(ids.shape[1]))
            x = self.norm_out(self.encoder(self.norm_in(x), src_key_padding_mask=~keep))
            w = keep.unsqueeze(-1).to(x.dtype)
            return self.head((x * w).sum(1) / w.sum(1).clamp(min=1.0))

    return WordPieceStudent()


def scores(z: np.ndarray, teacher: np.ndarray, acceptable: np.ndarray) -> dict[str, float]:
    """Dev top-1 / recall@3 (emails that want a reply) and agreement with the teacher, act columns only."""
    za, ta = z[:, :-1], teacher[:, :-1]
    want = acceptable.any(1)
    best = za.argmax(1)
    top3 = np.argsort(-za, 1)[:, :3]
    return {
        "top1": float(acceptable[np.arange(len(z)), best][want].mean()),
        "recall_at_3": float(np.take_along_axis(acceptable, top3, 1).any(1)[want].mean()),
        "agreement": float((best == ta.argmax(1)).mean()),
    }


def agreement_by_margin(
    z: np.ndarray, teacher: np.ndarray, cuts=(0.0, 0.1, 0.3, 0.5)
) -> list[dict[str, float]]:
    """Agreement of ``z`` with the teacher on the emails whose teacher margin (p1 - p2, acts) is >= each cut."""
    ta = teacher[:, :-1]
    p = np.exp(ta - ta.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top2 = -np.sort(-p, 1)[:, :2]
    margin = top2[:, 0] - top2[:, 1]
    agree = z[:, :-1].argmax(1) == ta.argmax(1)
    return [{"margin_at_least": c, "share": float((margin >= c).mean()), "agreement": float(agree[margin >= c].mean())}
            for c in cuts]  # fmt: skip


def logits_of(model: Any, ids: Any, batch: int = 64) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(ids), batch):
            b = ids[i : i + batch]
            out.append(model(b[:, : max(1, int((b != 0).sum(1).max()))]))
    model.train()
    return torch.cat(out).numpy()


def load_demo(workdir: Path) -> dict[str, Any]:
    """What a finished ``make demo`` left for students to train on: the transfer rows (the teacher's
    inputs), their cached teacher logits and labels, the dev set's teacher inputs, logits and acceptable acts."""
    import dataclasses

    import torch

    from kdmobile.errors import UsageError
    from kdmobile.tasks.email import pipeline as P

    email = workdir / "email"
    cache, dev_file = email / "teacher_cache", email / "heldout_eval.npz"
    teachers = sorted(email.glob("teacher-*/teacher.safetensors"))
    if not (cache / "logits.npy").is_file() or not dev_file.is_file() or not teachers:
        raise UsageError(
            f"{email} has no finished make demo (teacher, teacher_cache/, heldout_eval.npz): run make demo first"
        )
    cfg, task = P.load_config(None, None)
    ctx = P.Context(
        config=cfg, task=dataclasses.replace(task, workdir=str(workdir)), workdir=workdir, progress=False
    )
    P.stage_data(ctx)
    transfer = ctx.state["transfer"]
    header = json.loads((cache / "header.json").read_text())
    if header["components"]["data"] != f"custom:{transfer.fingerprint()}":
        raise UsageError(
            f"{cache} was built from other transfer rows than this checkout's: run make demo again"
        )
    dev = np.load(dev_file)
    return {
        "ctx": ctx,
        "email": email,
        "teacher_path": teachers[-1],
        "inputs": transfer.teacher_inputs,
        "labels": transfer.labels,
        "target": torch.from_numpy(np.load(cache / "logits.npy")),
        "dev_inputs": tuple(torch.as_tensor(t) for t in ctx.state["evals"]["heldout"]["teacher"]),
        "t_dev": dev["teacher_logits"],
        "acceptable": dev["acceptable"],
    }


def run(workdir: Path, args: argparse.Namespace, log=print) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    from kdmobile.checkpoint import load_checkpoint
    from kdmobile.distill.losses import KDLoss
    from kdmobile.tasks.email import pipeline as P

    torch.manual_seed(args.seed)
    kd = KDLoss(temperature=args.T, alpha=args.alpha)  # the engine's Hinton et al. loss, CE on labelled rows
    demo = load_demo(workdir)
    ctx, email, teachers = demo["ctx"], demo["email"], [demo["teacher_path"]]
    ids, labels, target = demo["inputs"][0], demo["labels"], demo["target"]
    dev_ids = demo["dev_inputs"][0]
    t_dev, acceptable = demo["t_dev"], demo["acceptable"]

    init, kept = pca_rows(
        next(v for k, v in load_file(str(teachers[-1])).items() if "word_embeddings" in k), args.r
    )
    model = build_student(init, d=args.d, layers=args.layers, heads=args.heads, ffn=args.ffn,
                          max_len=ids.shape[1], n_out=target.shape[1])  # fmt: skip
    n_params = sum(p.numel() for p in model.parameters())
    log(f"wp_student: {n_params:,} params ({n_params - model.tok.weight.numel():,} outside the token table); "
        f"PCA keeps {kept:.0%} of the embedding variance; {len(ids)} transfer rows")  # fmt: skip

    order = torch.argsort((ids != 0).sum(1), stable=True)  # batches of similar length
    batches = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    steps = args.epochs * len(batches)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, s / max(1, 0.03 * steps)) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))),
    )
    history = []
    for epoch in range(args.epochs):
        t0, total = time.perf_counter(), 0.0
        for bi in torch.randperm(len(batches)).tolist():
            idx = batches[bi]
            b = ids[idx]
            z = model(b[:, : int((b != 0).sum(1).max())])
            loss = kd(z, target[idx], labels[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.item()
        row = {"epoch": epoch + 1, "loss": total / len(batches), "seconds": round(time.perf_counter() - t0, 1),
               **scores(logits_of(model, dev_ids), t_dev, acceptable)}  # fmt: skip
        history.append(row)
        log(f"wp_student: epoch {row['epoch']} loss {row['loss']:.4f} dev top-1 {row['top1']:.1%} "
            f"recall@3 {row['recall_at_3']:.1%} agreement {row['agreement']:.1%} ({row['seconds']:.0f} s)")  # fmt: skip

    ngram, _ = load_checkpoint(email.parent / "email" / "student.safetensors")
    z_ngram = P._student_logits(ngram.eval(), ctx.state["evals"]["heldout"]["ids"])
    result = {
        "settings": vars(args),
        "params": n_params,
        "pca_variance_kept": kept,
        "history": history,
        "ngram_student": scores(z_ngram, t_dev, acceptable),
        "ngram_agreement_by_teacher_margin": agreement_by_margin(z_ngram, t_dev),
    }
    from kdmobile.io import write_json

    write_json(workdir / "wp_student" / "result.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(
        prog="python -m kdmobile.tasks.email.wp_student", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--workdir", type=Path, default=Path("build"), help="the make demo workdir")
    for name, kind, default in (("d", int, 128), ("r", int, 64), ("layers", int, 2), ("heads", int, 4),
                                ("ffn", int, 256), ("epochs", int, 4), ("lr", float, 2e-3),
                                ("batch-size", int, 64), ("alpha", float, 0.1), ("T", float, 1.0),
                                ("seed", int, 0)):  # fmt: skip
        ap.add_argument(f"--{name}", type=kind, default=default)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    res = run(args.workdir, args)
    print(json.dumps({"last": res["history"][-1], "ngram": res["ngram_student"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
