"""Static checks of demo_app/: no HTML sinks for text, no inline script, no CDN, pinned onnxruntime-web.

    .venv/bin/python -m pytest tests/test_demo_app.py -q

The browser tests (tests/test_demo_browser.py) show the page behaving; these keep the source honest so a
later edit cannot quietly add an ``innerHTML`` or a CDN ``<script>``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "demo_app"
OWN_JS = ["app.js", "tokenizer.js", "wordpiece.js"]  # bench.js/bench.html belong to the bench harness


def test_scripts_never_turn_text_into_html_or_code():
    sinks = re.compile(
        r"\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new Function\s*\("
    )
    for name in OWN_JS:
        src = (DEMO / name).read_text()
        hits = [m.group(0) for m in sinks.finditer(src)]
        assert hits == [], f"{name} uses {hits}: render text with textContent"


def test_index_has_no_inline_code_and_a_strict_csp():
    html = (DEMO / "index.html").read_text()
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None, "inline <script> in index.html"
    assert re.search(r"\son[a-z]+\s*=", html) is None, "inline event handler in index.html"
    assert re.search(r"<style|\sstyle\s*=", html) is None, "inline style in index.html"
    csp = re.search(r'http-equiv="Content-Security-Policy"\s+content="([^"]+)"', html)
    assert csp, "index.html lacks a Content-Security-Policy"
    policy = dict(p.strip().split(" ", 1) for p in csp.group(1).split(";"))
    assert policy["script-src"] == "'self' 'wasm-unsafe-eval'"
    assert policy["default-src"] == "'self'" and policy["object-src"] == "'none'"


def test_no_cdn_or_other_origin_is_referenced():
    url = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}""", re.I)
    for name in [*OWN_JS, "index.html", "style.css"]:
        hits = url.findall((DEMO / name).read_text())
        assert hits == [], f"{name} references another origin: {hits}"
    assert 'from "/vendor/ort/' not in (DEMO / "app.js").read_text()  # loaded lazily, relative to the page
    assert '"./vendor/ort/ort.wasm.min.mjs"' in (DEMO / "app.js").read_text()


def test_onnxruntime_web_is_pinned_exactly_and_locked():
    pkg = json.loads((DEMO / "package.json").read_text())
    lock = json.loads((DEMO / "package-lock.json").read_text())
    pin = pkg["dependencies"]["onnxruntime-web"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pin), f"onnxruntime-web must be an exact version, got {pin!r}"
    assert lock["packages"][""]["dependencies"]["onnxruntime-web"] == pin
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == pin
    installed = DEMO / "node_modules" / "onnxruntime-web" / "package.json"
    assert installed.is_file(), "demo_app/node_modules is missing: run `make setup` (npm ci)"
    assert json.loads(installed.read_text())["version"] == pin
    assert (installed.parent / "dist" / "ort.wasm.min.mjs").is_file()
