// The teacher's WordPiece tokenizer (all-MiniLM-L6-v2, BERT uncased), ported exactly from the fast
// tokenizer that kdmobile/tasks/email/teacher.py load_tokenizer() returns.
//
//   python -m kdmobile.tasks.email.wordpiece -o build/wordpiece.json
//   node -e "import('./demo_app/wordpiece.js').then(w => console.log(w.encode('Hi!', JSON.parse(
//     require('fs').readFileSync('build/wordpiece.json', 'utf8')), 16)))"
//
// The config is the JSON written by wordpiece_json() in kdmobile/tasks/email/wordpiece.py, whose docstring
// is the spec. Steps: (1) added tokens ([CLS], [SEP], [PAD], [MASK], [UNK]) are matched verbatim in the raw
// text, leftmost-longest, and keep their ids; (2) every other code point is normalised on its own:
// dropped, made a space, surrounded with spaces (CJK) and/or replaced (lower-casing, accent stripping),
// from the config's per-code-point tables (NFD's reordering of the combining marks that survive is
// skipped: wordpiece_json checks that it cannot change an id); (3) the result is split on whitespace and
// around punctuation (tables too); (4) each word becomes WordPiece ids, greedy longest-match-first with
// the "##" continuation prefix, a word of more than max_input_chars_per_word code points or with no match
// becoming [UNK]; (5) [CLS] + the first max_len - 2 ids + [SEP], padded with pad_id to max_len, and the
// attention mask. The tables are read off the installed Rust `tokenizers` (its Unicode tables are neither
// Python's nor a browser's), so nothing below depends on this engine's Unicode version: no \p{...},
// normalize() or toLowerCase().
// Works unchanged in the browser and in node (ES module, no imports).

const CONFIG_TYPE = "kdmobile-wordpiece";
const SUPPORTED_VERSIONS = new Set([1]);
const MAX_CODE_POINT = 0x10ffff;
// Per-code-point class bits. DROP, SPACE, PAD: what the normaliser does to an input code point;
// SPLIT, PUNCT: what the pre-tokeniser does to a normalised code point.
const DROP = 1;
const SPACE = 2;
const PAD = 4;
const SPLIT = 8;
const PUNCT = 16;
const CLASS_FIELDS = [["drop", DROP], ["space", SPACE], ["pad", PAD], ["split", SPLIT], ["punct", PUNCT]];

const prepared = new WeakMap();
const preparedObjects = new WeakSet();

function fail(message) {
  throw new Error(`wordpiece.json: ${message}`);
}

function isInt(v, min, max = Number.MAX_SAFE_INTEGER) {
  return Number.isSafeInteger(v) && v >= min && v <= max;
}

function int(config, key, min, max) {
  const v = config[key];
  const range = max === undefined ? `>= ${min}` : `in [${min}, ${max}]`;
  if (!isInt(v, min, max)) fail(`"${key}" must be an integer ${range}, got ${JSON.stringify(v)}`);
  return v;
}

function codePointLength(s) {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/**
 * Validate a parsed wordpiece.json and precompute what encode() needs (the vocabulary as a Map).
 * @param {object} config - the parsed JSON written by wordpiece_json() (or an already prepared object).
 * @returns {object} a frozen, validated object (cached per config object).
 */
export function prepareVocab(config) {
  if (config === null || typeof config !== "object" || Array.isArray(config)) fail("expected a JSON object");
  if (preparedObjects.has(config)) return config;
  const cached = prepared.get(config);
  if (cached) return cached;
  if (config.type !== CONFIG_TYPE) fail(`"type" must be "${CONFIG_TYPE}", got ${JSON.stringify(config.type)}`);
  if (!SUPPORTED_VERSIONS.has(config.version)) {
    fail(`version ${JSON.stringify(config.version)} is not supported by this wordpiece.js (supports 1)`);
  }
  const words = config.vocab;
  if (!Array.isArray(words) || words.length === 0) fail('"vocab" must be a non-empty list of strings in id order');
  const vocab = new Map();
  let maxPieceChars = 0;
  words.forEach((w, id) => {
    if (typeof w !== "string" || w === "") fail(`vocab[${id}] must be a non-empty string, got ${JSON.stringify(w)}`);
    if (vocab.has(w)) fail(`vocab[${id}] ${JSON.stringify(w)} repeats vocab[${vocab.get(w)}]`);
    vocab.set(w, id);
    maxPieceChars = Math.max(maxPieceChars, codePointLength(w));
  });
  const last = words.length - 1;
  const prefix = config.continuing_subword_prefix;
  if (typeof prefix !== "string") fail(`"continuing_subword_prefix" must be a string, got ${JSON.stringify(prefix)}`);
  const special = config.special_tokens;
  if (!Array.isArray(special)) fail('"special_tokens" must be a list of [text, id] (the added tokens)');
  special.forEach((s) => {
    if (!Array.isArray(s) || s.length !== 2 || typeof s[0] !== "string" || s[0] === "" || !isInt(s[1], 0, last)) {
      fail(`"special_tokens" entries must be [non-empty text, id < ${words.length}], got ${JSON.stringify(s)}`);
    }
  });
  const chars = config.chars;
  if (chars === null || typeof chars !== "object") {
    fail('"chars" (the per-code-point tables) is missing: write the file with wordpiece_json()');
  }
  const classes = new Uint8Array(MAX_CODE_POINT + 1);
  for (const [field, bit] of CLASS_FIELDS) {
    const ranges = chars[field];
    if (!Array.isArray(ranges)) fail(`"chars.${field}" must be a list of [first, last] code point ranges`);
    let prev = -1;
    for (const r of ranges) {
      const ok = Array.isArray(r) && r.length === 2 && isInt(r[0], prev + 1, MAX_CODE_POINT);
      if (!ok || !isInt(r[1], r[0], MAX_CODE_POINT)) {
        fail(`"chars.${field}" must hold sorted, disjoint [first, last] code point ranges: ${JSON.stringify(r)}`);
      }
      for (let cp = r[0]; cp <= r[1]; cp++) classes[cp] |= bit;
      prev = r[1];
    }
  }
  if (!Array.isArray(chars.map)) fail('"chars.map" must be a list of [code point, replacement]');
  const map = new Map();
  for (const m of chars.map) {
    const ok = Array.isArray(m) && m.length === 2 && isInt(m[0], 0, MAX_CODE_POINT);
    if (!ok || typeof m[1] !== "string" || m[1] === "") {
      fail(`"chars.map" entries must be [code point, non-empty replacement], got ${JSON.stringify(m)}`);
    }
    map.set(m[0], m[1]);
  }
  const p = Object.freeze({
    words: words.slice(),
    vocab,
    maxPieceChars,
    prefix,
    maxWordChars: int(config, "max_input_chars_per_word", 1),
    maxLen: int(config, "max_len", 2),
    unkId: int(config, "unk_id", 0, last),
    clsId: int(config, "cls_id", 0, last),
    sepId: int(config, "sep_id", 0, last),
    padId: int(config, "pad_id", 0, last),
    // longest first, so that at one position the longest added token wins (leftmost-longest matching)
    special: special.map(([text, id]) => ({ text, id })).sort((a, b) => b.text.length - a.text.length),
    specialStarts: new Set(special.map(([text]) => text.charCodeAt(0))),
    classes,
    map,
  });
  preparedObjects.add(p);
  prepared.set(config, p);
  return p;
}

/** Step 4: the WordPiece ids of one word (an array of code points as strings), appended to ``out``. */
function wordpiece(chars, p, out) {
  if (chars.length > p.maxWordChars) {
    out.push(p.unkId);
    return;
  }
  const ids = [];
  let start = 0;
  while (start < chars.length) {
    let id;
    let end = Math.min(chars.length, start + p.maxPieceChars);
    for (; end > start; end--) {
      const piece = chars.slice(start, end).join("");
      id = p.vocab.get(start > 0 ? p.prefix + piece : piece);
      if (id !== undefined) break;
    }
    if (id === undefined) {
      out.push(p.unkId); // one unmatched piece makes the whole word [UNK]
      return;
    }
    ids.push(id);
    start = end;
  }
  for (const id of ids) out.push(id);
}

/** Steps 2-4 on text without added tokens: its WordPiece ids appended to ``out``, up to ``limit`` of them. */
function encodeSegment(segment, p, out, limit) {
  let word = [];
  const flush = () => {
    if (word.length) {
      wordpiece(word, p, out);
      word = [];
    }
  };
  // for..of walks code points (a surrogate pair is one character, as in Python and Rust).
  for (let ch of segment) {
    if (out.length >= limit) return;
    let cp = ch.codePointAt(0);
    // A lone surrogate cannot reach the Rust tokenizer (it is not UTF-8); it is taken as U+FFFD, the
    // character a UTF-8 encoder writes for it (which the BERT normaliser drops).
    if (cp >= 0xd800 && cp <= 0xdfff) {
      cp = 0xfffd;
      ch = "\ufffd";
    }
    const cls = p.classes[cp];
    if (cls & DROP) continue;
    let normalised;
    if (cls & SPACE) normalised = " ";
    else {
      normalised = p.map.get(cp) ?? ch;
      if (cls & PAD) normalised = " " + normalised + " ";
    }
    for (const c of normalised) {
      const k = p.classes[c.codePointAt(0)];
      if (k & SPLIT) flush();
      else if (k & PUNCT) {
        flush();
        word.push(c);
        flush();
      } else word.push(c);
    }
  }
  flush();
}

/** Step 1: ``text`` as pieces of plain text and added tokens, leftmost-longest, as the fast tokenizer does. */
function splitAddedTokens(text, p) {
  const parts = [];
  let from = 0;
  for (let i = 0; i < text.length; i++) {
    if (!p.specialStarts.has(text.charCodeAt(i))) continue;
    const hit = p.special.find((s) => text.startsWith(s.text, i));
    if (!hit) continue;
    if (i > from) parts.push(text.slice(from, i));
    parts.push(hit);
    from = i + hit.text.length;
    i = from - 1;
  }
  if (from < text.length) parts.push(text.slice(from));
  return parts;
}

function pieceIds(text, p, limit) {
  if (typeof text !== "string") throw new TypeError(`text must be a string, got ${typeof text}`);
  const out = [];
  for (const part of splitAddedTokens(text, p)) {
    if (out.length >= limit) break;
    if (typeof part === "string") encodeSegment(part, p, out, limit);
    else out.push(part.id);
  }
  return out.slice(0, limit);
}

/**
 * The WordPiece tokens of ``text`` as strings, without [CLS]/[SEP] or truncation (for debugging).
 * @param {string} text
 * @param {object} config - parsed wordpiece.json
 * @returns {string[]}
 */
export function tokenize(text, config) {
  const p = prepareVocab(config);
  return pieceIds(text, p, Infinity).map((id) => p.words[id]);
}

/**
 * Steps 1-5: ``text`` -> exactly ``maxLen`` ids and mask values, identical to the Python tokenizer's
 * ``tokenizer(text, truncation=True, max_length=maxLen, padding="max_length")``.
 * @param {string} text
 * @param {object} config - parsed wordpiece.json
 * @param {number} [maxLen] - ids per text, [CLS] and [SEP] included (default: the config's max_len)
 * @returns {{ids: number[], mask: number[]}}
 */
export function encode(text, config, maxLen) {
  const p = prepareVocab(config);
  const n = maxLen ?? p.maxLen;
  if (!isInt(n, 2)) {
    throw new RangeError(`maxLen must be an integer >= 2 ([CLS] and [SEP]), got ${JSON.stringify(maxLen)}`);
  }
  const ids = [p.clsId, ...pieceIds(text, p, n - 2), p.sepId];
  const mask = new Array(n).fill(0).fill(1, 0, ids.length);
  while (ids.length < n) ids.push(p.padId);
  return { ids, mask };
}

/** ``encode`` as the int64 tensor data onnxruntime-web takes (two BigInt64Array of length maxLen). */
export function encodeInt64(text, config, maxLen) {
  const { ids, mask } = encode(text, config, maxLen);
  return { ids: BigInt64Array.from(ids, (v) => BigInt(v)), mask: BigInt64Array.from(mask, (v) => BigInt(v)) };
}
