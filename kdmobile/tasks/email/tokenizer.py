"""The email student's tokenizer: hashed word n-grams, small enough to port to JavaScript exactly.

    python -c "from kdmobile.tasks.email.tokenizer import HashTokenizer as T; print(T().encode('Hi! Can we meet at 3pm?'))"

The JavaScript port lives in ``demo_app/tokenizer.js`` and must give the same ids for every input; the
rules below are chosen so that it can (no Unicode tables, no locale-dependent case mapping):

1. Read at most ``max_chars`` code points. A lone surrogate becomes U+FFFD.
2. Lower-case ASCII ``A``-``Z`` only; every ASCII digit becomes ``0`` (times, dates and amounts generalise).
3. Drop apostrophes (``'`` and U+2019), so ``don't`` and ``dont`` are the same word.
4. Split into tokens: a word is a maximal run of *word code points* (ASCII letters/digits, or any code
   point >= U+0080 that is not in ``SEPARATORS``); ``?`` and ``!`` are tokens of their own; every other
   code point separates.
5. Features, in order, for each token ``t_i``: ``"w:" + t_i``; if ``word_ngrams >= 2`` and ``i > 0``,
   ``"b:" + t_{i-1} + " " + t_i``; if ``char_ngrams = (lo, hi)`` with ``lo > 0`` and ``t_i`` is a word,
   every ``"c:" + g`` for the n-grams ``g`` (``lo <= n <= hi``, in order of start then length) of
   ``"<" + t_i + ">"`` over code points, skipping the whole-word gram.
6. Each feature string is hashed with 32-bit FNV-1a over its UTF-8 bytes, salted by ``seed`` (the
   offset basis is XOR-ed with it): ``id = 1 + h % (num_buckets - 1)``. Id 0 is padding.
7. Keep the first ``max_len`` ids; pad with 0 to ``max_len``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193

# Non-ASCII code points that separate words: spaces, quotes, dashes, ellipsis, CJK/fullwidth punctuation.
SEPARATORS = frozenset(
    [0x00A0, 0x00AB, 0x00BB, 0x00BF, 0x00A1, 0x1680, 0x180E, *range(0x2000, 0x200C)]
    + [0x2010, 0x2011, 0x2012, 0x2013, 0x2014, 0x2015, 0x2018, 0x201A, 0x201B, 0x201C, 0x201D, 0x201E]
    + [0x2022, 0x2026, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0x3001, 0x3002, 0xFEFF]
    + [0xFF01, 0xFF0C, 0xFF0E, 0xFF1A, 0xFF1B, 0xFF1F]
)
APOSTROPHES = frozenset([0x27, 0x2019])
PUNCT_TOKENS = frozenset("?!")


@dataclass(frozen=True)
class TokenizerConfig:
    """Settings of :class:`HashTokenizer`; written to ``tokenizer.json`` for the JavaScript port."""

    num_buckets: int = 16384
    max_len: int = 768
    max_chars: int = 2000
    word_ngrams: int = 2
    char_ngrams: tuple[int, int] = (3, 3)
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if self.num_buckets < 2:
            raise ValueError("num_buckets must be >= 2")
        if self.max_len < 1 or self.max_chars < 1:
            raise ValueError("max_len and max_chars must be >= 1")
        if self.word_ngrams not in (1, 2):
            raise ValueError("word_ngrams must be 1 or 2")
        lo, hi = self.char_ngrams
        if lo < 0 or hi < lo:
            raise ValueError("char_ngrams must be (0, 0) or (lo, hi) with 1 <= lo <= hi")


def fnv1a(data: bytes, seed: int = 0) -> int:
    h = FNV_OFFSET ^ (seed & 0xFFFFFFFF)
    for b in data:
        h ^= b
        h = (h * FNV_PRIME) & 0xFFFFFFFF
    return h


def _is_word(cp: int) -> bool:
    if cp < 0x80:
        return 0x30 <= cp <= 0x39 or 0x61 <= cp <= 0x7A
    return cp not in SEPARATORS


def split(text: str, max_chars: int) -> list[str]:
    """Steps 1-4: the token strings of ``text``."""
    tokens: list[str] = []
    word: list[str] = []
    for ch in text[:max_chars]:
        cp = ord(ch)
        if 0xD800 <= cp <= 0xDFFF:
            cp, ch = 0xFFFD, "\ufffd"
        if cp in APOSTROPHES:
            continue
        if 0x41 <= cp <= 0x5A:
            cp, ch = cp + 32, chr(cp + 32)
        elif 0x30 <= cp <= 0x39:
            cp, ch = 0x30, "0"
        if _is_word(cp):
            word.append(ch)
            continue
        if word:
            tokens.append("".join(word))
            word = []
        if ch in PUNCT_TOKENS:
            tokens.append(ch)
    if word:
        tokens.append("".join(word))
    return tokens


class HashTokenizer:
    """Text → fixed-length int64 ids (see the module docstring for the exact rules)."""

    def __init__(self, config: TokenizerConfig | None = None) -> None:
        self.config = config or TokenizerConfig()
        # feature string -> id. A pure memo of rule 6 (the same features recur across emails), which
        # makes encoding a corpus several times faster; it changes no id.
        self._ids: dict[str, int] = {}

    def features(self, text: str) -> list[str]:
        c = self.config
        lo, hi = c.char_ngrams
        feats: list[str] = []
        tokens = split(text, c.max_chars)
        for i, t in enumerate(tokens):
            feats.append("w:" + t)
            if c.word_ngrams >= 2 and i > 0:
                feats.append("b:" + tokens[i - 1] + " " + t)
            if lo > 0 and t not in PUNCT_TOKENS:
                w = "<" + t + ">"
                for s in range(len(w)):
                    for n in range(lo, hi + 1):
                        if s + n > len(w):
                            break
                        if n == len(w):
                            continue
                        feats.append("c:" + w[s : s + n])
            if len(feats) >= c.max_len:
                break
        return feats[: c.max_len]

    def feature_id(self, feature: str) -> int:
        """Rule 6 for one feature string (memoised)."""
        i = self._ids.get(feature)
        if i is None:
            c = self.config
            i = 1 + fnv1a(feature.encode("utf-8"), c.seed) % (c.num_buckets - 1)
            if len(self._ids) < 2_000_000:
                self._ids[feature] = i
        return i

    def encode(self, text: str) -> list[int]:
        ids = [self.feature_id(f) for f in self.features(text)]
        return ids + [0] * (self.config.max_len - len(ids))

    def encode_batch(self, texts: Sequence[str] | Iterable[str]) -> np.ndarray:
        return np.asarray([self.encode(t) for t in texts], dtype=np.int64).reshape(-1, self.config.max_len)

    def to_json(self) -> str:
        d = dataclasses.asdict(self.config)
        d["char_ngrams"] = list(self.config.char_ngrams)
        d["type"] = "kdmobile-hash-ngram"
        d["separators"] = sorted(SEPARATORS)
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> HashTokenizer:
        d = json.loads(text)
        d.pop("type", None)
        d.pop("separators", None)
        d["char_ngrams"] = tuple(d.get("char_ngrams", (0, 0)))
        return cls(TokenizerConfig(**d))
