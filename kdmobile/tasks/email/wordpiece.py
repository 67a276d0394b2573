"""The teacher's WordPiece tokenizer as a JSON config for the JavaScript port ``demo_app/wordpiece.js``.

    python -m kdmobile.tasks.email.wordpiece -o build/wordpiece.json   # the teacher's, max_len 128

``wordpiece_json(tokenizer)`` reads a BERT-style uncased WordPiece tokenizer (the teacher's
all-MiniLM-L6-v2 tokenizer from ``teacher.load_tokenizer``: a ``tokenizers``-backed fast tokenizer) and
returns what the JavaScript needs to give the same ids:

- ``vocab``: the WordPiece vocabulary as a list in id order; ``unk_id``, ``cls_id``, ``sep_id``,
  ``pad_id``; ``continuing_subword_prefix`` (``"##"``) and ``max_input_chars_per_word`` (longer words
  become ``[UNK]``); ``special_tokens``: the added tokens (``[CLS]``, ``[SEP]``, ``[PAD]``, ``[MASK]``,
  ``[UNK]``) with their ids, which the fast tokenizer matches verbatim in the raw text before normalising
  it (``"a [SEP] b"`` gives the id 102 in the middle).
- the normaliser's settings (``lowercase``, ``strip_accents``, ``clean_text``, ``handle_chinese_chars``),
  for the record, and ``max_len`` (the teacher's: ``[CLS]`` + at most ``max_len - 2`` pieces + ``[SEP]``,
  padded with ``pad_id``).
- ``chars``: the normaliser and pre-tokeniser **per code point**, read off the installed ``tokenizers``
  by running them over every code point once (a few seconds). The Rust library uses Unicode tables of
  its own versions, which are neither Python's ``unicodedata`` nor a browser's: its control set leaves
  unassigned code points alone (an emoji newer than its tables is a word, ``[UNK]``, not dropped), and
  its punctuation and non-spacing-mark tables predate Unicode 9 (U+2E43..U+2E4F are not punctuation to
  it; U+1734 is a mark and is stripped). Tables make the port exact in every JavaScript engine:

  - ``drop``: code points removed (NUL, U+FFFD, control and format characters, lone accents);
  - ``space``: code points that become a space (whitespace, tab, newline);
  - ``pad``: code points surrounded with spaces (CJK ideographs, each its own word);
  - ``map``: ``[code point, replacement]`` for every other code point the normaliser changes
    (lower-casing and accent stripping: ``"É"`` -> ``"e"``, ``"İ"`` -> ``"i"``, ``"ǅ"`` -> ``"ǆ"``);
  - ``split``: code points the pre-tokeniser splits on and removes (whitespace);
  - ``punct``: code points the pre-tokeniser makes a word of their own (BERT's punctuation).

  Ranges are ``[first, last]`` (inclusive), sorted. The normaliser works one code point at a time except
  for the canonical reordering of NFD, which moves combining marks that survive accent stripping (spacing
  marks such as the musical-symbol stems and Hangul tone marks, and marks newer than the library's
  tables); the JavaScript keeps input order. That cannot change an id: ``wordpiece_json`` checks that no
  such mark is in the vocabulary (a word holding one is ``[UNK]`` in any order) or splits words.

Anything that is not this shape (another model, normaliser or pre-tokeniser, a cased tokenizer, added
tokens that are normalised or strip spaces) raises ``UsageError``: the port would silently differ.
"""

from __future__ import annotations

import argparse
import json
import unicodedata
from pathlib import Path
from typing import Any

from kdmobile.errors import UsageError

CONFIG_TYPE = "kdmobile-wordpiece"
VERSION = 1
MAX_CODE_POINT = 0x10FFFF
_SENTINEL = "|"  # joins the probe string; the normaliser must leave it alone (checked)
_WORD = "x"  # surrounds the pre-tokeniser's doubtful code points (checked to be a word character)


def _backend(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` behind a transformers fast tokenizer (or the Tokenizer itself)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None and hasattr(tokenizer, "to_str") and hasattr(tokenizer, "normalizer"):
        backend = tokenizer
    if backend is None:
        raise UsageError(
            f"{type(tokenizer).__name__} is not a fast (tokenizers-backed) tokenizer: wordpiece_json reads "
            "the Rust tokenizer's settings (load it with AutoTokenizer, use_fast=True)"
        )
    return backend


def _not_supported(what: str) -> UsageError:
    return UsageError(
        f"not a BERT WordPiece uncased tokenizer: {what} (wordpiece.js ports BertNormalizer(lowercase) + "
        "BertPreTokenizer + WordPiece + [CLS] ... [SEP] only)"
    )


def _post_processor_ids(post: dict[str, Any] | None) -> tuple[int, int]:
    """``(cls_id, sep_id)`` of a ``[CLS] $A [SEP]`` post-processor."""
    if post is None:
        raise _not_supported("no post-processor adds [CLS] and [SEP]")
    if post.get("type") == "BertProcessing":
        return int(post["cls"][1]), int(post["sep"][1])
    if post.get("type") != "TemplateProcessing":
        raise _not_supported(f"post-processor {post.get('type')!r}")
    single = post.get("single") or []
    shape = [next(iter(step)) for step in single]
    if shape != ["SpecialToken", "Sequence", "SpecialToken"]:
        raise _not_supported(f"post-processor template {shape} (expected [CLS] $A [SEP])")
    ids = []
    for step in (single[0], single[2]):
        name = step["SpecialToken"]["id"]
        token_ids = post["special_tokens"][name]["ids"]
        if len(token_ids) != 1:
            raise _not_supported(f"special token {name!r} of the template has ids {token_ids}")
        ids.append(int(token_ids[0]))
    return ids[0], ids[1]


def _ranges(code_points: list[int]) -> list[list[int]]:
    """Sorted code points -> ``[[first, last], ...]``."""
    out: list[list[int]] = []
    for cp in code_points:
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def _all_code_points() -> list[int]:
    return [cp for cp in range(MAX_CODE_POINT + 1) if not 0xD800 <= cp <= 0xDFFF]


def _normalized_chars(normalizer: Any, cps: list[int]) -> dict[int, str]:
    """What the normaliser makes of each code point alone, in one call over a joined string."""
    if normalizer.normalize_str(_SENTINEL) != _SENTINEL:
        raise _not_supported(f"the normaliser changes {_SENTINEL!r}")
    probed = [cp for cp in cps if cp != ord(_SENTINEL)]
    parts = normalizer.normalize_str(_SENTINEL.join(map(chr, probed))).split(_SENTINEL)
    if len(parts) != len(probed):  # some code point normalises to something with the sentinel in it
        parts = [normalizer.normalize_str(chr(cp)) for cp in probed]
    out = dict(zip(probed, parts, strict=True))
    out[ord(_SENTINEL)] = _SENTINEL
    return out


def _pre_tokenizer_classes(pre_tokenizer: Any, cps: list[int]) -> tuple[list[int], list[int]]:
    """``(split, punct)``: the code points the pre-tokeniser removes, and those it isolates."""
    if [p for p, _ in pre_tokenizer.pre_tokenize_str(_WORD * 2)] != [_WORD * 2]:
        raise _not_supported(f"the pre-tokeniser splits {_WORD * 2!r}")

    def pieces(text: str) -> tuple[bytearray, list[int]]:
        """Which offsets of ``text`` some piece covers, and the starts of the one-code-point pieces."""
        covered, single = bytearray(len(text)), []
        for _, (start, end) in pre_tokenizer.pre_tokenize_str(text):  # offsets count code points
            covered[start:end] = b"\x01" * (end - start)
            if end - start == 1:
                single.append(start)
        return covered, single

    # All code points in a row: a removed one splits; one inside a longer piece is a word character; a
    # piece of one code point is punctuation, or a word character between two code points that are not.
    covered, single = pieces("".join(map(chr, cps)))
    split = [cp for cp, c in zip(cps, covered, strict=True) if not c]
    candidates = [cps[k] for k in single if cps[k] != ord(_WORD)]
    # Each candidate between two word characters ("x" c0 "x" c1 "x" ...: c_k at offset 2k + 1).
    _, single = pieces(_WORD + _WORD.join(map(chr, candidates)) + _WORD)
    punct = [candidates[k // 2] for k in single if k % 2 == 1]
    return split, sorted(punct)


def char_tables(backend: Any, vocab: Any = ()) -> dict[str, Any]:
    """The ``chars`` field: the normaliser and pre-tokeniser of ``backend``, code point by code point.

    With ``vocab`` (its tokens), also checks that input order is as good as NFD's canonical order: no
    combining mark that survives normalisation is in a token (a word holding one is ``[UNK]`` whatever
    the order of its marks) nor splits words.
    """
    cps = _all_code_points()
    normalized = _normalized_chars(backend.normalizer, cps)
    survivors = {ch for ch in set("".join(normalized.values())) if unicodedata.combining(ch)}
    in_vocab = survivors & set("".join(vocab))
    if in_vocab:
        marks = ", ".join(f"U+{ord(ch):04X}" for ch in sorted(in_vocab))
        raise _not_supported(f"the vocabulary holds combining marks that survive normalisation ({marks})")
    drop, space, pad, mapped = [], [], [], []
    for cp in cps:
        ch, out = chr(cp), normalized[cp]
        if out == "":
            drop.append(cp)
            continue
        if out == " ":
            space.append(cp)
            continue
        if len(out) >= 3 and out[0] == " " == out[-1]:
            pad.append(cp)
            out = out[1:-1]
        if " " in out or out == "":
            raise _not_supported(f"the normaliser turns U+{cp:04X} into {normalized[cp]!r}")
        if out != ch:
            mapped.append([cp, out])
    split, punct = _pre_tokenizer_classes(backend.pre_tokenizer, cps)
    if any(chr(cp) in survivors for cp in split + punct):
        raise _not_supported("a combining mark splits words")
    return {
        "drop": _ranges(drop),
        "space": _ranges(space),
        "pad": _ranges(pad),
        "map": mapped,
        "split": _ranges(split),
        "punct": _ranges(punct),
    }


def wordpiece_json(tokenizer: Any, max_len: int | None = None) -> dict[str, Any]:
    """The config of ``demo_app/wordpiece.js`` for ``tokenizer`` (see the module docstring).

    Args:
        tokenizer: a transformers fast tokenizer (``teacher.load_tokenizer``) or a ``tokenizers.Tokenizer``.
        max_len: ids per text, ``[CLS]`` and ``[SEP]`` included; default the teacher's (``TeacherConfig``).

    Raises:
        UsageError: the tokenizer is not a BERT WordPiece uncased tokenizer.
    """
    if max_len is None:
        from kdmobile.tasks.email.teacher import TeacherConfig

        max_len = TeacherConfig().max_len
    if not isinstance(max_len, int) or max_len < 2:
        raise UsageError(f"max_len must be an integer >= 2 ([CLS] and [SEP]), got {max_len!r}")
    backend = _backend(tokenizer)
    spec = json.loads(backend.to_str())
    norm, pre, model = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    if norm.get("type") != "BertNormalizer":
        raise _not_supported(f"normaliser {norm.get('type')!r}")
    if not norm.get("lowercase"):
        raise _not_supported("the normaliser does not lower-case (a cased tokenizer)")
    strip_accents = norm.get("strip_accents")
    if strip_accents is None:  # BertNormalizer: None follows lowercase
        strip_accents = norm["lowercase"]
    if pre.get("type") != "BertPreTokenizer":
        raise _not_supported(f"pre-tokeniser {pre.get('type')!r}")
    if model.get("type") != "WordPiece":
        raise _not_supported(f"model {model.get('type')!r}")
    vocab: dict[str, int] = model["vocab"]
    by_id = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in by_id] != list(range(len(by_id))):
        raise _not_supported("the vocabulary ids are not 0..n-1")
    unk = model.get("unk_token")
    if unk not in vocab:
        raise _not_supported(f"the unknown token {unk!r} is not in the vocabulary")
    cls_id, sep_id = _post_processor_ids(spec.get("post_processor"))

    special = []
    for added in spec.get("added_tokens") or []:
        flags = [f for f in ("single_word", "lstrip", "rstrip", "normalized") if added.get(f)]
        if flags:
            raise _not_supported(f"added token {added['content']!r} has {', '.join(flags)}")
        special.append([added["content"], int(added["id"])])

    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None and spec.get("padding"):
        pad_id = spec["padding"]["pad_id"]
    if pad_id is None:
        raise _not_supported("no padding token")
    for side in ("padding_side", "truncation_side"):
        if getattr(tokenizer, side, "right") != "right":
            raise _not_supported(f"{side} is {getattr(tokenizer, side)!r} (wordpiece.js keeps the head)")
    named = [("cls_id", cls_id), ("sep_id", sep_id), ("pad_id", pad_id), *((t, i) for t, i in special)]
    for name, i in named:
        if not 0 <= i < len(by_id):
            raise _not_supported(f"{name} {i} is outside the vocabulary")

    return {
        "type": CONFIG_TYPE,
        "version": VERSION,
        "max_len": max_len,
        "lowercase": bool(norm["lowercase"]),
        "strip_accents": bool(strip_accents),
        "clean_text": bool(norm.get("clean_text")),
        "handle_chinese_chars": bool(norm.get("handle_chinese_chars")),
        "continuing_subword_prefix": str(model["continuing_subword_prefix"]),
        "max_input_chars_per_word": int(model["max_input_chars_per_word"]),
        "unk_id": vocab[unk],
        "cls_id": cls_id,
        "sep_id": sep_id,
        "pad_id": int(pad_id),
        "special_tokens": special,
        "chars": char_tables(backend, by_id),
        "vocab": by_id,
    }


def write_wordpiece_json(dest: str | Path, tokenizer: Any, max_len: int | None = None) -> Path:
    """Write ``wordpiece_json(tokenizer, max_len)`` to ``dest`` (compact JSON, UTF-8)."""
    data = wordpiece_json(tokenizer, max_len)
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    from kdmobile.tasks.email.teacher import TeacherConfig, load_tokenizer

    ap = argparse.ArgumentParser(
        description="Write the teacher's WordPiece tokenizer for demo_app/wordpiece.js."
    )
    ap.add_argument("-o", "--out", default="build/wordpiece.json", help="where to write the JSON")
    ap.add_argument("--max-len", type=int, default=TeacherConfig().max_len, help="ids per text")
    ap.add_argument("--path", default="", help="a local Hugging Face model folder (default: the teacher's)")
    args = ap.parse_args(argv)
    tokenizer = load_tokenizer(TeacherConfig(path=args.path, max_len=max(args.max_len, 8)))
    print(write_wordpiece_json(args.out, tokenizer, args.max_len))


if __name__ == "__main__":
    main()
