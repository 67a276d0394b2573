"""Data of the email task: reply intents, the hand-written held-out set, chatterbot lines, transfer set.

    python -m kdmobile.tasks.email.data   # prints the sizes of every set the pipeline builds

- ``replies.json``: the reply intents (ids are stable; their order is the student's logit order).
- ``data/heldout_a.jsonl``, ``data/heldout_b.jsonl``: hand-written emails, one JSON object a line
  ``{"id", "text", "intents": [acceptable intent ids], "style"}``; never used for training.
- The reply-act data (``data/reply_acts.json``, ``data/heldout_c.jsonl``, ``data/heldout_ab_acts.jsonl``) is
  loaded by ``acts.py``.
- The labelled training corpus and the unlabelled transfer set are generated here (no downloads): the
  transfer set mixes fresh generated emails, cheap augmentations of them (sentence drops and shuffles,
  mixed contexts, case changes, typos) and the English messages of the PyPI package ``chatterbot-corpus``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import random
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdmobile.errors import UsageError

HERE = Path(__file__).resolve().parent
REPLIES_PATH = HERE / "replies.json"
DATA_DIR = HERE / "data"


# ---------------------------------------------------------------------------------------------- replies
@functools.cache
def _replies(path: str) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    ids = [it["id"] for it in data["intents"]]
    if len(ids) != len(set(ids)):
        raise UsageError(f"{path}: duplicate intent ids")
    for it in data["intents"]:
        if not 1 <= len(it["replies"]) <= 3:
            raise UsageError(f"{path}: intent {it['id']!r} needs 1-3 replies, has {len(it['replies'])}")
    return data


def load_replies(path: str | Path = REPLIES_PATH) -> dict[str, Any]:
    """The reply set: ``{"version", "description", "intents": [{"id", "description", "replies"}]}``."""
    return json.loads(json.dumps(_replies(str(path))))  # a copy: callers may not mutate the cache


def intent_ids(path: str | Path = REPLIES_PATH) -> list[str]:
    """Intent ids in logit order."""
    return [it["id"] for it in _replies(str(path))["intents"]]


# ---------------------------------------------------------------------------------------- normalisation
_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Lower-case, strip punctuation (Unicode category P*), collapse whitespace: the key of disjointness."""
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.lower())
    return _WS.sub(" ", text).strip()


# -------------------------------------------------------------------------------------------- held-out
# The held-out sets labelled with replies.json intents. The reply-act sets (heldout_c.jsonl and
# heldout_ab_acts.jsonl, see acts.py) share the prefix but not the schema, so these are named, not globbed.
INTENT_HELDOUT = ("heldout_a.jsonl", "heldout_b.jsonl")


def heldout_paths(data_dir: str | Path = DATA_DIR) -> list[Path]:
    return [p for p in (Path(data_dir) / name for name in INTENT_HELDOUT) if p.is_file()]


def read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, row)`` for every non-blank line of a JSONL file, ``where`` being ``name:line``.

    Raises:
        UsageError: a line that is not a JSON object (the message names the file and line).
    """
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise UsageError(f"{where}: not a JSON object")
        yield where, row


def load_heldout(paths: list[str | Path] | None = None) -> list[dict[str, Any]]:
    """The hand-written held-out emails: ``[{"id", "text", "intents", "style"}]``, validated.

    Raises:
        UsageError: no file, a line that is not JSON, a missing key, an unknown intent id or a duplicate
            id (the message names the file and line).
    """
    files = [Path(p) for p in paths] if paths is not None else heldout_paths()
    if not files:
        raise UsageError(f"no held-out files ({', '.join(INTENT_HELDOUT)}) in {DATA_DIR}")
    valid = set(intent_ids())
    rows: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for f in files:
        for where, row in read_jsonl(f):
            for key, typ in (("id", str), ("text", str), ("intents", list)):
                if not isinstance(row.get(key), typ):
                    raise UsageError(f"{where}: needs {key!r} as {typ.__name__}")
            bad = [i for i in row["intents"] if i not in valid]
            if bad or not row["intents"]:
                raise UsageError(
                    f"{where}: unknown or missing intent ids {bad}; valid ids are in {REPLIES_PATH.name}"
                )
            if row["id"] in seen:
                raise UsageError(f"{where}: duplicate id {row['id']!r} (also in {seen[row['id']]})")
            seen[row["id"]] = where
            rows.append(
                {
                    "id": row["id"],
                    "text": row["text"],
                    "intents": list(row["intents"]),
                    "style": row.get("style", ""),
                }
            )
    return rows


# ------------------------------------------------------------------------------------------ chatterbot
def chatterbot_dir() -> Path:
    """``site-packages/chatterbot_corpus/data/english`` of the installed PyPI package."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("chatterbot-corpus is not installed: pip install --no-deps chatterbot-corpus==1.3.3")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "english"
    if not path.is_dir():
        raise UsageError(f"chatterbot-corpus has no English data at {path}")
    return path


def load_chatterbot(root: str | Path | None = None) -> list[str]:
    """Every English message of chatterbot-corpus, deduplicated, in file order.

    A conversation entry must be a list of strings; anything else (one entry of ``trivia.yml`` is a bare
    string) is skipped, as are non-string items inside a list.
    """
    import yaml

    root = Path(root) if root is not None else chatterbot_dir()
    out: dict[str, None] = {}
    for f in sorted(root.glob("*.yml")):
        data = yaml.safe_load(f.read_text(encoding="utf-8"))
        convs = data.get("conversations") if isinstance(data, dict) else None
        if not isinstance(convs, list):
            continue
        for conv in convs:
            if not isinstance(conv, list):
                continue
            for msg in conv:
                if isinstance(msg, str) and msg.strip():
                    out.setdefault(msg.strip(), None)
    return list(out)


# ------------------------------------------------------------------------------------------- the sets
@dataclass(frozen=True)
class DataConfig:
    """Sizes and seeds of the generated sets.

    Attributes:
        n_train: labelled generated emails (the training corpus).
        n_val: labelled generated emails for validation (another seed).
        n_transfer: extra unlabelled generated emails for distillation.
        n_augment: augmented copies (sentence drops/shuffles, mixes, case changes, typos).
        n_sentences: single sentences (or two in a row) cut from fresh generated emails: short, cheap for
            the teacher, and they teach the student what each phrase means on its own.
        chatterbot: add the chatterbot-corpus English messages (some wrapped in greetings/sign-offs).
        act_repeat: how often each reply act's ``when`` line and examples enter the students' labelled set.
        no_reply_repeat: how often each hand-written no-reply email enters it (labelled ``none``).
        seed: base seed; train, val and transfer use seed, seed + 1, seed + 2.
    """

    n_train: int = 20000
    n_val: int = 1000
    n_transfer: int = 8000
    n_augment: int = 6000
    n_sentences: int = 12000
    chatterbot: bool = True
    act_repeat: int = 4
    no_reply_repeat: int = 8
    seed: int = 0


def training_set(cfg: DataConfig) -> list[Any]:
    from kdmobile.tasks.email.generator import generate

    return generate(cfg.n_train, cfg.seed)


def validation_set(cfg: DataConfig) -> list[Any]:
    from kdmobile.tasks.email.generator import generate

    return generate(cfg.n_val, cfg.seed + 1)


_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.split(text) if s and s.strip()]


def augment(texts: list[str], n: int, seed: int) -> list[str]:
    """``n`` cheap augmentations of ``texts`` (deterministic for ``seed``)."""
    from kdmobile.tasks.email.generator import EmailGenerator

    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(n):
        a = _sentences(rng.choice(texts))
        op = rng.randrange(6)
        if op == 0 and len(a) > 2:  # drop sentences
            keep = sorted(rng.sample(range(len(a)), rng.randint(1, len(a) - 1)))
            s = " ".join(a[i] for i in keep)
        elif op == 1 and len(a) > 1:  # shuffle sentences
            rng.shuffle(a)
            s = " ".join(a)
        elif op == 2:  # mix with another email's sentences
            b = _sentences(rng.choice(texts))
            mix = a[: rng.randint(1, max(1, len(a)))] + b[rng.randint(0, max(0, len(b) - 1)) :]
            s = "\n".join(mix)
        elif op == 3:  # first sentences only
            s = " ".join(a[: rng.randint(1, min(3, len(a)))])
        elif op == 4:  # case changes
            s = "\n".join(a)
            s = s.lower() if rng.random() < 0.7 else s.upper()
        else:  # typos
            s = EmailGenerator._typos("\n".join(a), rng, k=rng.randint(2, 8))
        if s.strip():
            out.append(s)
    return out


def snippets(texts: list[str], n: int, seed: int) -> list[str]:
    """``n`` snippets of one or two consecutive sentences of ``texts`` (deterministic for ``seed``)."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n and texts:
        sents = [s for s in _sentences(rng.choice(texts)) if len(s) > 3]
        if not sents:
            continue
        i = rng.randrange(len(sents))
        out.append(" ".join(sents[i : i + rng.choice([1, 1, 2])]))
    return out


def wrap_chat(lines: list[str], seed: int) -> list[str]:
    """Chat lines as they would appear in email: half stay bare, half get a greeting and a sign-off."""
    from kdmobile.tasks.email.generator import GREETINGS, SIGNOFFS
    from kdmobile.tasks.email.templates import Bindings, expand

    rng = random.Random(seed)
    out = []
    for line in lines:
        if rng.random() < 0.5:
            out.append(line)
            continue
        b = Bindings(rng)
        out.append(
            f"{expand(rng.choice(GREETINGS), rng, b)}\n\n{line}\n\n{expand(rng.choice(SIGNOFFS), rng, b)}\n{expand('{me}', rng, b)}"
        )
    return out


def transfer_texts(cfg: DataConfig) -> list[str]:
    """The unlabelled part of the transfer set (generated + augmented + chatterbot)."""
    from kdmobile.tasks.email.generator import generate

    fresh = [e.text for e in generate(cfg.n_transfer, cfg.seed + 2)]
    pool = fresh + [e.text for e in generate(min(cfg.n_train, 4000), cfg.seed)]
    texts = fresh + augment(pool, cfg.n_augment, cfg.seed + 3)
    if cfg.n_sentences:
        texts += snippets(
            [e.text for e in generate(max(1, cfg.n_sentences // 3), cfg.seed + 5)],
            cfg.n_sentences,
            cfg.seed + 6,
        )
    if cfg.chatterbot:
        texts += wrap_chat(load_chatterbot(), cfg.seed + 4)
    return texts


def main() -> None:
    cfg = DataConfig()
    print(f"intents: {len(intent_ids())}")
    print(
        f"train: {len(training_set(cfg))}  val: {len(validation_set(cfg))}  transfer (unlabelled): {len(transfer_texts(cfg))}"
    )
    try:
        print(f"held-out: {len(load_heldout())}")
    except UsageError as e:
        print(f"held-out: {e}")


if __name__ == "__main__":
    main()
