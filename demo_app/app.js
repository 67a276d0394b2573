// Smart Reply demo: the distilled email student on onnxruntime-web, entirely in the page.
//
//   make demo && make serve          # then open the printed http://127.0.0.1:8000/
//
// Everything comes from the serving origin (see kdmobile/serve.py): the page itself, /vendor/ort/ (the
// pinned onnxruntime-web from npm) and /models/ (the web bundle written by `make demo`: meta.json,
// tokenizer.json, replies.json, model_fp32.onnx, model_int8.onnx, teacher_predictions.json). Both model
// files are fetched and checked (size, sha256) at start, so the page keeps working offline once loaded.
//
// Safety: text from the email box or any JSON file only ever reaches the DOM as textContent (this file
// never uses innerHTML); the page's CSP forbids inline script on top of that.

import { encode, prepareConfig } from "./tokenizer.js";

const MODELS = "models/";
const ORT_URL = "./vendor/ort/ort.wasm.min.mjs";
const DEBOUNCE_MS = 150;
const TOP_K = 3;
const MEDIAN_WINDOW = 50;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const state = {
  ort: null,
  meta: null,
  tokenizer: null,
  replies: new Map(), // intent id -> {replies, description}
  noneIndex: -1, // the "no reply wanted" output of a reply-act model (never a chip), -1 without one
  abstain: null, // replies.json "abstain": {score: "p_none" | "max_act_prob", threshold, reason} or null
  samples: [], // the picker: {id, title, text, teacher: [{intent, prob}] | null}
  teacherSamples: [], // the teacher panel: the pipeline's samples that carry the teacher's top-3
  teacherName: null,
  precision: "fp32",
  buffers: {}, // precision -> Uint8Array (fetched once, so switching works offline)
  sessions: {}, // precision -> Promise<InferenceSession>
  timings: { fp32: [], int8: [] },
  runChain: Promise.resolve(),
  seq: 0,
  teacherError: null,
};

// Read by the browser tests; the page itself never reads it.
window.kdmobileDemo = { state: "loading", last: null, error: null };

// ---------------------------------------------------------------- small DOM helpers (textContent only)

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setState(s) {
  window.kdmobileDemo.state = s;
  document.body.dataset.state = s;
}

function showBanner(message, detail) {
  const banner = $("banner");
  banner.replaceChildren(el("strong", "", message));
  if (detail) banner.append(" ", el("span", "", detail));
  banner.hidden = false;
}

function fail(message, detail) {
  setState("error");
  window.kdmobileDemo.error = detail ? `${message} ${detail}` : message;
  showBanner(message, detail);
  $("runtime-badge").textContent = "on-device · unavailable";
  $("runtime-badge").classList.add("badge-error");
}

const intentLabel = (id) => {
  const s = String(id).replace(/_/g, " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
};

const formatBytes = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(2)} MB` : `${(n / 1e3).toFixed(1)} kB`);
const formatMs = (ms) => (ms >= 10 ? `${ms.toFixed(1)} ms` : `${ms.toFixed(2)} ms`);
const formatPct = (p) => (p < 0.01 ? "<1%" : `${Math.round(p * 100)}%`);

// ---------------------------------------------------------------- loading and validation

async function fetchJSON(name, { optional = false } = {}) {
  const res = await fetch(MODELS + name);
  if (!res.ok) {
    if (optional && res.status === 404) return null;
    throw new Error(`${MODELS}${name}: HTTP ${res.status}`);
  }
  return res.json();
}

async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

function validateBundle(meta, tokenizer, replies) {
  const problems = [];
  const L = tokenizer.max_len;
  if (meta.input_dtype !== "int64") problems.push(`input_dtype is ${meta.input_dtype}, expected int64`);
  const shape = meta.input_shape;
  if (!Array.isArray(shape) || shape.length !== 2 || shape[0] !== 1 || shape[1] !== L) {
    problems.push(`input_shape ${JSON.stringify(shape)} does not match tokenizer max_len ${L} (expected [1, ${L}])`);
  }
  if (!Array.isArray(meta.intents) || meta.intents.length < TOP_K) {
    problems.push(`meta.json needs at least ${TOP_K} intents`);
  } else {
    const missing = meta.intents.filter((i, k) => k !== state.noneIndex && !replies.has(i));
    if (missing.length) problems.push(`intents without replies in replies.json: ${missing.join(", ")}`);
  }
  if (!meta.models || !["fp32", "int8"].some((p) => meta.models[p])) problems.push("meta.json lists no model");
  if (problems.length) throw new Error(`the model bundle is inconsistent: ${problems.join("; ")}`);
}

function normaliseTop(entry) {
  // teacher_predictions.json: each entry has "top3": [{"intent": id, "prob": p}, ...] (best first).
  const top = entry && (entry.top3 || entry.top);
  if (!Array.isArray(top)) return null;
  const out = top.map((t) => (Array.isArray(t) ? { intent: t[0], prob: t[1] } : { intent: t.intent, prob: t.prob }));
  return out.every((t) => typeof t.intent === "string" && typeof t.prob === "number") ? out : null;
}

const GREETING = /^(hi|hello|hey|dear|good (morning|afternoon|evening)|greetings|to whom)\b.{0,40},?$/i;

/** A short title for an email without one: its subject, else its first line that is not a greeting. */
function deriveTitle(text, fallback) {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  const subject = lines.find((l) => /^subject:/i.test(l));
  let t = subject ? subject.replace(/^subject:\s*((re|fwd?):\s*)*/i, "") : lines.find((l) => !GREETING.test(l)) || "";
  t = t.replace(/^(hi|hello|hey|dear)\b[^,]{0,30},\s*/i, "");
  if (!t) return fallback;
  const cps = [...t];
  if (cps.length > 34) t = cps.slice(0, 34).join("").replace(/\s+\S*$/, "") + "…";
  return t.charAt(0).toUpperCase() + t.slice(1);
}

/**
 * The picker shows the curated samples.json; the teacher panel shows every sample of
 * teacher_predictions.json (a curated sample there, matched by id or text, keeps its title).
 */
function buildSamples(local, teacher) {
  const fromTeacher = (teacher && Array.isArray(teacher.samples) ? teacher.samples : [])
    .filter((t) => typeof t.text === "string" && normaliseTop(t))
    .map((t, i) => {
      const mine = local.find((s) => s.id === t.id || s.text === t.text);
      const title = t.title || (mine && mine.title) || deriveTitle(t.text, `Sample ${i + 1}`);
      return { id: `t${i}`, title, text: t.text, teacher: normaliseTop(t) };
    });
  const byText = new Map(fromTeacher.map((t) => [t.text, t.teacher]));
  const picker = local.map((s) => ({ ...s, id: String(s.id), teacher: byText.get(s.text) || null }));
  return { picker: picker.length ? picker : fromTeacher, panel: fromTeacher };
}

async function loadModelBytes(precision) {
  const info = state.meta.models[precision];
  const res = await fetch(MODELS + info.file);
  if (!res.ok) throw new Error(`${MODELS}${info.file}: HTTP ${res.status}`);
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (bytes.byteLength !== info.size_bytes) {
    throw new Error(`${info.file} is ${bytes.byteLength} bytes, meta.json says ${info.size_bytes}: re-run make demo`);
  }
  if (globalThis.crypto && crypto.subtle) {
    const digest = await sha256Hex(bytes);
    if (info.sha256 && digest !== info.sha256) {
      throw new Error(`${info.file} sha256 ${digest.slice(0, 12)}… differs from meta.json: re-run make demo`);
    }
  }
  state.buffers[precision] = bytes;
  return bytes;
}

function session(precision) {
  if (!state.sessions[precision]) {
    state.sessions[precision] = (async () => {
      const s = await state.ort.InferenceSession.create(state.buffers[precision], {
        executionProviders: ["wasm"],
        graphOptimizationLevel: "all",
      });
      if (!s.inputNames.includes(state.meta.input_name) || !s.outputNames.includes(state.meta.output_name)) {
        throw new Error(
          `model_${precision}: inputs ${s.inputNames} / outputs ${s.outputNames} do not match meta.json ` +
            `(${state.meta.input_name} → ${state.meta.output_name})`,
        );
      }
      // One warm-up run, so the first timing shown is not the wasm start-up.
      const L = state.meta.input_shape[1];
      await s.run({ [state.meta.input_name]: new state.ort.Tensor("int64", new BigInt64Array(L), [1, L]) });
      return s;
    })();
  }
  return state.sessions[precision];
}

// ---------------------------------------------------------------- inference

function infer(text, precision) {
  // onnxruntime-web runs one request per session at a time: chain them.
  const run = state.runChain.then(async () => {
    const s = await session(precision);
    const ids = encode(text, state.tokenizer);
    const L = ids.length;
    const feed = new state.ort.Tensor("int64", BigInt64Array.from(ids, (v) => BigInt(v)), [1, L]);
    const t0 = performance.now();
    const out = await s.run({ [state.meta.input_name]: feed });
    const ms = performance.now() - t0;
    const logits = Array.from(out[state.meta.output_name].data);
    if (logits.length !== state.meta.intents.length) {
      throw new Error(`the model returned ${logits.length} logits for ${state.meta.intents.length} intents`);
    }
    return { ids, logits, ms, used: ids.filter((v) => v !== 0).length };
  });
  state.runChain = run.catch(() => {});
  return run;
}

function softmax(logits) {
  const max = Math.max(...logits);
  const exp = logits.map((z) => Math.exp(z - max));
  const sum = exp.reduce((a, b) => a + b, 0);
  return exp.map((e) => e / sum);
}

/** Top-k intents by logit (ties: lower index first) with softmax confidences; "none" is never one. */
function topK(logits, k = TOP_K) {
  const p = softmax(logits);
  return logits
    .map((z, i) => i)
    .filter((i) => i !== state.noneIndex)
    .sort((a, b) => logits[b] - logits[a] || a - b)
    .slice(0, k)
    .map((i) => ({ intent: state.meta.intents[i], prob: p[i] }));
}

/**
 * Whether the email wants no suggestion: the rule of replies.json "abstain", the same as Python's
 * kdmobile.tasks.email.abstain.abstains (p_none: softmax of "none" >= threshold; max_act_prob: the best
 * act's probability < threshold). Returns {abstain, pNone}.
 */
function abstainOf(logits) {
  const rule = state.abstain;
  if (!rule || state.noneIndex < 0) return { abstain: false, pNone: null };
  const p = softmax(logits);
  const pNone = p[state.noneIndex];
  const best = Math.max(...p.filter((_, i) => i !== state.noneIndex));
  const abstain = rule.score === "p_none" ? pNone >= rule.threshold : best < rule.threshold;
  return { abstain, pNone };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// ---------------------------------------------------------------- rendering

function renderChips(top, abstain) {
  const chips = $("chips");
  if (!top) {
    chips.replaceChildren(el("p", "muted placeholder", "Suggestions appear as you type."));
    return;
  }
  if (abstain && abstain.abstain) {
    const note = el("p", "abstain", state.abstain.reason || "No reply needed.");
    note.id = "abstain";
    note.title = `p(none) ${formatPct(abstain.pNone)}`;
    chips.replaceChildren(note);
    return;
  }
  chips.replaceChildren(
    ...top.map(({ intent, prob }) => {
      const reply = state.replies.get(intent).replies[0];
      const chip = el("button", "chip");
      chip.type = "button";
      chip.dataset.intent = intent;
      chip.setAttribute("aria-label", `${reply} (${intentLabel(intent)}, ${formatPct(prob)} confidence)`);
      const bar = el("span", "chip-bar");
      const fill = el("span", "chip-fill");
      fill.style.width = `${Math.max(2, Math.round(prob * 100))}%`;
      bar.append(fill);
      const meta = el("span", "chip-meta");
      meta.append(el("span", "chip-intent", intentLabel(intent)), el("span", "chip-conf", formatPct(prob)));
      chip.append(el("span", "chip-text", reply), meta, bar);
      chip.addEventListener("click", () => {
        $("reply").value = reply;
        for (const c of chips.querySelectorAll(".chip")) c.setAttribute("aria-pressed", String(c === chip));
        $("reply").classList.remove("flash");
        void $("reply").offsetWidth; // restart the highlight animation
        $("reply").classList.add("flash");
      });
      return chip;
    }),
  );
}

function renderStats(result) {
  const p = state.precision;
  const info = state.meta.models[p];
  const other = p === "fp32" ? "int8" : "fp32";
  const otherInfo = state.meta.models[other];
  $("stat-size").replaceChildren(el("span", "", formatBytes(info.size_bytes)));
  if (otherInfo) $("stat-size").append(el("span", "muted", ` · ${other} ${formatBytes(otherInfo.size_bytes)}`));
  if (result) {
    const t = state.timings[p];
    t.push(result.ms);
    if (t.length > MEDIAN_WINDOW) t.shift();
    $("stat-latency").textContent = `${formatMs(result.ms)} (${p})`;
    $("stat-median").textContent = `${formatMs(median(t))} over ${t.length}`;
    const L = state.tokenizer.max_len;
    $("stat-tokens").textContent = `${result.used} of ${L}`;
    $("timing").textContent = `${formatMs(result.ms)} in your browser`;
  }
}

function renderCharCount(text) {
  const n = [...text].length;
  const maxChars = state.tokenizer ? state.tokenizer.max_chars : Infinity;
  const count = $("char-count");
  count.textContent =
    n > maxChars ? `${n.toLocaleString()} characters · only the first ${maxChars.toLocaleString()} are read` : "";
  count.classList.toggle("warn", n > maxChars);
}

/** Teacher and student top-3 side by side, rank by rank; an intent both have is highlighted. */
function compareGrid(teacher, student) {
  const grid = el("div", "tgrid");
  grid.append(el("span", ""), el("span", "tgrid-head", "Teacher"), el("span", "tgrid-head", "Student"));
  const cell = (t, other, role) => {
    const c = el("span", other.has(t.intent) ? "tchip match" : "tchip");
    c.dataset.intent = t.intent;
    c.dataset.role = role;
    c.title = `${intentLabel(t.intent)}: ${formatPct(t.prob)}`;
    c.append(el("span", "tchip-name", intentLabel(t.intent)), el("span", "tchip-p", formatPct(t.prob)));
    return c;
  };
  const tSet = new Set(teacher.map((t) => t.intent));
  const sSet = new Set(student.map((t) => t.intent));
  for (let r = 0; r < Math.max(teacher.length, student.length); r++) {
    grid.append(el("span", "tgrid-rank", String(r + 1)));
    grid.append(teacher[r] ? cell(teacher[r], sSet, "teacher") : el("span", ""));
    grid.append(student[r] ? cell(student[r], tSet, "student") : el("span", ""));
  }
  return grid;
}

async function renderTeacher() {
  const list = $("teacher");
  const withTeacher = state.teacherSamples;
  if (!withTeacher.length) {
    const why = state.teacherError
      ? `teacher_predictions.json could not be read: ${state.teacherError}`
      : "teacher_predictions.json is missing; make demo produces it";
    list.replaceChildren(
      el("li", "muted unavailable", `Precomputed teacher suggestions are unavailable for this bundle (${why}).`),
    );
    $("teacher-summary").textContent = "";
    return;
  }
  const items = [];
  let agree = 0;
  let overlap = 0;
  for (const s of withTeacher) {
    const student = topK((await infer(s.text, state.precision)).logits);
    const same = student[0].intent === s.teacher[0].intent;
    agree += same;
    const teacherSet = new Set(s.teacher.slice(0, TOP_K).map((t) => t.intent));
    overlap += student.filter((t) => teacherSet.has(t.intent)).length;
    const li = el("li", "titem");
    li.dataset.sample = s.id;
    li.dataset.text = s.text;
    li.dataset.agree = String(same);
    const head = el("button", "titem-head");
    head.type = "button";
    head.append(el("span", "titem-title", s.title), el("span", same ? "pill ok" : "pill diff", same ? "agrees" : "differs"));
    head.addEventListener("click", () => selectSample(s));
    li.append(head, compareGrid(s.teacher.slice(0, TOP_K), student));
    items.push(li);
  }
  list.replaceChildren(...items);
  const n = withTeacher.length;
  $("teacher-summary").textContent =
    `Top-1 agrees on ${agree}/${n} samples · top-3 overlap ${Math.round((100 * overlap) / (TOP_K * n))}% ` +
    `(${state.precision} student)`;
  highlightSample();
}

function highlightSample() {
  const text = $("email").value;
  for (const b of $("samples").querySelectorAll("button")) {
    b.setAttribute("aria-pressed", String(b.dataset.text === text));
  }
  for (const li of $("teacher").querySelectorAll("li[data-sample]")) {
    li.classList.toggle("current", li.dataset.text === text);
  }
}

function renderSamples() {
  const box = $("samples");
  box.replaceChildren(
    ...state.samples.map((s) => {
      const b = el("button", "sample", s.title);
      b.type = "button";
      b.dataset.sample = s.id;
      b.dataset.text = s.text;
      b.addEventListener("click", () => selectSample(s));
      return b;
    }),
  );
}

// ---------------------------------------------------------------- interaction

async function predictNow() {
  const seq = ++state.seq;
  const text = $("email").value;
  renderCharCount(text);
  try {
    const result = await infer(text, state.precision);
    if (seq !== state.seq) return; // a newer keystroke won
    const top = result.used ? topK(result.logits) : null;
    const abstain = abstainOf(result.logits);
    renderChips(top, abstain);
    renderStats(result);
    window.kdmobileDemo.last = {
      text,
      precision: state.precision,
      ids: result.ids,
      logits: result.logits,
      intents: top && !abstain.abstain ? top.map((t) => t.intent) : [],
      abstained: Boolean(top && abstain.abstain),
      pNone: abstain.pNone,
      ms: result.ms,
    };
  } catch (e) {
    fail("Inference failed.", String(e.message || e));
  }
}

let debounceTimer = 0;
function onType() {
  highlightSample();
  renderCharCount($("email").value);
  clearTimeout(debounceTimer);
  debounceTimer = setTimeout(predictNow, DEBOUNCE_MS);
}

function selectSample(s) {
  $("email").value = s.text;
  highlightSample();
  clearTimeout(debounceTimer);
  predictNow();
}

async function switchPrecision(p) {
  if (p === state.precision || !state.meta.models[p]) return;
  state.precision = p;
  $("timing").textContent = `loading ${p}…`;
  try {
    await session(p);
    renderStats(null);
    await predictNow();
    await renderTeacher();
  } catch (e) {
    fail(`Could not load the ${p} model.`, String(e.message || e));
  }
}

// ---------------------------------------------------------------- start

async function main() {
  setState("loading");
  let meta;
  try {
    meta = await fetchJSON("meta.json", { optional: true });
  } catch (e) {
    return fail("Could not read the model bundle.", String(e.message || e));
  }
  if (!meta) {
    return fail("No model found.", "Run make demo to train and export the student, then make serve.");
  }
  try {
    const [tokenizer, replies, teacher, local] = await Promise.all([
      fetchJSON("tokenizer.json"),
      fetchJSON("replies.json"),
      fetchJSON("teacher_predictions.json", { optional: true }).catch((e) => {
        state.teacherError = String(e.message || e); // the panel says why; the student still works
        return null;
      }),
      fetch("samples.json").then((r) => (r.ok ? r.json() : { samples: [] })),
    ]);
    prepareConfig(tokenizer); // throws a clear error for a bad tokenizer.json
    for (const intent of replies.intents) state.replies.set(intent.id, intent);
    state.noneIndex = replies.none && Array.isArray(meta.intents) ? meta.intents.indexOf(replies.none) : -1;
    state.abstain = replies.abstain || null;
    validateBundle(meta, tokenizer, state.replies);
    state.meta = meta;
    state.tokenizer = tokenizer;
    const samples = buildSamples(local.samples || [], teacher);
    state.samples = samples.picker;
    state.teacherSamples = samples.panel;
    state.teacherName = teacher && teacher.teacher;
    if (state.teacherName) {
      $("teacher-note").textContent =
        `Teacher: ${state.teacherName}. Its top-3 was precomputed by the pipeline; the student's is computed ` +
        "live in this page. Shared intents are highlighted.";
    }
    renderSamples();

    const precisions = ["fp32", "int8"].filter((p) => meta.models[p]);
    const wanted = params.get("precision");
    state.precision = precisions.includes(wanted) ? wanted : precisions[0];

    const ort = await import(ORT_URL);
    const cores = navigator.hardwareConcurrency || 1;
    const requested = Number.parseInt(params.get("threads") || "", 10);
    ort.env.wasm.numThreads = crossOriginIsolated ? (requested > 0 ? requested : Math.min(4, cores)) : 1;
    ort.env.wasm.wasmPaths = new URL("./vendor/ort/", location.href).href;
    state.ort = ort;

    await Promise.all(precisions.map(loadModelBytes));
    await session(state.precision);

    for (const input of document.querySelectorAll('#precision input')) {
      input.disabled = !meta.models[input.value];
      input.checked = input.value === state.precision;
      input.addEventListener("change", () => input.checked && switchPrecision(input.value));
    }
    const threads = ort.env.wasm.numThreads;
    $("stat-runtime").textContent =
      `wasm · ${threads} thread${threads > 1 ? "s" : ""}` + (crossOriginIsolated ? "" : " (not cross-origin isolated)");
    $("runtime-badge").textContent = "on-device · ready";
    $("runtime-badge").classList.add("badge-ok");

    const email = $("email");
    email.disabled = false;
    email.addEventListener("input", onType);
    renderStats(null);
    if (state.samples.length) selectSample(state.samples[0]);
    await state.runChain;
    await renderTeacher();
    await predictNow();
    setState("ready");
  } catch (e) {
    console.error(e);
    fail("The demo could not start.", String(e.message || e));
  }
}

main();
