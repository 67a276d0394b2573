"""Reply acts of the email task and the held-out sets labelled with them (loaders that validate).

    python -m kdmobile.tasks.email.acts   # validates the three files below and prints their sizes

- ``data/reply_acts.json``: what the user sends, grouped by semantic intent (Kannan et al. 2016, "Smart
  Reply"): ``{"version", "description", "intents": [{"id", "description", "when", "replies",
  "examples"?}], "migration": [{"old", "new", "why"}]}``. ``when`` is the kind of email the act answers;
  ``migration`` maps every intent id of ``replies.json`` to act ids, or to ``"dropped"`` with the reason.
- ``data/heldout_c.jsonl``: hand-written emails ``{"id", "text", "acts", "style", "lang"}``, written apart
  from the generator and never used to tune it; ``acts`` lists every acceptable act, ``[]`` when the email
  needs no reply (newsletters, notifications, automated mail).
- ``data/heldout_ab_acts.jsonl``: ``{"id", "acts"}`` for every email of ``heldout_a``/``heldout_b``
  (the texts stay in those files).

Texts are compared after :func:`kdmobile.tasks.email.data.normalise`: no held-out email may repeat
another held-out email or an act's example (the generator's output is checked by the tests, with
``pipeline.check_disjoint``).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from kdmobile.errors import UsageError
from kdmobile.tasks.email.data import DATA_DIR, intent_ids, load_heldout, normalise, read_jsonl

ACTS_PATH = DATA_DIR / "reply_acts.json"
HELDOUT_C_PATH = DATA_DIR / "heldout_c.jsonl"
HELDOUT_AB_ACTS_PATH = DATA_DIR / "heldout_ab_acts.jsonl"

_ID = re.compile(r"[a-z][a-z_]*[a-z]")


def _text(where: str, obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}: needs {key!r} as a non-empty string")
    return value


def _texts(where: str, obj: dict[str, Any], key: str, n: tuple[int, int]) -> list[str]:
    value = obj.get(key)
    if not isinstance(value, list) or not n[0] <= len(value) <= n[1]:
        raise UsageError(f"{where}: needs {key!r} as a list of {n[0]}-{n[1]} strings")
    for i, v in enumerate(value):
        _text(where, {f"{key}[{i}]": v}, f"{key}[{i}]")
    return list(value)


@functools.cache
def _reply_acts(path: str) -> dict[str, Any]:
    name = Path(path).name
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UsageError(f"{name}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        raise UsageError(f"{name}: needs an object with an integer 'version'")
    _text(name, data, "description")
    if not isinstance(data.get("intents"), list) or not data["intents"]:
        raise UsageError(f"{name}: needs 'intents' as a non-empty list")
    ids: set[str] = set()
    owner: dict[str, str] = {}  # normalised reply -> act id: a reply belongs to one act only
    for k, act in enumerate(data["intents"]):
        if not isinstance(act, dict):
            raise UsageError(f"{name}: intents[{k}] is not an object")
        aid = _text(f"{name}: intents[{k}]", act, "id")
        where = f"{name}: act {aid!r}"
        if not _ID.fullmatch(aid):
            raise UsageError(f"{where}: ids are lower_snake_case")
        if aid in ids:
            raise UsageError(f"{where}: duplicate act id")
        ids.add(aid)
        _text(where, act, "description")
        _text(where, act, "when")
        for reply in _texts(where, act, "replies", (1, 3)):
            key = normalise(reply)
            if key in owner:
                raise UsageError(f"{where}: reply {reply!r} is also a reply of act {owner[key]!r}")
            owner[key] = aid
        if "examples" in act:
            _texts(where, act, "examples", (1, 10))
    _check_migration(name, data.get("migration"), ids)
    return data


def _check_migration(name: str, migration: Any, ids: set[str]) -> None:
    if not isinstance(migration, list):
        raise UsageError(f"{name}: needs 'migration' as a list of {{old, new, why}}")
    old_ids = intent_ids()
    seen: set[str] = set()
    for k, m in enumerate(migration):
        where = f"{name}: migration[{k}]"
        if not isinstance(m, dict):
            raise UsageError(f"{where}: not an object")
        old = _text(where, m, "old")
        _text(where, m, "why")
        if old not in old_ids or old in seen:
            raise UsageError(f"{where}: {old!r} is not an intent of replies.json or is mapped twice")
        seen.add(old)
        new = m.get("new")
        if new != "dropped" and (not isinstance(new, list) or not new or set(new) - ids):
            raise UsageError(f"{where}: 'new' must be 'dropped' or a non-empty list of act ids, got {new!r}")
    missing = [i for i in old_ids if i not in seen]
    if missing:
        raise UsageError(f"{name}: migration misses the replies.json intents {missing}")


def load_reply_acts(path: str | Path = ACTS_PATH) -> dict[str, Any]:
    """The reply acts, validated (a copy: callers may mutate it).

    Raises:
        UsageError: a missing or malformed field, a duplicate act id, a reply shared by two acts (after
            normalisation), more than 3 replies, or a migration that misses or misnames an intent.
    """
    return json.loads(json.dumps(_reply_acts(str(path))))


def act_ids(path: str | Path = ACTS_PATH) -> list[str]:
    """Act ids in file order."""
    return [a["id"] for a in _reply_acts(str(path))["intents"]]


def _acts_of(where: str, row: dict[str, Any], valid: set[str]) -> list[str]:
    acts = row.get("acts")
    if not isinstance(acts, list) or not all(isinstance(a, str) for a in acts):
        raise UsageError(f"{where}: needs 'acts' as a list of act ids ([] = no reply needed)")
    bad = [a for a in acts if a not in valid]
    if bad:
        raise UsageError(f"{where}: unknown act ids {bad}; valid ids are in {ACTS_PATH.name}")
    if len(set(acts)) != len(acts):
        raise UsageError(f"{where}: an act is listed twice in {acts}")
    return list(acts)


def _example_texts(acts_path: str | Path) -> dict[str, str]:
    return {
        normalise(e): f"{Path(acts_path).name} (example of {a['id']!r})"
        for a in _reply_acts(str(acts_path))["intents"]
        for e in a.get("examples", [])
    }


def load_heldout_c(
    path: str | Path = HELDOUT_C_PATH, acts_path: str | Path = ACTS_PATH
) -> list[dict[str, Any]]:
    """The second hand-written held-out set: ``[{"id", "text", "acts", "style", "lang"}]``, validated.

    Raises:
        UsageError: a line that is not JSON, a missing key, an unknown act id, a duplicate id, or a text
            that repeats (after normalisation) another row, an email of heldout_a/b or an act's example.
    """
    path = Path(path)
    valid = set(act_ids(acts_path))
    taken = {normalise(r["text"]): f"{r['id']} (heldout_a/b)" for r in load_heldout()}
    taken.update(_example_texts(acts_path))
    rows: list[dict[str, Any]] = []
    ids: dict[str, str] = {}
    for where, row in read_jsonl(path):
        rid, text = _text(where, row, "id"), _text(where, row, "text")
        if rid in ids:
            raise UsageError(f"{where}: duplicate id {rid!r} (also at {ids[rid]})")
        ids[rid] = where
        acts = _acts_of(where, row, valid)
        key = normalise(text)
        if key in taken:
            raise UsageError(f"{where}: the text of {rid!r} repeats {taken[key]} after normalisation")
        taken[key] = rid
        style, lang = _text(where, row, "style"), _text(where, row, "lang")
        rows.append({"id": rid, "text": text, "acts": acts, "style": style, "lang": lang})
    if not rows:
        raise UsageError(f"{path}: no rows")
    return rows


def load_heldout_ab_acts(
    path: str | Path = HELDOUT_AB_ACTS_PATH, acts_path: str | Path = ACTS_PATH
) -> list[dict[str, Any]]:
    """The emails of heldout_a/b relabelled with reply acts: ``[{"id", "text", "acts", "style"}]``.

    The text and style come from heldout_a/b (:func:`~kdmobile.tasks.email.data.load_heldout`), in their
    order; ``path`` holds only ``{"id", "acts"}``.

    Raises:
        UsageError: a malformed line, an unknown act id, a duplicate id, an id that is not in heldout_a/b,
            or an email of heldout_a/b without a row.
    """
    path = Path(path)
    valid = set(act_ids(acts_path))
    labels: dict[str, list[str]] = {}
    for where, row in read_jsonl(path):
        rid = _text(where, row, "id")
        if rid in labels:
            raise UsageError(f"{where}: duplicate id {rid!r}")
        labels[rid] = _acts_of(where, row, valid)
    emails = load_heldout()
    unknown = sorted(set(labels) - {r["id"] for r in emails})
    missing = [r["id"] for r in emails if r["id"] not in labels]
    if unknown or missing:
        raise UsageError(
            f"{path.name}: ids not in heldout_a/b {unknown[:5]}, emails of heldout_a/b without acts "
            f"{missing[:5]}: relabel every email exactly once"
        )
    return [{"id": r["id"], "text": r["text"], "acts": labels[r["id"]], "style": r["style"]} for r in emails]


def main() -> None:
    acts = load_reply_acts()
    mig = acts["migration"]
    print(
        f"reply acts: {len(acts['intents'])} ({sum(len(a['replies']) for a in acts['intents'])} replies); "
        f"replies.json intents mapped: {sum(m['new'] != 'dropped' for m in mig)}, dropped: "
        f"{sum(m['new'] == 'dropped' for m in mig)}"
    )
    for name, rows in (("heldout_c", load_heldout_c()), ("heldout_a/b (acts)", load_heldout_ab_acts())):
        print(f"{name}: {len(rows)} emails, {sum(not r['acts'] for r in rows)} need no reply")


if __name__ == "__main__":
    main()
