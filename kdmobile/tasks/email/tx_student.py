"""Reply-act students distilled on teacher-labelled transfer text, measured by agreement with the teacher.

    OMP_NUM_THREADS=1 python -m kdmobile.tasks.email.tx_student --teacher build/act_teacher/dual-lr1e-4.pt --runs base-3k,base-10k,base-30k --out build/tx_student
    OMP_NUM_THREADS=1 python -m kdmobile.tasks.email.tx_student --teacher build/act_teacher/dual-lr1e-4.pt --out build/tx_student --final small-30k

A standalone experiment next to the pipeline (issue 12, item 5). One act teacher
(:mod:`kdmobile.tasks.email.act_teacher`, a saved run) labels the transfer texts of
:mod:`kdmobile.tasks.email.transfer`, its own training rows and the dev set ``heldout_ab_acts`` once
(cached); every run then trains an :class:`~kdmobile.tasks.email.model.EmailStudent` over the 54 acts +
``none`` and is scored on the dev set only (``--final RUN`` scores one saved run once on heldout_c, which
is never used for a choice):

- ``top1`` / ``recall_at_3``: the best act / one of the best three is acceptable (emails with acts);
- ``agreement``: the student's best act equals the teacher's (all dev emails, act columns only: what the
  user sees); ``agreement_none``: the same over all 55 columns.

Targets: ``distilled`` rows carry ``(1 - alpha) * teacher + alpha * label`` on the teacher's labelled rows
and the teacher's probabilities on the transfer rows (soft cross-entropy, temperature 1: Hinton et al.
2015); ``labels`` rows are the teacher's training rows with their labels only (the baseline).

Measured on 2026-12-02 (teacher: ``act_teacher --runs dual-lr1e-4``, the recipe ``act_teacher.FINAL``
names, 22,734,337 params, dev 56.7% / 73.4%; 1 thread per run, several runs and other engineers' jobs on
the shared 2-core machine at a load of 14-18, so seconds are ~5x a quiet machine's; "train s" includes
nothing but the student's epochs; transfer = rows of the 30k mix on top of the teacher's 3,928 training
rows; dev = heldout_ab_acts, 320 emails, 312 with acts):

| run | params | transfer | dev top-1 | dev R@3 | agreement | agreement (+none) | KL | train s |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
| teacher | 22,734,337 | - | 56.7% | 73.4% | 100% | 100% | 0 | - |
| base-labels (labels only) | 1,080,503 | 0 | 42.6% | 62.5% | 28.7% | 28.1% | 1.442 | 87 |
| base-0k | 1,080,503 | 0 | 44.2% | 62.5% | 35.6% | 35.0% | 1.008 | 87 |
| base-3k | 1,080,503 | 3000 | 45.2% | 67.0% | 41.2% | 40.6% | 0.785 | 94 |
| base-10k | 1,080,503 | 10000 | 48.1% | 69.2% | 45.6% | 45.0% | 0.630 | 304 |
| base-30k | 1,080,503 | 30000 | 47.4% | 71.5% | 51.2% | 50.9% | 0.539 | 490 |
| small-labels, 3 seeds | 414,871 | 0 | 37.6 +- 2.6% | 59.2% | 29.2 +- 2.6% | - | 1.45 | 42 |
| small-0k | 414,871 | 0 | 41.3% | 65.1% | 32.2% | 32.2% | 1.049 | 42 |
| small-3k | 414,871 | 3000 | 44.9% | 69.6% | 36.9% | 36.9% | 0.823 | 88 |
| small-10k, 3 seeds | 414,871 | 10000 | 50.4 +- 1.3% | 72.1% | 44.8 +- 1.8% | - | 0.635 | 170-294 |
| small-12ep-10k | 414,871 | 10000 | 51.3% | 75.0% | 44.7% | 43.8% | 0.611 | 337 |
| small-c35-10k | 414,871 | 10000 | 49.7% | 71.8% | 47.5% | 46.2% | 0.599 | 84 |
| small-30k | 414,871 | 30000 | 48.7% | 76.0% | 47.5% | 47.5% | 0.548 | 254 |
| small-c35-30k, 3 seeds | 414,871 | 30000 | 51.5 +- 1.5% | 75.0% | 50.2 +- 1.0% | 49.4% | 0.506 | 251-264 |

(``base`` = the pipeline's n-gram student, 16384 buckets x 64; ``small`` = 8192 x 48, <= 1/50 of the
teacher; ``c35`` = character 3- to 5-grams instead of trigrams.) What the runs say: agreement grows with
the teacher-labelled transfer text, roughly +5 points per tripling (base: 35.6 -> 41.2 -> 45.6 -> 51.2%;
KL 1.01 -> 0.54), and has not levelled off at 30k; capacity buys less (1.08M vs 415k params: +1 to +4
points at equal data); longer training (12 epochs) nothing. Distillation beats labels-only far beyond the
seed std (small, 10k: 50.4 vs 37.6% top-1). No n-gram run comes near 70% agreement or 0.97 of the
teacher's top-1 (at most 0.92, one seed); recall@3 reaches the teacher's (small-30k 76.0% vs 73.4%).
heldout_c, scored once for small-c35-30k seed 0 (``--final``; its dev figures: 50.6% / 74.4% / 49.1%):
student 52.0% top-1, 68.6% recall@3, agreement 45.7%; teacher 55.4% / 77.5%.

Teacher scoring (:func:`kdmobile.tasks.email.transfer.teacher_probs`, max_len 64, 1 thread, same load):
the 30,000 transfer texts took 2,371 s (11-19 texts/s), the 3,135 distinct training rows 170 s, the 320
dev emails 38 s (long emails: 8/s).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdmobile.errors import UsageError


@dataclass(frozen=True)
class TxRun:
    """One student run.

    Attributes:
        name: file-safe name.
        targets: ``distilled`` or ``labels``.
        transfer: transfer texts (the first N of :func:`transfer.transfer_texts`); ``distilled`` only.
        num_buckets, dim, hidden, gated, token_dropout, word_ngrams, char_ngrams, max_len: the student and
            its :class:`~kdmobile.tasks.email.tokenizer.HashTokenizer`.
        word_vectors: initial embeddings from the pretrained encoder's word vectors.
        epochs, lr, batch_size, alpha, seed: training (AdamW, 3% warm-up then cosine, as configs/email.toml).
    """

    name: str
    targets: str = "distilled"
    transfer: int = 30000
    num_buckets: int = 16384
    dim: int = 64
    hidden: int = 128
    gated: bool = True
    token_dropout: float = 0.2
    word_ngrams: int = 2
    char_ngrams: tuple[int, int] = (3, 3)
    max_len: int = 768
    word_vectors: bool = True
    epochs: int = 6
    lr: float = 1e-2
    batch_size: int = 128
    alpha: float = 0.1
    seed: int = 0


# Student shapes measured (``<shape>-<transfer size>`` or ``<shape>-labels`` for the labels-only baseline).
SHAPES: dict[str, dict[str, Any]] = {
    "base": {},  # the pipeline's n-gram student: 16384 buckets x 64, hidden 128 (~1.08M params)
    "small": {"num_buckets": 8192, "dim": 48},  # <= 1/50 of the teacher
    "small-c24": {"num_buckets": 8192, "dim": 48, "char_ngrams": (2, 4)},
    "small-c35": {"num_buckets": 8192, "dim": 48, "char_ngrams": (3, 5)},
    "small-w1": {"num_buckets": 8192, "dim": 48, "word_ngrams": 1},
    "small-h256": {"num_buckets": 8192, "dim": 48, "hidden": 256},
    "small-td0": {"num_buckets": 8192, "dim": 48, "token_dropout": 0.0},
    "small-nogate": {"num_buckets": 8192, "dim": 48, "gated": False},
    "small-nowv": {"num_buckets": 8192, "dim": 48, "word_vectors": False},
    "small-12ep": {"num_buckets": 8192, "dim": 48, "epochs": 12},
    "b4k-d96": {"num_buckets": 4096, "dim": 96},
    "wide": {"dim": 128, "hidden": 256},
    "wide-12ep": {"dim": 128, "hidden": 256, "epochs": 12},
}
SIZES = {"0k": 0, "3k": 3000, "10k": 10000, "30k": 30000}


def _runs() -> dict[str, TxRun]:
    runs = []
    for shape, kw in SHAPES.items():
        for seed in (0, 1, 2):
            tail = "" if seed == 0 else f"-s{seed}"
            runs.append(TxRun(f"{shape}-labels{tail}", targets="labels", seed=seed, **kw))
            runs += [TxRun(f"{shape}-{k}{tail}", transfer=v, seed=seed, **kw) for k, v in SIZES.items()]
    return {x.name: x for x in runs}


RUNS = _runs()
MIX = 30000  # the transfer mix every run takes a prefix of


# ------------------------------------------------------------------------------------------------ data
class Corpus:
    """The teacher's labelled rows, the transfer texts and the dev set, with the teacher's probabilities."""

    def __init__(self, teacher: str | Path, out: str | Path, transfer_n: int, log: Any = None) -> None:
        from kdmobile.tasks.email.act_teacher import RUNS as TEACHER_RUNS
        from kdmobile.tasks.email.act_teacher import training_set
        from kdmobile.tasks.email.acts import load_heldout_ab_acts, load_reply_acts
        from kdmobile.tasks.email.transfer import TransferConfig, teacher_probs, transfer_texts

        self.log = log or (lambda m: print(m, file=sys.stderr))
        acts = load_reply_acts()
        self.act_ids = [a["id"] for a in acts["intents"]]
        name = Path(teacher).stem
        if name not in TEACHER_RUNS:
            raise UsageError(f"{teacher}: not a saved act-teacher run of {sorted(TEACHER_RUNS)}")
        self.train_texts, self.train_y, _ = training_set(TEACHER_RUNS[name], acts)
        # The first ``transfer_n`` texts of the 30k mix: every smaller run uses a prefix of them.
        texts, sources, self.tx_info = transfer_texts(TransferConfig(n=MIX))
        self.tx_texts, self.tx_sources = texts[:transfer_n], sources[:transfer_n]
        self.dev = load_heldout_ab_acts()
        self.timing: dict[str, Any] = {}
        cache = Path(out) / "teacher"
        uniq = sorted(set(self.train_texts))
        p_u, i1 = teacher_probs(teacher, uniq, cache, log=self.log)
        where = {t: i for i, t in enumerate(uniq)}
        self.train_p = p_u[[where[t] for t in self.train_texts]]
        self.tx_p, i2 = teacher_probs(teacher, self.tx_texts, cache, log=self.log)
        self.dev_p, i3 = teacher_probs(teacher, [r["text"] for r in self.dev], cache, log=self.log)
        self.timing = {"teacher_train_rows": i1, "teacher_transfer": i2, "teacher_dev": i3}
        self._ids: dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def encoded(self, run: TxRun) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(train ids, transfer ids, dev ids)`` int32 for ``run``'s tokenizer (memoised)."""
        from kdmobile.tasks.email.tokenizer import HashTokenizer

        cfg = tokenizer_config(run)
        if cfg not in self._ids:
            tok = HashTokenizer(cfg)
            t0 = time.perf_counter()
            enc = [
                tok.encode_batch(x).astype(np.int32)
                for x in (self.train_texts, self.tx_texts, [r["text"] for r in self.dev])
            ]
            self.log(
                f"tx_student: tokenised {sum(len(e) for e in enc)} texts in {time.perf_counter() - t0:.0f} s"
            )
            self._ids[cfg] = (enc[0], enc[1], enc[2])
        return self._ids[cfg]


def tokenizer_config(run: TxRun) -> Any:
    from kdmobile.tasks.email.tokenizer import TokenizerConfig

    return TokenizerConfig(
        num_buckets=run.num_buckets,
        max_len=run.max_len,
        word_ngrams=run.word_ngrams,
        char_ngrams=run.char_ngrams,
    )


# --------------------------------------------------------------------------------------------- training
def new_ngram_student(run: TxRun, num_classes: int, init: tuple[np.ndarray, np.ndarray] | None = None) -> Any:
    import torch

    from kdmobile.tasks.email.model import EmailStudent
    from kdmobile.tasks.email.wordvec import init_embedding

    torch.manual_seed(run.seed)
    m = EmailStudent(
        num_buckets=run.num_buckets, dim=run.dim, hidden=run.hidden, num_intents=num_classes, dropout=0.1,
        gated=run.gated, token_dropout=run.token_dropout,
    )  # fmt: skip
    if init is not None:
        init_embedding(m.embed, *init)
    return m


def fit_soft(model: Any, ids: np.ndarray, targets: np.ndarray, run: TxRun, log: Any = None) -> dict[str, Any]:
    """Train ``model`` on soft targets ``[N, C]`` (rows sum to 1) with soft cross-entropy; returns timing."""
    import math

    import torch

    torch.manual_seed(run.seed)
    rng = np.random.default_rng(run.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(ids) / run.batch_size)
    total = steps_per_epoch * run.epochs
    warm = max(1, int(0.03 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))
        ),
    )
    y = torch.as_tensor(targets, dtype=torch.float32)
    t0 = time.perf_counter()
    model.train()
    for epoch in range(run.epochs):
        order = rng.permutation(len(ids))
        loss_sum = 0.0
        for s in range(0, len(ids), run.batch_size):
            b = order[s : s + run.batch_size]
            x = torch.from_numpy(_trim(ids[b]).astype(np.int64))
            loss = -(y[b] * torch.log_softmax(model(x), -1)).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(b)
        if log is not None:
            log(
                f"tx_student: {run.name} epoch {epoch + 1}/{run.epochs} loss {loss_sum / len(ids):.4f} ({time.perf_counter() - t0:.0f} s)"
            )
    model.eval()
    return {"train_seconds": round(time.perf_counter() - t0, 1), "rows": len(ids), "epochs": run.epochs}


def _trim(ids: np.ndarray) -> np.ndarray:
    """Drop the padding columns every row of the batch has (ids are left-aligned, 0 = padding): the
    student masks padding out, so its outputs are the same, and short texts cost far less."""
    used = np.flatnonzero((ids != 0).any(0))
    return ids[:, : (used[-1] + 1 if len(used) else 1)]


def predict(model: Any, ids: np.ndarray, batch_size: int = 256) -> np.ndarray:
    import torch

    model.eval()
    with torch.inference_mode():
        return np.concatenate(
            [
                torch.softmax(model(torch.from_numpy(ids[s : s + batch_size].astype(np.int64))), -1).numpy()
                for s in range(0, len(ids), batch_size)
            ]
        )


def dev_figures(
    probs: np.ndarray, teacher: np.ndarray, rows: list[dict[str, Any]], act_ids: list[str]
) -> dict[str, Any]:
    """Top-1, recall@3 (emails with acts) and agreement with the teacher (all emails) on the dev set."""
    from kdmobile.tasks.email.act_teacher import evaluate

    res = evaluate(probs[:, :-1], 1 - probs[:, -1], [r["acts"] for r in rows], act_ids)
    return {
        "top1": res["top1"],
        "recall_at_3": res["recall_at_3"],
        "agreement": float(np.mean(probs[:, :-1].argmax(1) == teacher[:, :-1].argmax(1))),
        "agreement_none": float(np.mean(probs.argmax(1) == teacher.argmax(1))),
        "kl": float(np.mean((teacher * (np.log(teacher + 1e-9) - np.log(probs + 1e-9))).sum(1))),
    }


def word_vector_init(run: TxRun, cache_root: Path) -> tuple[np.ndarray, np.ndarray] | None:
    if not run.word_vectors:
        return None
    from kdmobile.tasks.email.teacher import TeacherConfig
    from kdmobile.tasks.email.tokenizer import HashTokenizer
    from kdmobile.tasks.email.wordvec import bucket_vectors, load_or_embed

    words, vecs, _ = load_or_embed(TeacherConfig(), cache_root, progress=False)
    return bucket_vectors(HashTokenizer(tokenizer_config(run)), run.dim, words, vecs)


def run_one(corpus: Corpus, run: TxRun, out: Path) -> dict[str, Any]:
    import torch

    from kdmobile.io import write_json

    tr_ids, tx_ids, dev_ids = corpus.encoded(run)
    lab = corpus.train_y / corpus.train_y.sum(1, keepdims=True)
    n = 0
    if run.targets == "labels":
        ids, y = tr_ids, lab
    elif run.targets == "distilled":
        n = min(run.transfer, len(tx_ids))
        ids = np.concatenate([tr_ids, tx_ids[:n]])
        y = np.concatenate([(1 - run.alpha) * corpus.train_p + run.alpha * lab, corpus.tx_p[:n]])
    else:
        raise UsageError(f"tx_student: targets must be 'distilled' or 'labels', got {run.targets!r}")
    model = new_ngram_student(run, y.shape[1], word_vector_init(run, out / "email"))
    info = fit_soft(model, ids, y, run, corpus.log)
    figs = dev_figures(predict(model, dev_ids), corpus.dev_p, corpus.dev, corpus.act_ids)
    params = int(sum(p.numel() for p in model.parameters()))
    res = {"run": dataclasses.asdict(run), "params": params, "transfer_used": n, **info, "dev": figs}
    write_json(out / "runs" / f"{run.name}.json", res)
    from kdmobile.io import atomic_path

    with atomic_path(out / "runs" / f"{run.name}.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    corpus.log(
        f"tx_student: {run.name}: {params:,} params, dev top-1 {figs['top1']:.1%} R@3 {figs['recall_at_3']:.1%} "
        f"agreement {figs['agreement']:.1%} ({info['train_seconds']:.0f} s)"
    )
    return res


def table(out: Path, teacher: dict[str, Any] | None = None) -> str:
    lines = [
        "| run | params | transfer | dev top-1 | dev R@3 | agreement (acts) | agreement (+none) | KL | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    if teacher:
        lines.append(
            f"| teacher | {teacher.get('params', 0):,} | - | {teacher['top1']:.1%} | {teacher['recall_at_3']:.1%} | 100% | 100% | 0 | - |"
        )
    for f in sorted((out / "runs").glob("*.json")):
        r = json.loads(f.read_text())
        d = r["dev"]
        tx = r["transfer_used"]
        lines.append(
            f"| {f.stem} | {r['params']:,} | {tx} | {d['top1']:.1%} | {d['recall_at_3']:.1%} | {d['agreement']:.1%} "
            f"| {d['agreement_none']:.1%} | {d['kl']:.3f} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def final(teacher: str | Path, out: Path, name: str) -> dict[str, Any]:
    """Score the saved run ``name`` once on heldout_c (the test set, never used for a choice), with the
    teacher's figures on it; written into ``<out>/runs/<name>.json``."""
    import torch

    from kdmobile.io import write_json
    from kdmobile.tasks.email.acts import load_heldout_c, load_reply_acts
    from kdmobile.tasks.email.tokenizer import HashTokenizer
    from kdmobile.tasks.email.transfer import teacher_probs

    path = out / "runs" / f"{name}.json"
    if name not in RUNS or not path.is_file() or not path.with_suffix(".pt").is_file():
        raise UsageError(f"{path}: train the run first (--runs {name})")
    res = json.loads(path.read_text())
    if "heldout_c" in res:
        raise UsageError(f"{path}: heldout_c was already scored for {name!r}; it is scored once")
    run = RUNS[name]
    rows = load_heldout_c()
    act_ids = [a["id"] for a in load_reply_acts()["intents"]]
    t_p, _ = teacher_probs(teacher, [r["text"] for r in rows], out / "teacher")
    model = new_ngram_student(run, t_p.shape[1])
    model.load_state_dict(torch.load(path.with_suffix(".pt")))
    ids = HashTokenizer(tokenizer_config(run)).encode_batch([r["text"] for r in rows]).astype(np.int32)
    res["heldout_c"] = {
        "student": dev_figures(predict(model, ids), t_p, rows, act_ids),
        "teacher": dev_figures(t_p, t_p, rows, act_ids),
    }
    write_json(path, res)
    return res["heldout_c"]


def main(argv: list[str] | None = None) -> None:
    import torch

    from kdmobile.io import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True, help="a saved act-teacher run, <dir>/<run>.pt")
    ap.add_argument("--runs", default="", help=f"comma-separated runs of {sorted(RUNS)}")
    ap.add_argument("--transfer", type=int, default=30000, help="transfer texts scored by the teacher")
    ap.add_argument("--out", default="build/tx_student")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--final", default="", help="score this saved run once on heldout_c (the test set)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.final:
        print(json.dumps(final(args.teacher, out, args.final), indent=1))
        return
    names = [n for n in args.runs.split(",") if n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise UsageError(f"tx_student: unknown runs {unknown}; known: {sorted(RUNS)}")
    corpus = Corpus(args.teacher, out, args.transfer)
    tf = dev_figures(corpus.dev_p, corpus.dev_p, corpus.dev, corpus.act_ids)
    write_json(out / "teacher.json", {"dev": tf, "timing": corpus.timing, "transfer": corpus.tx_info})
    corpus.log(
        f"tx_student: teacher dev top-1 {tf['top1']:.1%} R@3 {tf['recall_at_3']:.1%}; timing {corpus.timing}"
    )
    for n in names:
        run_one(corpus, RUNS[n], out)
    print(table(out, tf))


if __name__ == "__main__":
    main()
