"""Serve the browser demo locally: 127.0.0.1 only, with the headers multi-threaded wasm needs.

    .venv/bin/python -m kdmobile.serve demo_app --port 8000        # what `make serve` runs
    .venv/bin/python -m kdmobile.serve demo_app --screenshot docs/demo.png   # the README's picture

URL layout (the page uses only these paths, all same-origin, no CDN):

- ``/``             → ``ROOT/`` (``index.html``, ``app.js``, ``tokenizer.js``, ...)
- ``/vendor/ort/``  → ``ROOT/node_modules/onnxruntime-web/dist/`` (pinned by ``package-lock.json``; ``npm ci``)
- ``/models/``      → the web bundle written by ``make demo``: ``--models DIR`` if given, else ``ROOT/models/``
  if it exists (a copied bundle), else ``build/export/onnx-web/bundle/`` under the current directory.

Every response carries ``Cross-Origin-Opener-Policy: same-origin`` and ``Cross-Origin-Embedder-Policy:
require-corp`` (so the page is cross-origin isolated and onnxruntime-web can use threads), ``Cache-Control:
no-cache`` (a new ``make demo`` is picked up on reload) and ``X-Content-Type-Options: nosniff``; ``.wasm``,
``.mjs``, ``.onnx`` and ``.json`` get their proper MIME types. Directory listings, dotfiles and paths that
escape a mount are 404. Tests and the bench harness use :func:`serving` (or :func:`serve`)::

    from kdmobile.serve import serving
    with serving("demo_app", models="build/export/onnx-web/bundle") as url:
        ...  # url == "http://127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.server
import os
import posixpath
import signal
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kdmobile.errors import UsageError

HOST = "127.0.0.1"  # never another interface: the demo is for this machine only
DEFAULT_BUNDLE = Path("build") / "export" / "onnx-web" / "bundle"
ORT_DIST = Path("node_modules") / "onnxruntime-web" / "dist"

HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".ort": "application/octet-stream",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}


def default_models_dir(root: str | os.PathLike[str]) -> Path:
    """Where ``/models/`` points when no directory is given (see the module docstring)."""
    copied = Path(root) / "models"
    return copied if copied.is_dir() else Path.cwd() / DEFAULT_BUNDLE


def _make_handler(mounts: list[tuple[str, Path]]) -> type[http.server.SimpleHTTPRequestHandler]:
    """A request handler serving ``mounts`` (URL prefix → directory, longest prefix first)."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}
        quiet = True

        def translate_path(self, path: str) -> str:
            missing = str(mounts[-1][1] / ".missing")  # never exists: dotfiles are refused below
            try:
                url_path = urllib.parse.unquote(urllib.parse.urlsplit(path).path, errors="strict")
            except UnicodeDecodeError:
                return missing
            if "\x00" in url_path:
                return missing
            mount = next(
                (m for m in mounts if url_path == m[0].rstrip("/") or url_path.startswith(m[0])), None
            )
            if mount is None:
                return missing
            prefix, base = mount
            # normpath folds "..", so nothing above the mount can be named.
            parts = [p for p in posixpath.normpath("/" + url_path[len(prefix) :]).split("/") if p]
            if any(p.startswith(".") or p == ".." for p in parts):
                return missing
            if prefix == "/" and parts[:1] == ["node_modules"]:
                return missing  # only the pinned ORT dist is exposed, under /vendor/ort/
            target = base.joinpath(*parts)
            try:
                resolved = target.resolve()
                if not resolved.is_relative_to(base.resolve()):
                    return missing
            except (OSError, RuntimeError):
                return missing
            return str(target)

        def list_directory(self, path: str | os.PathLike[str]):  # noqa: ANN201 (stdlib signature)
            self.send_error(404, "Not found")
            return None

        def end_headers(self) -> None:
            for k, v in HEADERS.items():
                self.send_header(k, v)
            super().end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
            if not self.quiet:
                super().log_message(format, *args)

    return Handler


def serve(
    root: str | os.PathLike[str],
    port: int = 0,
    *,
    models: str | os.PathLike[str] | None = None,
    quiet: bool = True,
) -> tuple[str, Callable[[], None]]:
    """Start serving ``root`` on 127.0.0.1 in a background thread.

    Args:
        root: the static app directory (``demo_app``).
        port: TCP port; 0 picks a free one.
        models: directory mounted at ``/models/``; default :func:`default_models_dir`. It need not exist
            (the page then says that no model was found).
        quiet: do not log each request to stderr.

    Returns:
        ``(url, stop)``: the base URL without a trailing slash, and a function that stops the server and
        joins its thread (idempotent).

    Raises:
        UsageError: ``root`` is not a directory, or the port is out of range, taken or not allowed.
    """
    if not 0 <= port <= 65535:
        raise UsageError(f"port {port} is out of range: pick one in 1-65535 (or 0 for any free port)")
    root = Path(root).resolve()
    if not root.is_dir():
        raise UsageError(f"app directory not found: {root}")
    models_dir = Path(models).resolve() if models is not None else default_models_dir(root).resolve()
    mounts = sorted(
        [("/", root), ("/vendor/ort/", root / ORT_DIST), ("/models/", models_dir)],
        key=lambda m: len(m[0]),
        reverse=True,
    )
    handler = _make_handler(mounts)
    handler.quiet = quiet
    try:
        server = http.server.ThreadingHTTPServer((HOST, port), handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {HOST} is already in use: pick another (PORT={port + 1} make serve)"
            ) from None
        if e.errno == errno.EACCES:  # ports below 1024 need root on most systems
            raise UsageError(
                f"port {port} on {HOST} is not allowed for this user: pick one above 1023"
            ) from None
        raise
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="kdmobile-serve", daemon=True)
    thread.start()
    url = f"http://{HOST}:{server.server_address[1]}"
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)

    return url, stop


@contextlib.contextmanager
def serving(
    root: str | os.PathLike[str],
    port: int = 0,
    *,
    models: str | os.PathLike[str] | None = None,
    quiet: bool = True,
) -> Iterator[str]:
    """:func:`serve` as a context manager: yields the base URL, stops the server on exit."""
    url, stop = serve(root, port, models=models, quiet=quiet)
    try:
        yield url
    finally:
        stop()


def screenshot(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    models: str | os.PathLike[str] | None = None,
    width: int = 1280,
    height: int = 900,
    sample: int = 0,
    chip: int | None = 0,
    context: Any = None,
) -> Path:
    """Serve the demo, open it in headless Debian chromium, pick a sample, click a chip, save a PNG.

    Args:
        root: the app directory (``demo_app``).
        out: PNG path (written atomically).
        models: the web bundle (default :func:`default_models_dir`).
        width, height: the viewport in CSS pixels (390 x 844 for a phone).
        sample: index of the sample email to pick.
        chip: index of the suggestion to click (fills the reply box), or None.
        context: a Playwright browser context to use (default: a fresh headless chromium).

    Raises:
        UsageError: chromium or Playwright is missing, or the page reports an error (its message is given).
    """
    from kdmobile.harness.browser import BrowserUnavailable, chromium_context
    from kdmobile.io import atomic_path

    out = Path(out)
    try:
        with serving(root, models=models) as url, contextlib.ExitStack() as stack:
            ctx = context if context is not None else stack.enter_context(chromium_context())
            page = ctx.new_page()
            stack.callback(page.close)
            page.set_viewport_size({"width": width, "height": height})
            page.goto(url + "/")
            page.wait_for_function(
                "() => ['ready', 'error'].includes(window.kdmobileDemo && window.kdmobileDemo.state)"
            )
            error = page.evaluate("window.kdmobileDemo.error")
            if error:
                raise UsageError(f"the demo page reports: {error}")
            page.locator("#samples button").nth(sample).click()
            text = page.locator("#email").input_value()
            page.wait_for_function(
                "(t) => window.kdmobileDemo.last && window.kdmobileDemo.last.text === t", arg=text
            )
            if chip is not None:
                page.locator("#chips .chip").nth(chip).click()
                page.wait_for_timeout(1000)  # let the reply box highlight fade
            page.mouse.move(0, 0)
            with atomic_path(out) as tmp:
                page.screenshot(path=str(tmp), type="png")
    except (BrowserUnavailable, ImportError) as e:
        raise UsageError(f"cannot take a screenshot: {e}") from None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kdmobile.serve",
        description="Serve the kdmobile browser demo on 127.0.0.1 with COOP/COEP headers.",
    )
    parser.add_argument("root", nargs="?", default="demo_app", help="app directory (default: demo_app)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 = any free port)")
    parser.add_argument(
        "--models", default=None, help=f"web bundle served at /models/ (default: {DEFAULT_BUNDLE})"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument(
        "--screenshot",
        metavar="PNG",
        default=None,
        help="instead of serving: open the demo in headless chromium, pick the first sample, save a PNG",
    )
    parser.add_argument(
        "--size", default="1280x900", help="viewport for --screenshot, WxH (default 1280x900)"
    )
    args = parser.parse_args(argv)
    try:
        root = Path(args.root)
        if not (root / ORT_DIST / "ort.wasm.min.mjs").is_file():
            raise UsageError(f"onnxruntime-web is not installed in {root / 'node_modules'}: run `make setup`")
        models = Path(args.models) if args.models else default_models_dir(root)
        if args.models and not models.is_dir():
            raise UsageError(f"--models {models}: no such directory")
        if not (models / "meta.json").is_file():
            raise UsageError(f"no model bundle at {models} (meta.json missing): run `make demo` first")
        if args.screenshot:
            try:
                w, h = (int(v) for v in args.size.lower().split("x"))
            except ValueError:
                raise UsageError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 390x844") from None
            path = screenshot(root, args.screenshot, models=models, width=w, height=h)
            print(f"kdmobile demo: screenshot {path}")
            return 0
        url, stop = serve(root, args.port, models=models, quiet=not args.verbose)
    except UsageError as e:
        print(f"kdmobile serve: error: {e}", file=sys.stderr)
        return 2
    print(f"kdmobile demo: {url}/  (models from {models}; Ctrl-C stops)", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())  # `kill PID` stops as cleanly as Ctrl-C
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
