"""Run the web bundle inside real headless Chromium (onnxruntime-web, wasm) and measure it.

    kdmobile bench build/export --task email --data heldout -o build/report     # includes these runs

``demo_app/bench.html`` (+ ``bench.js``) is served by ``kdmobile.serve`` (127.0.0.1, COOP/COEP, so the page
is cross-origin isolated and wasm threads work) with the bundle at ``/models/``; Playwright drives Debian
``chromium``. For each thread count the page is loaded fresh (onnxruntime-web fixes ``numThreads`` when
its wasm starts) and, per model file, tokenizes every held-out text in JavaScript, runs the model on each,
and times ``session.run`` at batch 1 in blocks that alternate, inside the page, with blocks of a fixed
reference model (``kdmobile.harness.reference``) run by the same onnxruntime-web session type on the same
input: the ratio is then taken in one process at one time, as for the Python-side entries (a reference
timed in Python, in another process, does not see the same load: +59 % on an unchanged artifact with two
CPU hogs). Python then checks the JS token ids and the browser's top-1 against its own tokenizer and
onnxruntime: any difference is a ``mismatch``, never a warning.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdmobile.harness.timing import MIN_BLOCKS, bracketed_ratios

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BENCH_PAGE = "bench.html"
READY_TIMEOUT_MS = 60_000


class BrowserUnavailable(RuntimeError):
    """Chromium, Playwright or onnxruntime-web is missing here; the reason says which and how to fix it."""


def demo_app_dir() -> Path:
    """``demo_app/`` of this checkout (the bench page and the pinned onnxruntime-web)."""
    return Path(__file__).resolve().parents[2] / "demo_app"


def ort_web_version(app: Path | None = None) -> str | None:
    pkg = (app or demo_app_dir()) / "node_modules" / "onnxruntime-web" / "package.json"
    try:
        return json.loads(pkg.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def availability(app: Path | None = None) -> tuple[bool, str]:
    """(can run here, reason if not)."""
    app = app or demo_app_dir()
    if shutil.which("chromium") is None:
        return False, "Debian chromium is not installed (`make setup` installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False, "the Python package playwright is missing (pip install 'kdmobile[browser]')"
    if not (app / BENCH_PAGE).is_file():
        return False, f"{app / BENCH_PAGE} is missing"
    if not (app / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs").is_file():
        return False, f"onnxruntime-web is not installed in {app / 'node_modules'} (run `make setup`)"
    return True, ""


@dataclass
class BrowserRun:
    """What the page returned for one model file at one thread count."""

    model: str
    requested_threads: int
    threads: int
    cross_origin_isolated: bool
    load_ms: float
    tokenize_ms: float
    ids: np.ndarray | None  # int64 [n, max_len], the JS tokenizer's output
    logits: np.ndarray  # float32 [n, classes]
    samples_ms: np.ndarray  # per-run latency: the mean over a sub-block of >= 0.1 ms of consecutive runs
    ratios: np.ndarray  # per block: its median / the in-page reference blocks' around it (geometric mean)
    ref_samples_ms: np.ndarray  # the in-page reference's block medians
    runs_per_sample: float
    runs: int
    ort_version: str | None
    user_agent: str


@contextmanager
def chromium_context(headless: bool = True) -> Iterator[Any]:
    """A Playwright persistent context on Debian chromium with a fresh profile (removed afterwards)."""
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium")
    if exe is None:
        raise BrowserUnavailable("Debian chromium is not installed (`make setup` installs it)")
    profile = tempfile.mkdtemp(prefix="kdmobile-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                user_data_dir=profile, executable_path=exe, headless=headless, args=CHROMIUM_ARGS
            )
            try:
                yield ctx
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def chromium_version(ctx: Any) -> str | None:
    try:
        return ctx.browser.version if ctx.browser else None
    except Exception:  # noqa: BLE001 (informational only)
        return None


def run_bundle(
    bundle: str | Path,
    texts: Sequence[str],
    *,
    models: Sequence[str] = ("model_fp32.onnx", "model_int8.onnx"),
    threads: Sequence[int] = (1, 2),
    reference: bytes | None = None,
    latency_index: int = 0,
    warmup_runs: int = 20,
    min_runs: int = 200,
    min_seconds: float = 10.0,
    max_seconds: float | None = None,
    block_seconds: float = 0.01,
    call_seconds: float = 0.5,
    return_ids: bool = True,
    app: str | Path | None = None,
) -> tuple[list[BrowserRun], dict[str, str | None]]:
    """Serve ``demo_app`` with ``bundle`` at ``/models/`` and run every model at every thread count.

    Timing alternates blocks of about ``block_seconds`` of the model with blocks of ``reference`` (ONNX
    bytes; default: :func:`kdmobile.harness.reference.reference_onnx`), both in the page, for about
    ``call_seconds`` per round trip from Python; each model block gives one ratio (``BrowserRun.ratios``).

    Returns:
        the runs (model-major within each thread count) and versions (``chromium``, ``onnxruntime-web``).

    Raises:
        BrowserUnavailable: chromium/playwright/onnxruntime-web is missing.
        RuntimeError: the page failed (message from the page).
    """
    from kdmobile.serve import serving

    app = Path(app) if app else demo_app_dir()
    ok, reason = availability(app)
    if not ok:
        raise BrowserUnavailable(reason)
    bundle = Path(bundle)
    runs: list[BrowserRun] = []
    versions: dict[str, str | None] = {"onnxruntime-web": ort_web_version(app)}
    if reference is None:
        from kdmobile.harness.reference import reference_onnx

        reference = reference_onnx()
    ref_b64 = base64.b64encode(reference).decode("ascii")
    with serving(app, models=bundle) as url, chromium_context() as ctx:
        versions["chromium"] = chromium_version(ctx)
        for n_threads in threads:
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            try:
                page.goto(f"{url}/{BENCH_PAGE}?threads={int(n_threads)}")
                page.wait_for_function(
                    "() => window.kdmobileBench && (window.kdmobileBench.ready || window.kdmobileBench.error)",
                    timeout=READY_TIMEOUT_MS,
                )
                err = page.evaluate("() => window.kdmobileBench.error")
                if err:
                    raise RuntimeError(f"bench page failed to start: {err}")
                for model in models:
                    res = page.evaluate(
                        "p => window.kdmobileBench.prepare(p)",
                        {
                            "model": model,
                            "texts": list(texts),
                            "latencyIndex": int(latency_index),
                            "warmupRuns": int(warmup_runs),
                            "returnIds": bool(return_ids),
                            "reference": ref_b64,
                        },
                    )
                    samples: list[float] = []
                    ratios: list[float] = []
                    ref_medians: list[float] = []
                    n_runs = 0
                    start = time.perf_counter()
                    while True:
                        elapsed = time.perf_counter() - start
                        if n_runs >= min_runs and elapsed >= min_seconds and len(ratios) >= MIN_BLOCKS:
                            break
                        if max_seconds is not None and elapsed >= max_seconds and len(samples) >= 3:
                            break
                        blk = page.evaluate(
                            "p => window.kdmobileBench.timeBlocks(p)",
                            {"seconds": float(call_seconds), "blockSeconds": float(block_seconds)},
                        )
                        samples += blk["samples"]
                        n_runs += int(blk["runs"])
                        ratios += bracketed_ratios(blk["artMedians"], blk["refMedians"]).tolist()
                        ref_medians += blk["refMedians"]
                    page.evaluate("() => window.kdmobileBench.release()")
                    n, cols = int(res["n"]), int(res["cols"])
                    ids = np.asarray(res["ids"], dtype=np.int64).reshape(n, -1) if res.get("ids") else None
                    runs.append(
                        BrowserRun(
                            model=model,
                            requested_threads=int(n_threads),
                            threads=int(res["numThreads"]),
                            cross_origin_isolated=bool(res["crossOriginIsolated"]),
                            load_ms=float(res["loadMs"]),
                            tokenize_ms=float(res["tokenizeMs"]),
                            ids=ids,
                            logits=np.asarray(res["logits"], dtype=np.float32).reshape(n, cols),
                            samples_ms=np.asarray(samples, dtype=np.float64),
                            ratios=np.asarray(ratios, dtype=np.float64),
                            ref_samples_ms=np.asarray(ref_medians, dtype=np.float64),
                            runs_per_sample=n_runs / max(1, len(samples)),
                            runs=n_runs,
                            ort_version=res.get("ortVersion"),
                            user_agent=str(res.get("userAgent")),
                        )
                    )
            except Exception as e:
                if errors:
                    raise RuntimeError(f"{e}; page errors: {' | '.join(errors)}") from e
                raise
            finally:
                page.close()
    return runs, versions


def screenshot(html_file: str | Path, png: str | Path, *, width: int = 1200, height: int = 900) -> Path:
    """Render a local HTML file (e.g. ``report.html``) in headless chromium and save a full-page PNG."""
    html_file, png = Path(html_file).resolve(), Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    with chromium_context() as ctx:
        page = ctx.new_page()
        page.set_viewport_size({"width": width, "height": height})
        page.goto(html_file.as_uri())
        page.wait_for_load_state("load")
        page.screenshot(path=str(png), full_page=True)
        page.close()
    return png
