"""demo_app/wordpiece.js gives exactly the teacher's WordPiece ids and masks, in node and in Chromium.

    .venv/bin/python -m pytest tests/test_wordpiece_js.py -q

The teacher's fast tokenizer (``teacher.load_tokenizer``, all-MiniLM-L6-v2) is the spec; the config comes
from ``kdmobile.tasks.email.wordpiece.wordpiece_json`` and the JavaScript port is the code under test.
Vectors: every email the task ships (heldout_a/b/c, no_reply, act_train), generated emails, hand-made edge
cases (accents, ß, İ, emoji and other astral characters, CJK, Arabic, Hangul, controls, zero-width
characters, CRLF, words over 100 characters, truncation, added tokens such as ``[SEP]`` in the text, ...),
seeded random strings, and a sweep of the code points (each one a word of its own). Each is encoded at
``max_len`` 128 (the teacher's), the edge cases also at 8 and 512. They are written to
``build/test-artifacts/wordpiece_vectors.json`` so ``node --test tests/js/`` can be rerun by hand.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from kdmobile.errors import UsageError
from kdmobile.io import write_text
from kdmobile.tasks.email.wordpiece import wordpiece_json

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo_app"
DATA = REPO / "kdmobile" / "tasks" / "email" / "data"
ARTIFACTS = REPO / "build" / "test-artifacts"
NODE_TEST = REPO / "tests" / "js" / "wordpiece.test.mjs"
MAX_LEN = 128
EDGE_MAX_LENS = (8, 512)
N_GENERATED = 300
N_RANDOM = 200

EDGE = {
    "empty": "",
    "spaces": "     ",
    "whitespace-mix": " \t\n\r\f\v \u00a0\u3000\u2003\u2028\u0085 ",
    "accents": "Café crème à Zürich: déjà vu, naïve façade. ÉCOLE Ærø Øresund Ångström Å",
    "combining": "e\u0301cole re\u0301sume\u0301 n\u0303 a\u0308\u0301\u0323 \u0301alone",
    "german": "Straße STRASSE straße Maß \u1e9e GROẞ",
    "turkish": "İstanbul İZMİR ıi Iı DİKKAT",
    "greek": "ΣΊΣΥΦΟΣ σίσυφος ΌΣΟΣ ΑΣ ς",
    "case-odd": "ǅemal ǈ ǋ ﬁle ﬀ Ⅻ ⓐⒶ ＡＢＣ",
    "mixed-case": "HeLLo WoRLD McDonald iPhone eBay NASA's JavaScript",
    "emoji": "Thanks!! 👍🏽🎉 see you 👨\u200d👩\u200d👧 🇫🇷🇩🇪 ✔️ ❤ 🫠🥰",
    "astral": "\U0001d400\U0001d401 bold 𝒜𝓁𝓅𝒽𝒶 \U00020000\U0002a6d6 \U00010348 \U0001f600x\U0001f600",
    "astral-edges": "\U0010ffff \U000e0001x \U000f0000 \U000e0100a\U0001d165\U0001d166",
    "cjk": "会議は明日の午後3時です。よろしくお願いします！你好，世界？漢字かなカナ",
    "cjk-compat": "\uf900\uf901\ufa0e 豈更 \U0002f800",
    "hangul": "한국어 텍스트 안녕하세요 \u1100\u1161 ㄱㅏ",
    "arabic": "مرحبا بالعالم، كيف حالك؟ ١٢٣ السَّلَامُ عَلَيْكُمْ",
    "hebrew-devanagari-thai": "שָׁלוֹם नमस्ते दुनिया สวัสดีครับ",
    "fullwidth": "ＡＢＣ１２３　ｅｍａｉｌ：ｏｋ？",
    "controls": "a\x00b\x01c\x7fd\x85e\x9ff\x1bg\x08h",
    "zero-width": "a\u200bb a\u200cb a\u200db a\ufeffb \u2060x \u00adsoft\u00adhyphen",
    "bidi-and-variation": "\u202eabc\u202c \u200ex\u200f ✔\ufe0f \ufe0e",
    "replacement-char": "a\ufffdb \ufffd",
    "lone-high": "abc\ud800def",
    "lone-low": "x\udfffy z",
    "lone-high-end": "end\udbff",
    "private-and-unassigned": "\ue000\uf8ff a\u0378b \U000e01f0 \U0003134b\U00031350",
    "tabs-crlf": "Hi Sam,\r\n\r\nCan we meet\ttomorrow?\r\nThanks,\n\tAlex\r",
    "word-100": "a" * 100,
    "word-101": "a" * 101,
    "word-100-after-strip": "e\u0301" * 100,
    "word-101-accented": "é" * 100 + "e",
    "long-words": "supercalifragilisticexpialidocious " + "x" * 250 + " antidisestablishmentarianism",
    "long-url": "https://example.com/" + "/".join(f"segment{i}" for i in range(60)),
    "long-text": " ".join(f"Word{i}, again" for i in range(400)),
    "long-cjk": "会議" * 300,
    "numbers": "Meet at 3:45pm on 2024-12-31, $1,299.99 / €5 / 1.5e-3 / +44 (0)20 7123 4410 / 50% / #48213",
    "urls": "See https://Example.com/path/to?q=1&x=2#frag and http://a.b/c_d-e.html? www.test.org/~u",
    "emails": "Write to John.Doe+test@Example.co.uk or ANNA_B@mail.example.org! <t.reyes@calloway-group.com>",
    "ellipsis-quotes-dashes": "Well… “quoted” ‘single’ «guillemets» „low“ a—b a–b a‒b ― ‐ ‑ ′ ″ •",
    "apostrophes": "don't, I'm, it\u2019s 'quoted' rock\u2018n\u2019roll O'Neil's",
    "punct": "Why?? Now!!! ?!?! ... -- (ok) [x] {y} ¿qué? ¡sí! §1 ¶ @#$%^&*_+=|\\~`<>",
    "added-tokens": "a [SEP] b [CLS][MASK]x [unk] [UNK] [PAD] [[SEP]] [SEP[SEP]]",
    "added-token-lookalikes": "[SE\u200bP] [ＳＥＰ] [sep] [ SEP ] [SEP\u0301]",
    "html": "<img src=x onerror=alert(1)> <b>bold</b> &amp; &#x3C;",
    "wordpiece-splits": "unaffable tokenization preprocessing unbelievably hyperparameterisation",
    # marks NFD reorders (classes 226 > 216, 224 > 216) that survive accent stripping: JS keeps input order
    "reordered-marks": "\U0001d15e \U0001d16d\U0001d165 x\u302e\U0001d165 a\u0301\U0001d16d\u0316\U0001d165",
}


def _no_surrogates(text: str) -> str:
    """What the Python tokenizer is given: a lone surrogate (no UTF-8 for it) becomes U+FFFD, as in the JS."""
    return re.sub("[\ud800-\udfff]", "\ufffd", text)


def _random_strings(n: int, seed: int) -> dict[str, str]:
    """Seeded strings over ASCII, Latin, combining accents, punctuation, spaces, CJK, Hangul, Arabic, emoji."""
    rng = random.Random(seed)
    pools = [
        list(range(0x20, 0x7F)) * 3,
        list(range(0xC0, 0x250)),
        list(range(0x300, 0x370)),
        list(range(0x2000, 0x2070)),
        [0x09, 0x0A, 0x0D, 0x00, 0x7F, 0xA0, 0xAD, 0x3000, 0xFEFF, 0xFFFD],
        list(range(0x4E00, 0x4E40)) + list(range(0x3040, 0x30A0)),
        list(range(0xAC00, 0xAC40)) + list(range(0x1100, 0x1120)),
        list(range(0x600, 0x700)),
        list(range(0x1F600, 0x1F650)) + [0x200D, 0xFE0F, 0x1F3FD],
        list(range(0x370, 0x400)) + list(range(0x400, 0x460)),
    ]
    out = {}
    for i in range(n):
        cps = [rng.choice(rng.choice(pools)) for _ in range(rng.randint(0, 160))]
        text = "".join(map(chr, cps))
        if rng.random() < 0.2:  # sometimes an added token inside
            at = rng.randint(0, len(text))
            text = text[:at] + rng.choice(["[SEP]", "[CLS]", "[MASK]", "[UNK]", "[PAD]"]) + text[at:]
        out[f"random-{i}"] = text
    return out


def _sweep_texts() -> dict[str, str]:
    """Code points each followed by a space: all of planes 0-3 and 14, every 251st of the others."""
    cps = [
        cp
        for cp in range(0x110000)
        if not 0xD800 <= cp <= 0xDFFF and (cp >> 16 in (0, 1, 2, 3, 14) or cp % 251 == 0)
    ]
    chunk = 4096
    return {
        f"sweep-U+{cps[i]:04X}": " ".join(map(chr, cps[i : i + chunk])) for i in range(0, len(cps), chunk)
    }


def _shipped_emails() -> dict[str, str]:
    out = {}
    paths = [*sorted(DATA.glob("heldout_*.jsonl")), DATA / "no_reply.jsonl", DATA / "act_train.jsonl"]
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            row = json.loads(line) if line.strip() else {}
            if "text" in row:  # heldout_ab_acts.jsonl holds labels only
                out[f"{path.stem}/{row.get('id', n)}"] = row["text"]
    return out


def _generated_emails(n: int, seed: int) -> dict[str, str]:
    from kdmobile.tasks.email.generator import generate

    return {f"generated-{i}": e.text for i, e in enumerate(generate(n, seed=seed))}


def _python_ids(tokenizer: Any, texts: list[str], max_len: int) -> list[list[int]]:
    """The real (unpadded) ids of each text; checks that the mask is ones then zeros and the tail is padding."""
    enc = tokenizer(
        [_no_surrogates(t) for t in texts], truncation=True, max_length=max_len, padding="max_length"
    )
    out = []
    for ids, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True):
        n = sum(mask)
        assert len(ids) == max_len and mask == [1] * n + [0] * (max_len - n), "unexpected mask shape"
        assert ids[n:] == [tokenizer.pad_token_id] * (max_len - n)
        out.append(ids[:n])
    return out


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from kdmobile.tasks.email.teacher import TeacherConfig, load_tokenizer

    return load_tokenizer(TeacherConfig(max_len=MAX_LEN))


@pytest.fixture(scope="module")
def config(tokenizer) -> dict[str, Any]:
    return wordpiece_json(tokenizer)


def make_vectors(tokenizer: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Every case with its max_len and the Python ids (the padding and the mask follow from their length)."""
    groups = [
        (MAX_LEN, {**EDGE, **_shipped_emails(), **_generated_emails(N_GENERATED, seed=7)}),
        (MAX_LEN, _random_strings(N_RANDOM, seed=20240611)),
        *((n, {f"{k}@{n}": v for k, v in EDGE.items()}) for n in EDGE_MAX_LENS),
    ]
    cases = []
    for max_len, texts in groups:
        names = list(texts)
        ids = _python_ids(tokenizer, [texts[k] for k in names], max_len)
        cases += [
            {"name": k, "text": texts[k], "max_len": max_len, "ids": i}
            for k, i in zip(names, ids, strict=True)
        ]
    sweep = _sweep_texts()
    names = list(sweep)
    # long enough never to truncate: at most one id per code point, plus [CLS] and [SEP]
    width = 2 + max(len(t) for t in sweep.values())
    for k, ids in zip(names, _python_ids(tokenizer, [sweep[k] for k in names], width), strict=True):
        assert len(ids) < width, f"{k} was truncated"
        cases.append({"name": k, "text": sweep[k], "max_len": width, "ids": ids})
    return {"config": config, "cases": cases}


@pytest.fixture(scope="module")
def vectors_path(tokenizer, config, tmp_path_factory) -> Path:
    # ASCII JSON (\uXXXX escapes), so the lone surrogates of the edge cases reach node intact
    text = json.dumps(make_vectors(tokenizer, config), separators=(",", ":")) + "\n"
    path = tmp_path_factory.mktemp("wordpiece") / "wordpiece_vectors.json"
    write_text(path, text)
    write_text(ARTIFACTS / "wordpiece_vectors.json", text)  # for a manual `node --test tests/js/`
    return path


def test_config_is_read_from_the_tokenizer(tokenizer, config) -> None:
    vocab = tokenizer.get_vocab()
    assert config["type"] == "kdmobile-wordpiece" and config["version"] == 1
    assert len(config["vocab"]) == len(vocab) and all(vocab[t] == i for i, t in enumerate(config["vocab"]))
    assert (config["cls_id"], config["sep_id"], config["pad_id"], config["unk_id"]) == (
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
    )
    assert config["max_len"] == MAX_LEN and config["lowercase"] and config["strip_accents"]
    assert config["continuing_subword_prefix"] == "##" and config["max_input_chars_per_word"] == 100
    assert {t for t, _ in config["special_tokens"]} == set(tokenizer.all_special_tokens)
    chars = config["chars"]
    code_points = lambda field: {c for a, b in chars[field] for c in range(a, b + 1)}  # noqa: E731
    assert {0, 0xFFFD, 0x200B, 0x7F} <= code_points("drop") and 0x378 not in code_points("drop")
    assert {0x4E00, 0x9FFF, 0x20000} <= code_points("pad") and ord("会") in code_points("pad")
    assert {ord(c) for c in "!?.,…—“”"} <= code_points("punct") and 0x2E43 not in code_points("punct")
    assert dict(map(tuple, chars["map"]))[ord("É")] == "e"


def test_vectors_cover_every_kind_of_text(vectors_path: Path) -> None:
    cases = json.loads(vectors_path.read_text())["cases"]
    names = {c["name"] for c in cases}
    assert set(EDGE) <= names
    for prefix, at_least in [("heldout_a/", 160), ("heldout_b/", 160), ("heldout_c/", 243), ("no_reply/", 44),
                             ("generated-", N_GENERATED), ("random-", N_RANDOM), ("sweep-", 50)]:  # fmt: skip
        assert sum(n.startswith(prefix) for n in names) >= at_least, prefix
    by_name = {c["name"]: c for c in cases}
    assert len(by_name["long-text"]["ids"]) == MAX_LEN  # truncation is exercised, not assumed
    assert by_name["word-101"]["ids"] == [101, 100, 102] and 100 not in by_name["word-100"]["ids"]
    swept = sum(len(c["text"]) // 2 + 1 for c in cases if c["name"].startswith("sweep-"))
    assert swept > 300_000


def test_node_wordpiece_matches_python(vectors_path: Path, node_test) -> None:
    out = node_test(NODE_TEST, {"KDMOBILE_WORDPIECE_VECTORS": str(vectors_path)}, passed=3)
    n = len(json.loads(vectors_path.read_text())["cases"])
    assert f"# wordpiece vectors checked: {n}" in out, out[-3000:]


def test_a_tokenizer_that_is_not_bert_uncased_is_refused() -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    def make(normalizer: Any, pre: Any, model: Any = None) -> Tokenizer:
        tok = Tokenizer(model or models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
        tok.normalizer, tok.pre_tokenizer = normalizer, pre
        return tok

    bert = normalizers.BertNormalizer(lowercase=True)
    cases = [
        (object(), "not a fast"),
        (make(normalizers.BertNormalizer(lowercase=False), pre_tokenizers.BertPreTokenizer()), "cased"),
        (make(normalizers.NFKC(), pre_tokenizers.BertPreTokenizer()), "normaliser 'NFKC'"),
        (make(bert, pre_tokenizers.Whitespace()), "pre-tokeniser 'Whitespace'"),
        (make(bert, pre_tokenizers.BertPreTokenizer(), models.BPE({"a": 0}, [])), "model 'BPE'"),
        (make(bert, pre_tokenizers.BertPreTokenizer()), "no post-processor"),
    ]
    for tok, message in cases:
        with pytest.raises(UsageError, match=message):
            wordpiece_json(tok)
    with pytest.raises(UsageError, match="max_len"):
        wordpiece_json(make(bert, pre_tokenizers.BertPreTokenizer()), max_len=1)


@pytest.mark.browser
def test_browser_wordpiece_matches_python(vectors_path: Path) -> None:
    from kdmobile.harness.browser import chromium_context
    from kdmobile.serve import serving

    assert shutil.which("chromium"), "Debian chromium is needed for browser tests (`make setup` installs it)"
    data = json.loads(vectors_path.read_text())
    with serving(DEMO) as url, chromium_context() as ctx:
        page = ctx.new_page()
        page.goto(url + "/wordpiece.js")  # same origin, so the module import below is allowed
        result = page.evaluate(
            """async (data) => {
                const wp = await import('/wordpiece.js');
                const cfg = data.config;
                const bad = [];
                for (const c of data.cases) {
                    const got = wp.encode(c.text, cfg, c.max_len);
                    const n = c.ids.length;
                    const ok = got.ids.length === c.max_len
                        && got.ids.every((v, j) => v === (j < n ? c.ids[j] : cfg.pad_id))
                        && got.mask.every((v, j) => v === (j < n ? 1 : 0));
                    if (!ok) bad.push(c.name);
                }
                return {bad, checked: data.cases.length};
            }""",
            data,
        )
    assert result["checked"] == len(data["cases"])
    assert result["bad"] == [], f"browser ids differ from Python for: {result['bad'][:20]}"
