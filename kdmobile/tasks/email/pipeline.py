"""The email smart-reply pipeline behind ``make demo``: a list of stages, each a function of a context.

    kdmobile demo --workdir build --set task_args.demo.seeds=[0]
    kdmobile demo --config configs/email_quick.toml --workdir build/quick   # minutes, small data

The model's outputs are the 54 reply acts of ``data/reply_acts.json`` (what the user sends, one chip per
act) and a last ``none`` column (no reply wanted). Stages (``default_stages()``; append more, e.g. export and
bench, with ``Stage(name, fn)``):

1. ``data``: generate the labelled corpus (relabelled onto acts through the reply acts' ``migration``), the
   validation set and the unlabelled transfer set; add every act's ``when`` line and examples and the
   hand-written no-reply emails (``none``); load both held-out sets (``heldout``: heldout_a/b relabelled
   onto acts, the dev set; ``heldout_c``) and check they are disjoint from everything trained on.
2. ``teacher``: train the reply-act dual encoder (:mod:`~kdmobile.tasks.email.act_teacher`, recipe
   ``task_args.act_teacher``), or reuse ``<workdir>/email/teacher-<key>/``.
3. ``teacher_cache``: the teacher's logits over the transfer set, in the engine's teacher-output cache;
   its held-out predictions (``teacher_predictions.json``, ``heldout_eval.npz``).
4. ``distill``: the student (``task_args.student.kind``) distilled from the cached soft targets over acts +
   ``none`` and the hard labels, one run per seed; the first seed's student is saved with its abstain rule
   (:mod:`~kdmobile.tasks.email.abstain`, calibrated on the dev set + the no-reply training emails).
5. ``scratch``: the identical student on hard labels only, one run per seed (the baseline).
6. ``cache_speedup``: one distillation epoch with the teacher online vs one reading the cache.
7. ``report``: ``<workdir>/report/task.json`` and ``task.md``: both held-out sets, on the emails that want
   a reply, and the abstain rule's coverage vs precision.

Every stage records its wall time in ``ctx.timings``; outputs other engineers read are written atomically:
``<workdir>/email/student.safetensors`` (+ ``.json``), ``teacher_predictions.json``, ``heldout_eval.npz``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdmobile.errors import CheckFailed, UsageError
from kdmobile.tasks.email.data import DataConfig, normalise, transfer_texts
from kdmobile.tasks.email.teacher import TeacherConfig
from kdmobile.tasks.email.tokenizer import HashTokenizer, TokenizerConfig
from kdmobile.tasks.email.transfer import TransferConfig
from kdmobile.tasks.email.transfer import transfer_texts as tx_transfer_texts

ARCHITECTURE = "email-student"
# Words, word bigrams and character trigrams (robust to typos and unseen word forms); 768 features cover
# about 110 words, past the greeting and the first paragraphs of a long email.
STUDENT_TOKENIZER = TokenizerConfig()


@dataclass(frozen=True)
class StudentConfig:
    """The student (:class:`~kdmobile.tasks.email.model.EmailStudent`) and its tokenizer.

    Attributes:
        kind: which student (a key of :data:`STUDENT_KINDS`); ``ngram`` is the hashed n-gram student.
        dim, hidden, dropout: sizes of the model.
        gated: the learned reading gate that fades out quoted threads and signatures.
        token_dropout: training-time dropout of feature ids.
        word_vectors: initialise the embedding table from the teacher's pretrained word vectors
            (:mod:`kdmobile.tasks.email.wordvec`); the scratch baseline gets the same init.
        tokenizer: the :class:`HashTokenizer` settings (ported to JavaScript).
    """

    kind: str = "ngram"
    dim: int = 64
    hidden: int = 128
    dropout: float = 0.1
    gated: bool = True
    token_dropout: float = 0.2
    word_vectors: bool = True
    tokenizer: TokenizerConfig = STUDENT_TOKENIZER


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs besides one distillation.

    Attributes:
        seeds: student seeds (distilled and scratch each train once per seed).
        scratch_epochs: epochs of the hard-label baseline (0 = ``train.epochs``).
        speedup_rows: rows of the transfer set the online-vs-cached epoch timing runs on (0 = all).
        samples: generated sample emails listed in ``teacher_predictions.json`` for the browser demo.
        max_student_params_ratio: the student must have at most this fraction of the teacher's parameters.
    """

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    scratch_epochs: int = 0
    speedup_rows: int = 1024
    samples: int = 12
    max_student_params_ratio: float = 0.05


@dataclass(frozen=True)
class ActTeacherConfig:
    """The reply-act teacher: a recipe of :mod:`~kdmobile.tasks.email.act_teacher`, cheapened for quick runs.

    Attributes:
        recipe: ``final`` (``act_teacher.FINAL``, what ``make demo`` trains) or a name of ``act_teacher.RUNS``.
        gen, epochs, act_repeat, none_repeat: override the recipe's value (-1: keep it).
    """

    recipe: str = "final"
    gen: int = -1
    epochs: int = -1
    act_repeat: int = -1
    none_repeat: int = -1

    def resolve(self) -> Any:
        """The recipe as an ``act_teacher.RunConfig`` with the overrides applied."""
        from kdmobile.tasks.email import act_teacher as A

        if self.recipe != "final" and self.recipe not in A.RUNS:
            raise UsageError(
                f"task_args.act_teacher.recipe: {self.recipe!r} is not 'final' or one of {sorted(A.RUNS)}"
            )
        run = A.FINAL if self.recipe == "final" else A.RUNS[self.recipe]
        over = {k: v for k in ("gen", "epochs", "act_repeat", "none_repeat") if (v := getattr(self, k)) >= 0}
        return dataclasses.replace(run, **over)


@dataclass(frozen=True)
class EmailTaskConfig:
    """``task_args`` of ``configs/email.toml``.

    ``teacher`` locates the pretrained encoder (``path``; its word vectors initialise the student); the
    teacher that is trained and distilled is ``act_teacher``.
    """

    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    act_teacher: ActTeacherConfig = field(default_factory=ActTeacherConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)  # p6: extra teacher-labelled mix
    student: StudentConfig = field(default_factory=StudentConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    workdir: str = "build"
    num_threads: int = 2
    version: int = 1


def tokenizer_dict(cfg: TokenizerConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["char_ngrams"] = list(cfg.char_ngrams)
    return d


def student_model_config(task: EmailTaskConfig, num_intents: int) -> dict[str, Any]:
    s = task.student
    return {
        "num_buckets": s.tokenizer.num_buckets,
        "dim": s.dim,
        "hidden": s.hidden,
        "num_intents": num_intents,
        "dropout": s.dropout,
        "gated": s.gated,
        "token_dropout": s.token_dropout,
    }


def _ngram_student(
    task: EmailTaskConfig, num_intents: int, seed: int, init: tuple[np.ndarray, np.ndarray] | None
) -> torch.nn.Module:
    from kdmobile.tasks.email.model import EmailStudent
    from kdmobile.tasks.email.wordvec import init_embedding

    torch.manual_seed(seed)
    student = EmailStudent(**student_model_config(task, num_intents))
    if init is not None:
        init_embedding(student.embed, *init)
    return student


# Student kinds (``task_args.student.kind``): (task config, outputs, seed, word-vector init) -> a fresh model
# taking the student tokenizer's ids ``[B, L]`` and returning logits ``[B, outputs]``.
STUDENT_KINDS: dict[str, Callable[..., torch.nn.Module]] = {"ngram": _ngram_student}


def new_student(
    task: EmailTaskConfig, num_intents: int, seed: int, init: tuple[np.ndarray, np.ndarray] | None = None
) -> torch.nn.Module:
    """A fresh student for ``seed``; ``init`` = ``(rows, values)`` of :func:`wordvec.bucket_vectors`."""
    kind = task.student.kind
    if kind not in STUDENT_KINDS:
        raise UsageError(f"task_args.student.kind: {kind!r} is not one of {sorted(STUDENT_KINDS)}")
    return STUDENT_KINDS[kind](task, num_intents, seed, init)


def count_params(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# ------------------------------------------------------------------------------------------- datasets
class EmailSet:
    """Rows for the distillation engine: ``{"student": (ids,), "teacher": (tensors...), "label": int}``.

    ``label`` is -1 for unlabelled transfer rows. ``get_batch`` stacks rows without a Python loop, and
    ``fingerprint`` hashes the teacher's inputs (the cache key), so opening the cache is cheap.
    """

    def __init__(
        self, student_ids: torch.Tensor, teacher_inputs: tuple[torch.Tensor, ...], labels: torch.Tensor
    ) -> None:
        n = len(labels)
        if len(student_ids) != n or any(len(t) != n for t in teacher_inputs):
            raise ValueError("student ids, every teacher input and the labels must have the same length")
        self.student_ids, self.teacher_inputs, self.labels = student_ids, tuple(teacher_inputs), labels
        self._fp: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "student": (self.student_ids[i],),
            "teacher": tuple(t[i] for t in self.teacher_inputs),
            "label": int(self.labels[i]),
        }

    def get_batch(self, indices: list[int]) -> dict[str, Any]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {
            "student": (self.student_ids[idx],),
            "teacher": tuple(t[idx] for t in self.teacher_inputs),
            "label": self.labels[idx],
        }

    def subset(self, indices: np.ndarray | list[int] | torch.Tensor) -> EmailSet:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return EmailSet(self.student_ids[idx], tuple(t[idx] for t in self.teacher_inputs), self.labels[idx])

    def fingerprint(self) -> str:
        if self._fp is None:
            h = hashlib.sha256()
            for t in self.teacher_inputs:
                t = t.contiguous()
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._fp = h.hexdigest()
        return self._fp


def _lengths(inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    """Non-padding length of each row of the first teacher input (0 = padding), for length-sorted batches."""
    first = inputs[0]
    return (first.reshape(len(first), -1) != 0).sum(1).numpy()


@torch.no_grad()
def teacher_logits_of(teacher: Any, inputs: tuple[torch.Tensor, ...], batch_size: int = 32) -> np.ndarray:
    """Teacher logits ``[N, C]`` over its inputs, in batches of similar length, returned in input order."""
    if isinstance(teacher, torch.nn.Module):
        teacher.eval()
    n = len(inputs[0])
    order = np.argsort(_lengths(inputs), kind="stable")
    out: np.ndarray | None = None
    for s in range(0, n, batch_size):
        b = torch.as_tensor(order[s : s + batch_size])
        z = teacher(*(t[b] for t in inputs))
        z = (z.logits if hasattr(z, "logits") else z[0] if isinstance(z, tuple) else z).float().numpy()
        if out is None:
            out = np.zeros((n, z.shape[1]), dtype=np.float32)
        out[order[s : s + batch_size]] = z
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


# -------------------------------------------------------------------------------------------- context
@dataclass
class Context:
    """Everything the stages share. ``results`` ends up in ``task.json``."""

    config: Any  # kdmobile.distill.DistillConfig
    task: EmailTaskConfig
    workdir: Path
    progress: bool = True
    teacher: Any = None  # set to an nn.Module to skip fine-tuning (Python API)
    teacher_tokenize: Callable[[list[str]], tuple[torch.Tensor, ...]] | None = None
    log: Callable[[str], None] = field(default=lambda m: print(m, file=sys.stderr))
    timings: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def email_dir(self) -> Path:
        return self.workdir / "email"

    @property
    def report_dir(self) -> Path:
        return self.workdir / "report"


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context], None]
    description: str = ""


def run_stages(
    ctx: Context, stages: list[Stage], *, on_stage: Callable[[Stage, float], None] | None = None
) -> Context:
    """Run ``stages`` in order, recording each wall time in ``ctx.timings[name]`` (seconds)."""
    import resource

    cpu = ctx.results.setdefault("cpu_seconds", {})
    for st in stages:
        # Every stage starts with the configured threads (a training run may have set its own).
        torch.set_num_threads(max(1, ctx.task.num_threads))
        t0 = time.perf_counter()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        st.run(ctx)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        ctx.timings[st.name] = round(time.perf_counter() - t0, 2)
        cpu[st.name] = round(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, 2)
        if on_stage is not None:
            on_stage(st, ctx.timings[st.name])
    return ctx


# ---------------------------------------------------------------------------------------------- stages
EVAL_SETS = ("heldout", "heldout_c")  # dev (heldout_a/b relabelled onto acts) and the second held-out set


def load_eval_rows(name: str) -> list[dict[str, Any]]:
    """The hand-written emails of eval set ``name``: ``[{"id", "text", "acts", ...}]`` (``[]`` = no reply)."""
    from kdmobile.tasks.email.acts import load_heldout_ab_acts, load_heldout_c

    if name == "heldout":
        return load_heldout_ab_acts()
    if name == "heldout_c":
        return load_heldout_c()
    raise UsageError(f"unknown email eval set {name!r}: use one of {list(EVAL_SETS)}")


def act_labels(acts: dict[str, Any]) -> list[str]:
    """The model's output columns: every act id in file order, then ``none``."""
    from kdmobile.tasks.email.act_teacher import NONE

    return [a["id"] for a in acts["intents"]] + [NONE]


def act_rows(emails: list[Any], acts: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """Generated emails relabelled onto acts through the reply acts' migration table: ``(texts, targets)``.

    An email whose every intent was dropped is left out (it would teach nothing).
    """
    from kdmobile.tasks.email.act_teacher import migration_map, relabel

    mig, labels = migration_map(acts), act_labels(acts)
    col = {k: i for i, k in enumerate(labels)}
    texts, rows = [], []
    for e in emails:
        t = relabel(e.targets, mig)
        if t:
            texts.append(e.text)
            rows.append(t)
    y = np.zeros((len(texts), len(labels)), dtype=np.float32)
    for r, t in enumerate(rows):
        for k, v in t.items():
            y[r, col[k]] = v
    return texts, y


def hand_written_rows(
    acts: dict[str, Any], act_repeat: int, no_reply_repeat: int, act_train: bool = True
) -> tuple[list[str], list[int]]:
    """Labelled rows beyond the generator: every act's ``when`` and examples (the acts the old intents
    never produced), the hand-written multi-label emails of ``act_train.jsonl`` (hard label: their first act,
    or ``none``; the distilled students learn the teacher's full distribution on them), and the
    hand-written no-reply emails labelled ``none``; each repeated. ``act_train=False`` leaves out
    ``act_train.jsonl`` (the tests' quick student keeps its smaller, fixed data)."""
    from kdmobile.tasks.email.act_teacher import load_act_train, load_no_reply

    labels = act_labels(acts)
    index = {a: i for i, a in enumerate(labels)}
    texts: list[str] = []
    y: list[int] = []
    hand = load_act_train(valid=labels[:-1]) if act_train else []
    for _ in range(act_repeat):
        for i, a in enumerate(acts["intents"]):
            for x in [a["when"], *a.get("examples", [])]:
                texts.append(x)
                y.append(i)
        for x, row_acts in hand:
            texts.append(x)
            y.append(index[row_acts[0]] if row_acts else len(labels) - 1)
    for _ in range(no_reply_repeat):
        for x in load_no_reply():
            texts.append(x)
            y.append(len(labels) - 1)
    return texts, y


def _teacher_tokenize(ctx: Context, texts: list[str]) -> tuple[torch.Tensor, ...]:
    if ctx.teacher_tokenize is not None:
        out = ctx.teacher_tokenize(texts)
        return (out,) if isinstance(out, torch.Tensor) else tuple(out)
    from kdmobile.tasks.email import teacher as T

    if "teacher_tokenizer" not in ctx.state:
        ctx.state["teacher_tokenizer"] = T.load_tokenizer(ctx.task.teacher)
    return T.tokenize(ctx.state["teacher_tokenizer"], texts, ctx.task.act_teacher.resolve().max_len)


def check_disjoint(heldout: list[dict[str, Any]], **sets: list[str]) -> None:
    """Raise :class:`CheckFailed` if a held-out email equals (after normalisation) one of ``sets``."""
    keys = {normalise(r["text"]): r["id"] for r in heldout}
    for name, texts in sets.items():
        clash = sorted({keys[k] for k in map(normalise, texts) if k in keys})
        if clash:
            raise CheckFailed(
                f"held-out emails {', '.join(clash[:5])} also occur in the {name} set (after normalisation)"
            )


def stage_data(ctx: Context) -> None:
    from kdmobile.tasks.email.act_teacher import load_no_reply
    from kdmobile.tasks.email.acts import load_reply_acts
    from kdmobile.tasks.email.data import training_set, validation_set

    t, st = ctx.task, ctx.state
    acts = load_reply_acts()
    labels = act_labels(acts)
    gen_texts, gen_y = act_rows(training_set(t.data), acts)
    val_texts, val_y = act_rows(validation_set(t.data), acts)
    hand_texts, hand_y = hand_written_rows(acts, t.data.act_repeat, t.data.no_reply_repeat)
    extra = transfer_texts(t.data)
    # p6 hook: the varied transfer mix of kdmobile/tasks/email/transfer.py (task_args.transfer.n, 0 = off),
    # labelled by the teacher through the same teacher-output cache as the rest of the transfer set.
    extra += tx_transfer_texts(t.transfer)[0]
    evals = {name: load_eval_rows(name) for name in EVAL_SETS}
    no_reply = load_no_reply()
    check_disjoint(
        evals["heldout"] + evals["heldout_c"], training=gen_texts, validation=val_texts, transfer=extra,
        hand_written=hand_texts,
    )  # fmt: skip
    tok = HashTokenizer(t.student.tokenizer)
    texts = gen_texts + hand_texts + extra
    hard = [int(r.argmax()) for r in gen_y] + hand_y + [-1] * len(extra)
    from tqdm.auto import tqdm

    bar = tqdm(total=4, desc="tokenise", unit="set", disable=not ctx.progress, leave=False)
    s_ids = torch.from_numpy(tok.encode_batch(texts))
    bar.update(1)
    t_in = _teacher_tokenize(ctx, texts)
    bar.update(1)
    # Rows sorted by teacher length: the cache pass then batches emails of similar length (little padding).
    order = torch.from_numpy(np.argsort(_lengths(t_in), kind="stable"))
    st["transfer"] = EmailSet(s_ids, t_in, torch.as_tensor(hard)).subset(order)
    st["val"] = EmailSet(
        torch.from_numpy(tok.encode_batch(val_texts)),
        _teacher_tokenize(ctx, val_texts),
        torch.as_tensor([int(r.argmax()) for r in val_y]),
    )
    bar.update(1)
    col = {k: i for i, k in enumerate(labels)}
    st["evals"] = {}
    for name, rows in evals.items():
        st["evals"][name] = {
            "rows": rows,
            "ids": tok.encode_batch([r["text"] for r in rows]),
            "teacher": _teacher_tokenize(ctx, [r["text"] for r in rows]),
            "acceptable": [[col[a] for a in r["acts"]] for r in rows],
        }
    # Calibration of the abstain rule: the dev set plus the no-reply training emails (never heldout_c).
    st["no_reply"] = {"ids": tok.encode_batch(no_reply), "teacher": _teacher_tokenize(ctx, no_reply)}
    bar.update(1)
    bar.close()
    st["acts"], st["intents"], st["tokenizer"] = acts, labels, tok
    n_lab = int((st["transfer"].labels >= 0).sum())
    ctx.results["data"] = {
        "train_labelled": len(gen_texts),
        "hand_written_labelled": len(hand_texts),
        "transfer_unlabelled": len(extra),
        "transfer_total": len(texts),
        "validation": len(val_texts),
        "outputs": len(labels),
        **{name: len(rows) for name, rows in evals.items()},
        **{f"{name}_want_reply": sum(bool(r["acts"]) for r in rows) for name, rows in evals.items()},
        "no_reply_calibration": len(no_reply),
        "heldout_disjoint": True,
    }
    ctx.log(
        f"kdmobile: data: {n_lab} labelled + {len(extra)} unlabelled transfer emails over {len(labels)} outputs "
        f"(54 acts + none), held-out {len(evals['heldout'])} (dev) + {len(evals['heldout_c'])} (heldout_c)"
    )


def stage_teacher(ctx: Context) -> None:
    from kdmobile.tasks.email import teacher as T

    st, t = ctx.state, ctx.task
    if ctx.teacher is not None:
        st["teacher"] = ctx.teacher.eval()
        ctx.results["teacher_source"] = {"status": "given", "module": type(ctx.teacher).__name__}
        return
    torch.set_num_threads(max(1, t.num_threads))
    model, info = T.load_or_train_acts(t.act_teacher.resolve(), st["acts"], ctx.email_dir, log=ctx.log)
    st["teacher"] = model
    ctx.results["teacher_source"] = {
        "status": info["status"],
        "dir": info["dir"],
        "recipe": dataclasses.asdict(t.act_teacher.resolve()),
        "training": info.get("training", {}),
    }
    ctx.log(f"kdmobile: teacher {info['status']}: {info['dir']}")


def stage_word_vectors(ctx: Context) -> None:
    """The student's initial embeddings from the pretrained encoder's word vectors (cached)."""
    from kdmobile.tasks.email.wordvec import bucket_vectors, load_or_embed

    s = ctx.task.student
    if not s.word_vectors:
        ctx.state["student_init"] = None
        ctx.results["word_vectors"] = {"status": "off"}
        return
    words, vecs, info = load_or_embed(ctx.task.teacher, ctx.email_dir, progress=ctx.progress, log=ctx.log)
    rows, values = bucket_vectors(HashTokenizer(s.tokenizer), s.dim, words, vecs)
    ctx.state["student_init"] = (rows, values)
    ctx.results["word_vectors"] = {**info, "buckets": len(rows)}
    ctx.log(
        f"kdmobile: word vectors {info['status']}: {len(words)} words -> {len(rows)} of {s.tokenizer.num_buckets} buckets"
    )


def _cache_config(ctx: Context) -> Any:
    cfg = ctx.config
    cache = dataclasses.replace(
        cfg.cache, enabled=True, dir=cfg.cache.dir or str(ctx.email_dir / "teacher_cache")
    )
    return dataclasses.replace(cfg, cache=cache)


def _top3(probs: np.ndarray, intents: list[str]) -> list[dict[str, Any]]:
    """The three best acts (the ``none`` column, last, is not a suggestion)."""
    order = np.argsort(-probs[:-1], kind="stable")[:3]
    return [{"intent": intents[i], "prob": round(float(probs[i]), 6)} for i in order]


def stage_teacher_cache(ctx: Context) -> None:
    from kdmobile.distill import TeacherCache
    from kdmobile.io import atomic_path, write_json
    from kdmobile.tasks.email.generator import generate
    from kdmobile.tasks.email.metrics import softmax

    st, cfg = ctx.state, _cache_config(ctx)
    cache, info = TeacherCache.open_or_build(
        cfg.cache.dir, st["teacher"], st["transfer"], topk=cfg.cache.topk, dtype=cfg.cache.dtype,
        batch_size=cfg.cache.batch_size or 2 * cfg.train.batch_size, progress=ctx.progress, log=ctx.log,
    )  # fmt: skip
    ctx.results["teacher_cache"] = {k: info[k] for k in ("status", "seconds", "path", "bytes", "mode")}
    ctx.log(f"kdmobile: teacher cache {info['status']} in {info['seconds']:.0f}s ({len(cache)} rows)")

    intents = st["intents"]
    st["teacher_eval"] = {
        name: teacher_logits_of(st["teacher"], e["teacher"]) for name, e in st["evals"].items()
    }
    st["teacher_no_reply"] = teacher_logits_of(st["teacher"], st["no_reply"]["teacher"])
    z = st["teacher_eval"]["heldout"]
    # A few generated emails for the browser demo (never the held-out set's own texts).
    samples = [
        e.text for e in generate(ctx.task.demo.samples, seed=ctx.task.data.seed + 99) if len(e.text) < 600
    ]
    zs = (
        teacher_logits_of(st["teacher"], _teacher_tokenize(ctx, samples))
        if samples
        else np.zeros((0, len(intents)))
    )
    p, ps = softmax(z), softmax(zs)
    teacher_name = (
        "all-MiniLM-L6-v2 (reply-act dual encoder)" if ctx.teacher is None else type(ctx.teacher).__name__
    )
    entry = lambda q: {"top3": _top3(q, intents), "p_none": round(float(q[-1]), 6)}  # noqa: E731
    write_json(
        ctx.email_dir / "teacher_predictions.json",
        {
            "version": 2,
            "teacher": teacher_name,
            "intents": intents,
            "heldout": [{"id": r["id"], **entry(p[i])} for i, r in enumerate(st["evals"]["heldout"]["rows"])],
            "samples": [{"id": f"sample-{i:02d}", "text": t, **entry(ps[i])} for i, t in enumerate(samples)],
        },
    )
    dev = st["evals"]["heldout"]
    acc = np.zeros((len(dev["acceptable"]), len(intents)), dtype=bool)
    for i, ok in enumerate(dev["acceptable"]):
        acc[i, ok] = True
    with atomic_path(ctx.email_dir / "heldout_eval.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, ids=dev["ids"], teacher_logits=z.astype(np.float32), acceptable=acc)


def _student_logits(model: torch.nn.Module, ids: np.ndarray, batch_size: int = 512) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(ids), batch_size):
            out.append(model(torch.from_numpy(np.ascontiguousarray(ids[s : s + batch_size]))).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def calibration_set(
    ctx: Context, logits_of: Callable[[str], np.ndarray]
) -> tuple[np.ndarray, list[list[int]]]:
    """A model's logits and the acceptable acts of the abstain calibration emails: the dev set, then the
    no-reply training emails (``[]``). ``logits_of("heldout")`` / ``logits_of("no_reply")``."""
    dev = ctx.state["evals"]["heldout"]["acceptable"]
    z = np.concatenate([logits_of("heldout"), logits_of("no_reply")])
    return z, dev + [[] for _ in range(len(ctx.state["no_reply"]["ids"]))]


def _train_students(ctx: Context, kind: str) -> None:
    from kdmobile.distill import Distiller
    from kdmobile.tasks.email.abstain import calibrate
    from kdmobile.tasks.email.metrics import compute_acts

    st, task = ctx.state, ctx.task
    intents = st["intents"]
    mc = student_model_config(task, len(intents))
    if kind == "distilled":
        cfg, teacher, data = _cache_config(ctx), st["teacher"], st["transfer"]
    else:
        base = ctx.config
        epochs = task.demo.scratch_epochs or base.train.epochs
        cfg = dataclasses.replace(base, loss={"ce": {}}, cache=dataclasses.replace(base.cache, enabled=False))
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs))
        teacher = None
        labelled = np.nonzero(st["transfer"].labels.numpy() >= 0)[0]
        data = st["transfer"].subset(labelled)
    runs = []
    for seed in task.demo.seeds:
        c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed, progress=ctx.progress))
        student = new_student(task, len(intents), seed, st.get("student_init"))
        run_dir = ctx.email_dir / "runs" / f"{kind}-seed{seed}"
        model, history = Distiller(
            student, teacher, c, run_dir=run_dir, architecture=ARCHITECTURE, model_config=mc, log=ctx.log
        ).fit(data, st["val"], on_existing="discard")  # build/ output: a rerun replaces its own checkpoints
        last = history.epochs[-1]
        run: dict[str, Any] = {"seed": seed}
        logits = {name: _student_logits(model, e["ids"]) for name, e in st["evals"].items()}
        logits["no_reply"] = _student_logits(model, st["no_reply"]["ids"])
        for name, e in st["evals"].items():
            m = compute_acts(logits[name], e["acceptable"], st["teacher_eval"][name])
            run[name] = {k: m[k] for k in ("top1", "recall_at_3", "teacher_agreement", "kl")}
        run.update(
            val_accuracy=last.get("eval", {}).get("accuracy"),
            epochs=len(history.epochs),
            epoch_seconds=[e["seconds"] for e in history.epochs],
            run_dir=str(run_dir),
        )
        runs.append(run)
        if seed == task.demo.seeds[0]:
            st[f"{kind}_logits"] = logits
            if kind == "distilled":
                rule = calibrate(*calibration_set(ctx, logits.__getitem__))
                st["student_abstain"] = rule
                _save_student(ctx, model, mc, rule)
        ctx.log(
            f"kdmobile: {kind} seed {seed}: "
            + ", ".join(
                f"{n} top-1 {run[n]['top1']:.3f} recall@3 {run[n]['recall_at_3']:.3f}" for n in st["evals"]
            )
        )
    st[f"{kind}_runs"] = runs
    st[f"{kind}_params"] = count_params(student)


def _save_student(ctx: Context, model: torch.nn.Module, mc: dict[str, Any], abstain: dict[str, Any]) -> None:
    from kdmobile.checkpoint import save_checkpoint

    st, task = ctx.state, ctx.task
    save_checkpoint(
        ctx.email_dir / "student.safetensors",
        model,
        architecture=ARCHITECTURE,
        model_config=mc,
        metadata={
            "task": "email",
            "student_kind": task.student.kind,
            "tokenizer": tokenizer_dict(task.student.tokenizer),
            "intents": st["intents"],
            "abstain": {k: abstain[k] for k in ("score", "threshold")},
            "seed": task.demo.seeds[0],
            "teacher_checkpoint": str(
                Path(ctx.results.get("teacher_source", {}).get("dir", "")) / "teacher.safetensors"
            )
            if ctx.teacher is None
            else None,
        },
    )


def stage_distill(ctx: Context) -> None:
    _train_students(ctx, "distilled")


def stage_scratch(ctx: Context) -> None:
    _train_students(ctx, "scratch")


def stage_cache_speedup(ctx: Context) -> None:
    """One epoch over the same fixed subset, same batch size: teacher online vs teacher-output cache."""
    from kdmobile.distill import Distiller

    st, task = ctx.state, ctx.task
    data: EmailSet = st["transfer"]
    n = min(task.demo.speedup_rows or len(data), len(data))
    rows = np.sort(np.random.default_rng(task.data.seed).permutation(len(data))[:n])
    sub = data.subset(rows)
    mc = student_model_config(task, len(st["intents"]))
    seconds = {}
    for mode in ("cached", "online"):
        cfg = _cache_config(ctx)
        cache = dataclasses.replace(
            cfg.cache, enabled=mode == "cached", dir=str(ctx.email_dir / "speedup_cache")
        )
        # Both epochs run with the threads the teacher had when it filled the cache (not train.num_threads,
        # which may be 1 for the tiny student), so the online teacher is not handicapped.
        train = dataclasses.replace(
            cfg.train, epochs=1, progress=ctx.progress, num_threads=max(1, task.num_threads)
        )
        cfg = dataclasses.replace(cfg, cache=cache, train=train)
        _, history = Distiller(
            new_student(task, len(st["intents"]), 0, st.get("student_init")), st["teacher"], cfg,
            run_dir=ctx.email_dir / "runs" / f"speedup-{mode}", architecture=ARCHITECTURE, model_config=mc, log=ctx.log,
        ).fit(sub, on_existing="discard")  # fmt: skip
        seconds[mode] = history.epochs[0]["seconds"]
    ctx.results["cache_speedup"] = {
        "speedup": round(seconds["online"] / max(seconds["cached"], 1e-9), 2),
        "online_epoch_seconds": seconds["online"],
        "cached_epoch_seconds": seconds["cached"],
        "rows": n,
        "transfer_rows": len(data),
        "batch_size": ctx.config.train.batch_size,
        "note": (
            f"one distillation epoch over the same fixed random subset of {n} of the {len(data)} transfer rows, "
            "same batch size, same student, same run: teacher online vs reading the teacher-output cache "
            "(cache built beforehand, not timed)"
        ),
    }
    ctx.log(f"kdmobile: cache speedup {ctx.results['cache_speedup']['speedup']}x over {n} rows")


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def _set_report(ctx: Context, name: str, teacher_params: int) -> dict[str, Any]:
    """Teacher, students and checks of one eval set (on the emails that want a reply)."""
    from kdmobile.tasks.email.metrics import compute_acts

    st = ctx.state
    e, z = st["evals"][name], st["teacher_eval"][name]
    tm = compute_acts(z, e["acceptable"], z)
    out: dict[str, Any] = {
        "emails": len(e["rows"]),
        "want_reply": int(tm["n"]),
        "teacher": {"params": teacher_params, "top1": tm["top1"], "recall_at_3": tm["recall_at_3"],
                    "teacher_agreement": 1.0, "kl": 0.0},
    }  # fmt: skip
    for kind in ("distilled", "scratch"):
        runs = st[f"{kind}_runs"]
        entry: dict[str, Any] = {"params": st[f"{kind}_params"]}
        for k in ("top1", "recall_at_3", "teacher_agreement", "kl"):
            mean, std = _mean_std([r[name][k] for r in runs])
            entry[k], entry[f"{k}_std"] = mean, std
        entry["runs"] = [{"seed": r["seed"], **r[name]} for r in runs]
        out[kind] = entry
    d, t, sc = out["distilled"], out["teacher"], out["scratch"]
    out["checks"] = {
        "top1_ratio": d["top1"] / t["top1"] if t["top1"] else None,
        "top1_ok": d["top1"] >= 0.97 * t["top1"],
        "recall_at_3_ratio": d["recall_at_3"] / t["recall_at_3"] if t["recall_at_3"] else None,
        "recall_at_3_ok": d["recall_at_3"] >= 0.98 * t["recall_at_3"],
        "agreement_ok": d["teacher_agreement"] >= 0.70,
        "beats_scratch": d["top1"] > sc["top1"],
        # distilled beats labels-only by more than the seed spread of either
        "beats_scratch_by_std": d["top1"] - sc["top1"] > max(d["top1_std"], sc["top1_std"]),
        "teacher_top1_ok": t["top1"] >= 0.60,
        "teacher_recall_at_3_ok": t["recall_at_3"] >= 0.80,
    }
    return out


def _abstain_report(ctx: Context) -> dict[str, Any]:
    """The abstain rule of the teacher and of the shipped student (distilled, first seed), calibrated on
    the dev set + no-reply training emails, and its coverage vs precision on both held-out sets."""
    from kdmobile.tasks.email.abstain import calibrate, table
    from kdmobile.tasks.email.metrics import softmax

    st = ctx.state
    teacher = {**st["teacher_eval"], "no_reply": st["teacher_no_reply"]}
    out: dict[str, Any] = {}
    for who, logits, rule in (
        ("teacher", teacher, calibrate(*calibration_set(ctx, teacher.__getitem__))),
        ("student", st["distilled_logits"], st["student_abstain"]),
    ):
        out[who] = {
            "rule": rule,
            "sets": {n: table(softmax(logits[n]), st["evals"][n]["acceptable"], rule) for n in st["evals"]},
        }
    return out


def stage_report(ctx: Context) -> None:
    from kdmobile.io import write_json, write_text

    st = ctx.state
    teacher_params = count_params(st["teacher"])
    sets = {name: _set_report(ctx, name, teacher_params) for name in st["evals"]}
    dev = sets["heldout"]
    out: dict[str, Any] = {
        "version": 2,
        "task": "email",
        "labels": {"acts": len(st["intents"]) - 1, "none": True},
        "heldout": dev["want_reply"],
        "seeds": list(ctx.task.demo.seeds),
        # The dev set's figures at the top level, as before; every set's under "sets".
        "teacher": {
            "name": "all-MiniLM-L6-v2 (reply-act dual encoder)"
            if ctx.teacher is None
            else type(ctx.teacher).__name__,
            **dev["teacher"],
        },
        "distilled": dev["distilled"],
        "scratch": dev["scratch"],
        "sets": sets,
        "abstain": _abstain_report(ctx),
    }
    out["cache_speedup"] = ctx.results["cache_speedup"]["speedup"]
    out["cache_speedup_detail"] = ctx.results["cache_speedup"]
    d, t = out["distilled"], out["teacher"]
    out["checks"] = {
        "params_ratio": d["params"] / t["params"],
        "params_ok": d["params"] <= t["params"] * ctx.task.demo.max_student_params_ratio,
        **dev["checks"],
        "cache_speedup_ok": out["cache_speedup"] >= 10,
    }
    out["data"] = ctx.results.get("data", {})
    out["teacher_source"] = ctx.results.get("teacher_source", {})
    out["teacher_cache"] = ctx.results.get("teacher_cache", {})
    out["word_vectors"] = ctx.results.get("word_vectors", {})
    out["timings_seconds"] = dict(ctx.timings)
    out["cpu_seconds"] = dict(ctx.results.get("cpu_seconds", {}))
    out["config"] = {
        "task_args": _jsonable(dataclasses.asdict(ctx.task)),
        "act_teacher": _jsonable(dataclasses.asdict(ctx.task.act_teacher.resolve())),
        "distill": _jsonable(dataclasses.asdict(ctx.config)),
    }
    write_json(ctx.report_dir / "task.json", out)
    write_text(ctx.report_dir / "task.md", markdown_table(out))
    ctx.results["report"] = out


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


SET_TITLES = {
    "heldout": "dev set: heldout_a/b relabelled onto acts",
    "heldout_c": "heldout_c: the second hand-written set, never used for a choice",
}


def _pct(x: float | None) -> str:
    return "-" if x is None or x != x else f"{100 * x:.1f}%"


def markdown_table(report: dict[str, Any]) -> str:
    """``task.md``: per held-out set, teacher vs students and the checks; then the abstain tables."""
    seeds = len(report.get("seeds", []))

    def cell(entry: dict[str, Any], key: str, pct: bool = True) -> str:
        v = entry.get(key)
        if v is None:
            return "-"
        std = entry.get(f"{key}_std")
        f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.3f}")
        return f(v) + (f" ± {f(std).rstrip('%')}" if std is not None else "")

    lines = [
        f"# Email smart-reply on reply acts: teacher vs students ({report['labels']['acts']} acts + none)",
        "",
        f"Students: mean ± std over {seeds} seeds. Figures on the emails that want a reply; top-1 and recall@3 "
        "count a hit when an acceptable act is the best (among the best three) acts; agreement and KL are "
        "measured against the teacher over the act columns.",
    ]
    for name, s in report["sets"].items():
        c = s["checks"]
        lines += [
            "",
            f"## {SET_TITLES.get(name, name)} ({s['want_reply']} of {s['emails']} emails want a reply)",
            "",
            "| model | params | top-1 | recall@3 | teacher agreement | KL to teacher |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for key, label in (
            ("teacher", "teacher (all-MiniLM-L6-v2 act dual encoder)"),
            ("distilled", "student, distilled"),
            ("scratch", "student, hard labels only"),
        ):
            e = s[key]
            lines.append(
                f"| {label} | {e['params']:,} | {cell(e, 'top1')} | {cell(e, 'recall_at_3')} | "
                f"{cell(e, 'teacher_agreement')} | {cell(e, 'kl', pct=False)} |"
            )
        ok = lambda f: "met" if f else "NOT met"  # noqa: E731
        lines += [
            "",
            f"Retention: top-1 {c['top1_ratio']:.3f} of the teacher's (>= 0.97: {ok(c['top1_ok'])}), recall@3 "
            f"{c['recall_at_3_ratio']:.3f} (>= 0.98: {ok(c['recall_at_3_ok'])}); agreement >= 70%: "
            f"{ok(c['agreement_ok'])}; distilled beats labels-only by more than the seed std: "
            f"{ok(c['beats_scratch_by_std'])}; teacher >= 60% top-1 / 80% recall@3: "
            f"{ok(c['teacher_top1_ok'])} / {ok(c['teacher_recall_at_3_ok'])}.",
        ]
    lines += [
        "",
        "## Abstain: no suggestion when the email wants no reply",
        "",
        "Each rule is calibrated on the dev set + the hand-written no-reply training emails only (the score "
        "with the larger AUC, then the threshold that best separates the two while keeping at least "
        "90% of the dev emails that want a reply); heldout_c is reported, never used. Coverage: emails that "
        "want a reply that still get suggestions; no-reply shown: no-reply emails that still get "
        "suggestions; precision: shown emails whose top act is acceptable (a shown no-reply email counts "
        "as wrong).",
    ]
    for who, a in report["abstain"].items():
        r = a["rule"]
        auc = ", ".join(f"{k} {v:.3f}" for k, v in r["auc"].items())
        lines += [
            "",
            f"**{who}**: abstain when {_rule_text(r)} (calibration AUC {auc}).",
            "",
            "| rule | set | coverage | no-reply shown | shown | precision | precision, always shown |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for name, rows in a["sets"].items():
            for row in rows:
                lines.append(
                    f"| {_rule_text(row)}{' (chosen)' if row.get('chosen') else ''} | {name} | "
                    f"{_pct(row['coverage'])} | {_pct(row['no_reply_shown'])} | {_pct(row['shown'])} | "
                    f"{_pct(row['precision'])} | {_pct(row['precision_always'])} |"
                )
    c = report.get("cache_speedup_detail", {})
    lines += [
        "",
        f"Teacher-output cache: a distillation epoch is **{report['cache_speedup']:.1f}x** faster reading the cache "
        f"({c.get('cached_epoch_seconds', 0):.2f} s) than with the teacher online ({c.get('online_epoch_seconds', 0):.1f} s), "
        f"{c.get('rows', 0)} rows, batch {c.get('batch_size', 0)}.",
        "",
        "Stage wall times (CPU seconds of the process; on a shared machine the wall time is the noisier): "
        + ", ".join(
            f"{k} {v:.0f} s ({report.get('cpu_seconds', {}).get(k, float('nan')):.0f})"
            for k, v in report.get("timings_seconds", {}).items()
        ),
        "",
    ]
    return "\n".join(lines)


def _rule_text(rule: dict[str, Any]) -> str:
    if rule["score"] == "p_none":
        return f"p(none) >= {rule['threshold']:.3g}"
    return f"max act prob < {rule['threshold']:.3g}"


def default_stages() -> list[Stage]:
    """The email part of ``make demo``, in order."""
    return [
        Stage("data", stage_data, "generate the corpus and the transfer set, load the held-out set"),
        Stage("teacher", stage_teacher, "train the reply-act teacher on all-MiniLM-L6-v2 (cached)"),
        Stage("teacher_cache", stage_teacher_cache, "cache the teacher's outputs on the transfer set"),
        Stage(
            "word_vectors",
            stage_word_vectors,
            "pretrained word vectors for the student's embeddings (cached)",
        ),
        Stage("distill", stage_distill, "distil the student (one run per seed)"),
        Stage("scratch", stage_scratch, "train the student on hard labels only (one run per seed)"),
        Stage("cache_speedup", stage_cache_speedup, "time an epoch with the teacher online vs cached"),
        Stage("report", stage_report, "write build/report/task.json and task.md"),
    ]


def run(
    workdir: str | Path = "build",
    overrides: list[str] | None = None,
    *,
    config: str | Path | None = None,
    teacher: torch.nn.Module | None = None,
    teacher_tokenize: Callable[[list[str]], tuple[torch.Tensor, ...]] | None = None,
    stages: list[Stage] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the pipeline from Python and return the report (``task.json``'s content).

    Args:
        workdir: output root (``<workdir>/email``, ``<workdir>/report``).
        overrides: ``--set``-style overrides of ``configs/email.toml`` (e.g. ``["train.epochs=3"]``).
        config: another TOML file.
        teacher: your own teacher, an ``nn.Module`` returning logits ``[B, 48]`` in ``load_replies()``
            intent order; it is used as is (no fine-tuning). A local Hugging Face encoder folder instead
            goes in the config: ``task_args.teacher.path``.
        teacher_tokenize: texts -> the teacher's input tensors (required with ``teacher``).
        stages: the stages to run (default: :func:`default_stages`).
        progress: tqdm progress bars.

    Example::

        from kdmobile.tasks.email.pipeline import run
        report = run("build/mine", ["task_args.demo.seeds=[0]"], teacher=my_model, teacher_tokenize=my_tok)
    """
    if teacher is not None and teacher_tokenize is None:
        raise UsageError("a custom teacher needs teacher_tokenize: texts -> the teacher's input tensors")
    cfg, task = load_config(config, overrides)
    task = dataclasses.replace(task, workdir=str(workdir))
    ctx = Context(
        config=cfg,
        task=task,
        workdir=Path(workdir),
        progress=progress,
        teacher=teacher,
        teacher_tokenize=teacher_tokenize,
    )
    run_stages(ctx, stages if stages is not None else default_stages())
    return ctx.results.get("report", {})


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> tuple[Any, EmailTaskConfig]:
    """``(DistillConfig, EmailTaskConfig)`` from ``configs/email.toml`` (or ``path``) and ``--set`` overrides."""
    from kdmobile import config as C
    from kdmobile.distill import DistillConfig

    path = Path(path) if path is not None else default_config_path()
    cfg = C.load(DistillConfig, path, overrides)
    if cfg.task not in ("", "email"):
        raise UsageError(f'{path}: task = {cfg.task!r}, but the email pipeline needs task = "email"')
    task = C.build(EmailTaskConfig, dict(cfg.task_args), where="task_args")
    return cfg, task


def default_config_path() -> Path:
    here = Path(__file__).resolve()
    for p in (Path.cwd() / "configs" / "email.toml", here.parents[3] / "configs" / "email.toml"):
        if p.is_file():
            return p
    raise UsageError("configs/email.toml not found: run from the repository root or pass --config")
