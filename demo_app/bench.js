// In-browser benchmark of the web bundle, driven from Python by `kdmobile bench` (kdmobile/harness/browser.py):
//
//   kdmobile bench build/export --task email --data heldout -o build/report
//
// The page loads onnxruntime-web's plain wasm build from /vendor/ort/ with `?threads=N` wasm threads
// (numThreads is fixed when the wasm backend starts, so one page load per thread count), then exposes
// `window.kdmobileBench`: `prepare(params)` loads one model file, tokenizes every given text with the JS
// port of the tokenizer (tokenizer.js) and runs the model on each (the accuracy pass), returning ids and
// logits so Python can check them against its own tokenizer and onnxruntime; `timeBlocks(p)` times
// `session.run` at batch 1 with performance.now() in blocks that alternate with blocks of a fixed reference
// model (kdmobile/harness/reference.py, handed over by Python as base64) run by the same kind of session
// on the same input, in this page: both see the same machine at the same moment, so load cancels in their
// ratio; `release()` frees the sessions.

import { encode, prepareConfig } from "./tokenizer.js";

const ORT_URL = "./vendor/ort/ort.wasm.min.mjs";
const MODELS = "models/";
const params = new URLSearchParams(location.search);
const status = document.getElementById("status");

const state = { ort: null, tokenizer: null, current: null };
window.kdmobileBench = { ready: false, error: null, prepare, timeBlocks, release, info };

async function fetchJson(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status} (is the web bundle complete?)`);
  return new Uint8Array(await r.arrayBuffer());
}

function info() {
  return {
    crossOriginIsolated: globalThis.crossOriginIsolated === true,
    numThreads: state.ort ? state.ort.env.wasm.numThreads : null,
    hardwareConcurrency: navigator.hardwareConcurrency || 1,
    ortVersion: state.ort && state.ort.env.versions ? state.ort.env.versions.web || null : null,
    userAgent: navigator.userAgent,
  };
}

async function start() {
  const requested = Number.parseInt(params.get("threads") || "1", 10);
  const ort = await import(ORT_URL);
  // Without cross-origin isolation wasm threads are unavailable and ORT silently falls back to 1;
  // Python compares the requested and the effective count and refuses a silent fallback.
  ort.env.wasm.numThreads = requested > 0 ? requested : 1;
  ort.env.wasm.wasmPaths = new URL("./vendor/ort/", location.href).href;
  state.ort = ort;
  const config = await fetchJson(`${MODELS}tokenizer.json`);
  prepareConfig(config); // validates: a bad tokenizer.json fails here, not mid-run
  state.tokenizer = config;
}

function argmaxRows(data, rows, cols) {
  const out = new Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 1; c < cols; c++) if (data[r * cols + c] > data[r * cols + best]) best = c;
    out[r] = best;
  }
  return out;
}

/**
 * Load one model file of the bundle, tokenize every text in JS, run the model on each (the accuracy pass)
 * and warm the session (and the reference's) up for timing; `timeBlocks` then times them, `release` frees them.
 * @param {object} p - {model: "model_fp32.onnx", texts: string[], latencyIndex: number, warmupRuns: number,
 *   returnIds: boolean, reference: base64 of the reference ONNX model}
 */
async function prepare(p) {
  const ort = state.ort;
  if (state.current) await release();
  const t0 = performance.now();
  const bytes = await fetchBytes(`${MODELS}${p.model}`);
  const t1 = performance.now();
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  const t2 = performance.now();
  const inputName = session.inputNames[0];
  const outputName = session.outputNames[0];
  const L = prepareConfig(state.tokenizer).maxLen;

  const t3 = performance.now();
  const ids = p.texts.map((text) => encode(text, state.tokenizer));
  const tokenizeMs = performance.now() - t3;
  let logits = null;
  let cols = 0;
  for (let i = 0; i < ids.length; i++) {
    const feed = new ort.Tensor("int64", BigInt64Array.from(ids[i], (v) => BigInt(v)), [1, L]);
    const out = (await session.run({ [inputName]: feed }))[outputName].data;
    if (logits === null) {
      cols = out.length;
      logits = new Float32Array(ids.length * cols);
    }
    logits.set(out, i * cols);
  }
  // The timed input: one fixed example, batch 1; warmed up here so the first block is not start-up.
  const feed = new ort.Tensor("int64", BigInt64Array.from(ids[p.latencyIndex || 0], (v) => BigInt(v)), [1, L]);
  for (let i = 0; i < Math.max(p.warmupRuns || 20, 1); i++) await session.run({ [inputName]: feed });
  let ref = null;
  if (p.reference) {
    const refBytes = Uint8Array.from(atob(p.reference), (c) => c.charCodeAt(0));
    const refSession = await ort.InferenceSession.create(refBytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
    const refFeed = new ort.Tensor("int64", BigInt64Array.from(ids[p.latencyIndex || 0], (v) => BigInt(v)), [1, L]);
    const refInput = refSession.inputNames[0];
    for (let i = 0; i < Math.max(p.warmupRuns || 20, 1); i++) await refSession.run({ [refInput]: refFeed });
    ref = { session: refSession, feed: refFeed, inputName: refInput };
  }
  state.current = { session, feed, inputName, ref };
  return {
    ...info(),
    model: p.model,
    inputName,
    outputName,
    fetchMs: t1 - t0,
    loadMs: t2 - t1,
    tokenizeMs,
    n: ids.length,
    cols,
    ids: p.returnIds ? ids.flat() : null,
    logits: Array.from(logits || []),
    top1: argmaxRows(logits || [], ids.length, cols),
  };
}

/**
 * Time one session for about `ms` milliseconds. performance.now() is coarsened (5 us even when
 * cross-origin isolated), so runs are grouped in sub-blocks of at least SUB_MS (~20 timer ticks): a sample
 * is the mean time per run over one sub-block. Sub-blocks are short so that a preemption by another
 * process spoils few samples. A model slower than SUB_MS gets one run per sample (plain per-run timing).
 */
async function timeBlock(t, ms, samples) {
  const SUB_MS = 0.1;
  const first = samples.length;
  let runs = 0;
  const end = performance.now() + ms;
  do {
    const a = performance.now();
    let n = 0;
    let b = a;
    do {
      await t.session.run({ [t.inputName]: t.feed });
      n++;
      b = performance.now();
    } while (b - a < SUB_MS);
    samples.push((b - a) / n);
    runs += n;
  } while (performance.now() < end);
  return { runs, median: median(samples.slice(first)) };
}

function median(values) {
  const v = values.sort((x, y) => x - y);
  return (v[Math.floor((v.length - 1) / 2)] + v[Math.ceil((v.length - 1) / 2)]) / 2;
}

/**
 * Time the prepared model for about `p.seconds`, in blocks of `p.blockSeconds` that alternate with the
 * reference's (R A R ... A R), so each artifact block has a reference block on both sides. Returns the
 * artifact's samples, each block's median per-run time (`artMedians`, and `refMedians` with one more
 * entry), and the number of artifact runs.
 */
async function timeBlocks(p) {
  const { ref } = state.current;
  const ms = p.blockSeconds * 1000;
  const samples = [];
  const refSamples = [];
  const artMedians = [];
  const refMedians = [];
  let runs = 0;
  const end = performance.now() + p.seconds * 1000;
  if (ref) refMedians.push((await timeBlock(ref, ms, refSamples)).median);
  do {
    const blk = await timeBlock(state.current, ms, samples);
    artMedians.push(blk.median);
    runs += blk.runs;
    if (ref) refMedians.push((await timeBlock(ref, ms, refSamples)).median);
  } while (performance.now() < end);
  return { samples, artMedians, refMedians, runs };
}

async function release() {
  if (state.current) {
    await state.current.session.release();
    if (state.current.ref) await state.current.ref.session.release();
    state.current = null;
  }
}

start().then(
  () => {
    window.kdmobileBench.ready = true;
    const i = info();
    status.textContent = `ready: onnxruntime-web ${i.ortVersion}, ${i.numThreads} thread(s), crossOriginIsolated=${i.crossOriginIsolated}`;
  },
  (e) => {
    window.kdmobileBench.error = String(e && e.stack ? e.stack : e);
    status.textContent = `error: ${window.kdmobileBench.error}`;
  },
);
