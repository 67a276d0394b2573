// Node tests of demo_app/tokenizer.js against token ids computed in Python.
//
//   .venv/bin/python -m pytest tests/test_tokenizer_js.py    # writes the vectors, then runs this file
//   node --test tests/js/                                       # reuses build/test-artifacts/tokenizer_vectors.json
//
// The vectors (held-out emails, tricky strings, several tokenizer configs) are written by
// tests/test_tokenizer_js.py from kdmobile.tasks.email.tokenizer.HashTokenizer; the path comes from
// KDMOBILE_TOKENIZER_VECTORS, else the file that test last wrote.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const tok = await import(join(repo, "demo_app", "tokenizer.js"));
const utf8 = new TextEncoder();

// Published FNV-1a 32-bit test values (Fowler/Noll/Vo reference table), independent of kdmobile.
test("fnv1a matches the reference FNV-1a 32-bit values", () => {
  assert.equal(tok.fnv1a(utf8.encode("")), 0x811c9dc5);
  assert.equal(tok.fnv1a(utf8.encode("a")), 0xe40c292c);
  assert.equal(tok.fnv1a(utf8.encode("foobar")), 0xbf9cf968);
});

test("a config without separators, or of another type, is refused with a clear error", () => {
  const base = { type: "kdmobile-hash-ngram", version: 1, num_buckets: 64, max_len: 4, max_chars: 10,
    word_ngrams: 2, char_ngrams: [0, 0], seed: 0, separators: [0xa0] };
  assert.throws(() => tok.encode("x", { ...base, separators: undefined }), /separators/);
  assert.throws(() => tok.encode("x", { ...base, type: "wordpiece" }), /type/);
  assert.throws(() => tok.encode("x", { ...base, version: 2 }), /version 2/);
  assert.throws(() => tok.encode("x", { ...base, char_ngrams: [3, 2] }), /char_ngrams/);
  assert.throws(() => tok.encode(null, base), TypeError);
});

function loadVectors() {
  const path = process.env.KDMOBILE_TOKENIZER_VECTORS || join(repo, "build", "test-artifacts", "tokenizer_vectors.json");
  if (!existsSync(path)) {
    throw new Error(`no tokenizer vectors at ${path}: run '.venv/bin/python -m pytest tests/test_tokenizer_js.py'`);
  }
  return JSON.parse(readFileSync(path, "utf8"));
}

test("ids and features equal Python's for every vector and config", () => {
  const data = loadVectors();
  assert.ok(data.configs.length >= 2 && data.cases.length >= 10, "too few vectors to mean anything");
  let checked = 0;
  for (const [ci, cfg] of data.configs.entries()) {
    const config = JSON.parse(cfg.tokenizer_json);
    for (const [ti, c] of data.cases.entries()) {
      const want = cfg.expected[ti];
      const where = `config ${ci} (${cfg.name}), case ${ti} (${c.name})`;
      assert.deepEqual(tok.features(c.text, config), want.features, `features differ: ${where}`);
      assert.deepEqual(tok.encode(c.text, config), want.ids, `ids differ: ${where}`);
      checked++;
    }
  }
  assert.equal(checked, data.configs.length * data.cases.length);
  console.log(`# tokenizer vectors checked: ${checked}`);
});
