// Node tests of demo_app/wordpiece.js against the ids of the teacher's tokenizer, computed in Python.
//
//   .venv/bin/python -m pytest tests/test_wordpiece_js.py    # writes the vectors, then runs this file
//   node --test tests/js/                                       # reuses build/test-artifacts/wordpiece_vectors.json
//
// The vectors (the config from kdmobile.tasks.email.wordpiece.wordpiece_json, and the ids of every
// held-out email, generated emails, edge cases, random strings and a sweep of the code points) are written
// by tests/test_wordpiece_js.py; the path comes from KDMOBILE_WORDPIECE_VECTORS, else the file that test
// last wrote.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const wp = await import(join(repo, "demo_app", "wordpiece.js"));

// A hand-made vocabulary, independent of Python: the rules themselves.
function tiny(extra = {}) {
  const vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "a", "##a", "aa", "!", "é", "x"];
  return {
    type: "kdmobile-wordpiece", version: 1, max_len: 8, lowercase: true, strip_accents: true,
    clean_text: true, handle_chinese_chars: true, continuing_subword_prefix: "##",
    max_input_chars_per_word: 9, unk_id: 1, cls_id: 2, sep_id: 3, pad_id: 0,
    special_tokens: [["[SEP]", 3], ["[SEP]]", 12]],
    chars: { drop: [[0, 0], [0xfffd, 0xfffd]], space: [[9, 10], [32, 32]], pad: [[0x4e00, 0x4e00]],
      map: [[65, "a"], [0x4e00, "x"]], split: [[32, 32]], punct: [[33, 33]] },
    vocab, ...extra,
  };
}

test("the rules on a hand-made vocabulary: longest match first, ##, [UNK], added tokens, truncation, mask", () => {
  const cfg = tiny();
  assert.deepEqual(wp.tokenize("unaffable", cfg), ["un", "##aff", "##able"]);
  assert.deepEqual(wp.tokenize("aaa", cfg), ["aa", "##a"]); // longest first, not a + ##a + ##a
  assert.deepEqual(wp.tokenize("Aa\tunx", cfg), ["aa", "[UNK]"]); // "x" cannot continue a word: all [UNK]
  assert.deepEqual(wp.tokenize("unaffable unaffablea", cfg), ["un", "##aff", "##able", "[UNK]"]); // > 9 code points
  assert.deepEqual(wp.tokenize("a!a\u0000a", cfg), ["a", "!", "aa"]); // NUL dropped: the halves join
  assert.deepEqual(wp.tokenize("a\u4e00a", cfg), ["a", "x", "a"]); // padded: a word of its own
  assert.deepEqual(wp.tokenize("a[SEP]]a[SEP]", cfg), ["a", "x", "a", "[SEP]"]); // longest added token wins
  assert.deepEqual(wp.tokenize("a\ud800a", cfg), ["aa"]); // a lone surrogate is U+FFFD, here unknown: kept
  assert.deepEqual(wp.encode("a a a a a a a", cfg), { ids: [2, 7, 7, 7, 7, 7, 7, 3], mask: new Array(8).fill(1) });
  assert.deepEqual(wp.encode("a!", cfg, 6), { ids: [2, 7, 10, 3, 0, 0], mask: [1, 1, 1, 1, 0, 0] });
  assert.deepEqual(wp.encode("", cfg, 2), { ids: [2, 3], mask: [1, 1] });
  const big = wp.encodeInt64("a", cfg, 4);
  assert.deepEqual([...big.ids], [2n, 7n, 3n, 0n]);
  assert.deepEqual([...big.mask], [1n, 1n, 1n, 0n]);
  assert.equal(wp.prepareVocab(wp.prepareVocab(cfg)), wp.prepareVocab(cfg)); // prepared once, reusable
});

test("a bad config or input is refused with a clear error", () => {
  const bad = (extra) => () => wp.encode("x", tiny(extra));
  assert.throws(() => wp.encode("x", null), /wordpiece\.json: expected a JSON object/);
  assert.throws(bad({ type: "kdmobile-hash-ngram" }), /wordpiece\.json: "type" must be "kdmobile-wordpiece"/);
  assert.throws(bad({ version: 2 }), /version 2 is not supported/);
  assert.throws(bad({ vocab: [] }), /"vocab" must be a non-empty list/);
  assert.throws(bad({ vocab: ["[PAD]", "a", "a"] }), /vocab\[2\] "a" repeats vocab\[1\]/);
  assert.throws(bad({ unk_id: 99 }), /"unk_id" must be an integer in \[0, 12\]/);
  assert.throws(bad({ max_len: 1 }), /"max_len"/);
  assert.throws(bad({ chars: undefined }), /"chars" .* is missing/);
  assert.throws(bad({ chars: { ...tiny().chars, punct: [[40, 41], [41, 45]] } }), /sorted, disjoint/);
  assert.throws(bad({ chars: { ...tiny().chars, map: [[65, ""]] } }), /"chars.map"/);
  assert.throws(bad({ special_tokens: [["[SEP]", 40]] }), /"special_tokens"/);
  assert.throws(() => wp.encode("x", tiny(), 1), RangeError);
  assert.throws(() => wp.encode(null, tiny()), TypeError);
});

function loadVectors() {
  const path =
    process.env.KDMOBILE_WORDPIECE_VECTORS || join(repo, "build", "test-artifacts", "wordpiece_vectors.json");
  if (!existsSync(path)) {
    throw new Error(`no wordpiece vectors at ${path}: run '.venv/bin/python -m pytest tests/test_wordpiece_js.py'`);
  }
  return JSON.parse(readFileSync(path, "utf8"));
}

function firstDifference(got, want) {
  for (let i = 0; i < Math.max(got.length, want.length); i++) if (got[i] !== want[i]) return i;
  return -1;
}

test("ids and masks equal Python's for every vector", () => {
  const data = loadVectors();
  const cfg = data.config;
  wp.prepareVocab(cfg);
  assert.ok(data.cases.length >= 100, "too few vectors to mean anything");
  let checked = 0;
  for (const [i, c] of data.cases.entries()) {
    // the vectors hold the real ids only: the padding and the mask follow from their length
    const want = c.ids.concat(new Array(c.max_len - c.ids.length).fill(cfg.pad_id));
    const wantMask = new Array(c.max_len).fill(0).fill(1, 0, c.ids.length);
    const got = wp.encode(c.text, cfg, c.max_len);
    const at = firstDifference(got.ids, want);
    if (at >= 0) {
      const show = (ids) => ids.slice(Math.max(0, at - 3), at + 4).map((id) => `${id}:${cfg.vocab[id]}`).join(" ");
      assert.fail(
        `ids differ: case ${i} (${c.name}), max_len ${c.max_len}, first at position ${at}\n` +
          `  text: ${JSON.stringify(c.text.length > 300 ? c.text.slice(0, 300) + "..." : c.text)}\n` +
          `  python: ${show(want)}\n  js:     ${show(got.ids)}`,
      );
    }
    const atMask = firstDifference(got.mask, wantMask);
    if (atMask >= 0) assert.fail(`masks differ: case ${i} (${c.name}), first at position ${atMask}`);
    checked++;
  }
  console.log(`# wordpiece vectors checked: ${checked}`);
});
