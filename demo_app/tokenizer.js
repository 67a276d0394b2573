// The email student's tokenizer, ported exactly from kdmobile/tasks/email/tokenizer.py.
//
//   node -e "import('./demo_app/tokenizer.js').then(t => console.log(t.encode('Hi!', JSON.parse(
//     require('fs').readFileSync('build/export/onnx-web/bundle/tokenizer.json', 'utf8')))))"
//
// The Python module docstring is the spec; every rule below names its step there. The config is the
// tokenizer.json written by HashTokenizer.to_json(): the SEPARATORS list comes from its "separators"
// field, so it is defined once, in Python. Works unchanged in the browser and in node (ES module, no
// imports; TextEncoder is global in both).

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
const APOSTROPHES = new Set([0x27, 0x2019]);
const PUNCT_TOKENS = new Set(["?", "!"]);
const CONFIG_TYPE = "kdmobile-hash-ngram";
const SUPPORTED_VERSIONS = new Set([1]);

const utf8 = new TextEncoder();
const prepared = new WeakMap();

function fail(message) {
  throw new Error(`tokenizer.json: ${message}`);
}

function int(config, key, min) {
  const v = config[key];
  if (!Number.isSafeInteger(v) || v < min) fail(`"${key}" must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * Validate a parsed tokenizer.json and precompute what encode() needs.
 * @param {object} config - the parsed tokenizer.json (HashTokenizer.to_json()).
 * @returns {object} a frozen, validated copy (cached per config object).
 */
export function prepareConfig(config) {
  if (config === null || typeof config !== "object") fail("expected a JSON object");
  const cached = prepared.get(config);
  if (cached) return cached;
  if (config.type !== CONFIG_TYPE) fail(`"type" must be "${CONFIG_TYPE}", got ${JSON.stringify(config.type)}`);
  if (!SUPPORTED_VERSIONS.has(config.version)) {
    fail(`version ${JSON.stringify(config.version)} is not supported by this tokenizer.js (supports 1)`);
  }
  if (!Array.isArray(config.separators) || !config.separators.every((c) => Number.isInteger(c) && c >= 0x80)) {
    fail('"separators" must be a list of non-ASCII code points (write the file with HashTokenizer.to_json())');
  }
  const cn = config.char_ngrams;
  if (!Array.isArray(cn) || cn.length !== 2 || !cn.every(Number.isSafeInteger) || cn[0] < 0 || cn[1] < cn[0]) {
    fail(`"char_ngrams" must be [0, 0] or [lo, hi] with 1 <= lo <= hi, got ${JSON.stringify(cn)}`);
  }
  const wordNgrams = int(config, "word_ngrams", 1);
  if (wordNgrams > 2) fail(`"word_ngrams" must be 1 or 2, got ${wordNgrams}`);
  if (!Number.isSafeInteger(config.seed)) fail(`"seed" must be an integer, got ${JSON.stringify(config.seed)}`);
  const p = Object.freeze({
    numBuckets: int(config, "num_buckets", 2),
    maxLen: int(config, "max_len", 1),
    maxChars: int(config, "max_chars", 1),
    wordNgrams,
    charLo: cn[0],
    charHi: cn[1],
    // Python masks with & 0xFFFFFFFF; >>> 0 is the same ToUint32 for every safe integer.
    seed: config.seed >>> 0,
    separators: new Set(config.separators),
  });
  prepared.set(config, p);
  return p;
}

/** 32-bit FNV-1a over bytes, the offset basis XOR-ed with ``seed`` (step 6). */
export function fnv1a(bytes, seed = 0) {
  let h = (FNV_OFFSET ^ seed) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, FNV_PRIME) >>> 0;
  }
  return h;
}

/** Steps 1-4: the token strings of ``text``. */
export function split(text, maxChars, separators) {
  if (typeof text !== "string") throw new TypeError(`text must be a string, got ${typeof text}`);
  const tokens = [];
  let word = [];
  let n = 0;
  // for..of walks code points, as Python's str does; a lone surrogate comes out as one unit.
  for (let ch of text) {
    if (n >= maxChars) break; // step 1: at most max_chars code points (apostrophes count)
    n++;
    let cp = ch.codePointAt(0);
    if (cp >= 0xd800 && cp <= 0xdfff) {
      cp = 0xfffd;
      ch = "\ufffd";
    }
    if (APOSTROPHES.has(cp)) continue; // step 3
    if (cp >= 0x41 && cp <= 0x5a) {
      cp += 32; // step 2: ASCII-only lower-casing, never locale-dependent
      ch = String.fromCharCode(cp);
    } else if (cp >= 0x30 && cp <= 0x39) {
      cp = 0x30;
      ch = "0";
    }
    const isWord = cp < 0x80 ? (cp >= 0x30 && cp <= 0x39) || (cp >= 0x61 && cp <= 0x7a) : !separators.has(cp);
    if (isWord) {
      word.push(ch);
      continue;
    }
    if (word.length) {
      tokens.push(word.join(""));
      word = [];
    }
    if (PUNCT_TOKENS.has(ch)) tokens.push(ch);
  }
  if (word.length) tokens.push(word.join(""));
  return tokens;
}

/**
 * Step 5: the feature strings of ``text``, at most max_len of them (for debugging and tests).
 * @param {string} text
 * @param {object} config - parsed tokenizer.json
 * @returns {string[]}
 */
export function features(text, config) {
  const c = prepareConfig(config);
  const tokens = split(text, c.maxChars, c.separators);
  const feats = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    feats.push("w:" + t);
    if (c.wordNgrams >= 2 && i > 0) feats.push("b:" + tokens[i - 1] + " " + t);
    if (c.charLo > 0 && !PUNCT_TOKENS.has(t)) {
      const w = ["<", ...t, ">"]; // code points, never UTF-16 units
      for (let s = 0; s < w.length; s++) {
        for (let len = c.charLo; len <= c.charHi; len++) {
          if (s + len > w.length) break;
          if (len === w.length) continue; // the whole-word gram is skipped
          feats.push("c:" + w.slice(s, s + len).join(""));
        }
      }
    }
    if (feats.length >= c.maxLen) break;
  }
  return feats.slice(0, c.maxLen);
}

/**
 * Steps 1-7: ``text`` → exactly max_len ids (0 = padding), identical to HashTokenizer.encode.
 * @param {string} text
 * @param {object} config - parsed tokenizer.json
 * @returns {number[]}
 */
export function encode(text, config) {
  const c = prepareConfig(config);
  const ids = new Array(c.maxLen).fill(0);
  const feats = features(text, config);
  for (let i = 0; i < feats.length; i++) {
    ids[i] = 1 + (fnv1a(utf8.encode(feats[i]), c.seed) % (c.numBuckets - 1));
  }
  return ids;
}

/** ``encode`` as the int64 tensor data onnxruntime-web takes (BigInt64Array of length max_len). */
export function encodeInt64(text, config) {
  return BigInt64Array.from(encode(text, config), (v) => BigInt(v));
}
