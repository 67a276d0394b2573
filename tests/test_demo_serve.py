"""kdmobile.serve: loopback only, COOP/COEP on every response, right MIME types, nothing outside its mounts.

.venv/bin/python -m pytest tests/test_demo_serve.py -q
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from kdmobile.errors import UsageError
from kdmobile.serve import serve, serving

REPO = Path(__file__).resolve().parents[1]


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny app with the same layout as demo_app (index, module, vendored ORT dist) and a bundle dir."""
    root = tmp_path / "app"
    dist = root / "node_modules" / "onnxruntime-web" / "dist"
    dist.mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>t</title>")
    (root / "app.mjs").write_text("export const x = 1;")
    (root / "data.json").write_text('{"a": 1}')
    (root / ".secret").write_text("no")
    (root / "sub").mkdir()
    (root / "sub" / "a.txt").write_text("a")
    (dist / "ort.wasm.min.mjs").write_text("export {};")
    (dist / "ort-wasm-simd-threaded.wasm").write_bytes(b"\0asm\1\0\0\0")
    models = tmp_path / "bundle"
    models.mkdir()
    (models / "model_fp32.onnx").write_bytes(b"\x08\x07")
    (models / "meta.json").write_text("{}")
    (tmp_path / "outside.txt").write_text("outside")
    return root, models


def test_headers_and_mime_types(site):
    root, models = site
    with serving(root, models=models) as url:
        assert url.startswith("http://127.0.0.1:")
        cases = {
            "/": "text/html",
            "/index.html": "text/html",
            "/app.mjs": "text/javascript",
            "/data.json": "application/json",
            "/vendor/ort/ort.wasm.min.mjs": "text/javascript",
            "/vendor/ort/ort-wasm-simd-threaded.wasm": "application/wasm",
            "/models/model_fp32.onnx": "application/octet-stream",
            "/models/meta.json": "application/json",
        }
        for path, mime in cases.items():
            status, headers, body = _get(url + path)
            assert status == 200, path
            assert headers["content-type"].split(";")[0] == mime, path
            assert headers["cross-origin-opener-policy"] == "same-origin", path
            assert headers["cross-origin-embedder-policy"] == "require-corp", path
        assert _get(url + "/models/model_fp32.onnx")[2] == b"\x08\x07"
        assert _get(url + "/vendor/ort/ort-wasm-simd-threaded.wasm")[2] == b"\0asm\1\0\0\0"


def test_nothing_outside_the_mounts_is_served(site):
    root, models = site
    with serving(root, models=models) as url:
        for path in [
            "/../outside.txt",
            "/%2e%2e/outside.txt",
            "/models/%2e%2e/outside.txt",
            "/models/..%2f..%2foutside.txt",
            "/.secret",
            "/sub/",  # no directory listings
            "/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs",  # only via /vendor/ort/
            "/vendor/ort/../../../index.html",
            "/index.html%00.png",
        ]:
            status, headers, body = _get(url + path)
            assert status == 404, (path, status, body[:80])
            assert b"outside" not in body and b"no" != body
            assert headers["cross-origin-embedder-policy"] == "require-corp"  # errors too


def test_binds_loopback_only_and_stop_releases_the_port(site):
    root, models = site
    url, stop = serve(root, models=models)
    port = int(url.rsplit(":", 1)[1])
    try:
        # The listening socket is bound to the loopback address, not 0.0.0.0 or another interface.
        listening = [
            c.laddr.ip
            for c in psutil.net_connections(kind="tcp")
            if c.status == "LISTEN" and c.laddr.port == port
        ]
        assert listening == ["127.0.0.1"]
        with pytest.raises(UsageError, match="already in use"):
            serve(root, port, models=models)
    finally:
        stop()
        stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    url2, stop2 = serve(root, port, models=models)  # the port is free again
    stop2()


def test_bad_root_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="app directory not found"):
        serve(tmp_path / "nope")


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kdmobile.serve", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_explains_a_missing_bundle_or_runtime(site, tmp_path):
    root, models = site
    p = _cli(str(root), "--port", "0", "--models", str(tmp_path / "nope"), cwd=tmp_path)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "--models" in err and "no such directory" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    p = _cli(str(root), "--port", "0", "--models", str(empty), cwd=tmp_path)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "make demo" in err
    # Default models dir: build/export/onnx-web/bundle under the working directory.
    p = _cli(str(root), "--port", "0", cwd=tmp_path)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "build/export/onnx-web/bundle" in err
    (root / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs").unlink()
    p = _cli(str(root), "--port", "0", "--models", str(models), cwd=tmp_path)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "make setup" in err


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_cli_port_out_of_range_is_exit_2(site, tmp_path, port):
    root, models = site
    p = _cli(str(root), "--port", port, "--models", str(models), cwd=tmp_path)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2, err
    assert f"port {port} is out of range" in err and "1-65535" in err and "Traceback" not in err


def test_cli_port_in_use_is_exit_2(site, tmp_path):
    root, models = site
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = _cli(str(root), "--port", str(port), "--models", str(models), cwd=tmp_path)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 2, err
    assert f"port {port} on 127.0.0.1 is already in use" in err and "Traceback" not in err


def test_cli_prints_the_url_and_serves_the_bundle(site, tmp_path):
    root, models = site
    bundle = tmp_path / "build" / "export" / "onnx-web" / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "meta.json").write_text(json.dumps({"where": "default"}))
    p = _cli(str(root), "--port", "0", cwd=tmp_path)
    try:
        line = p.stdout.readline()
        assert line.startswith("kdmobile demo: http://127.0.0.1:"), line + (
            p.stderr.read() if p.poll() else ""
        )
        url = line.split()[2].rstrip("/")
        deadline = time.monotonic() + 10
        while True:
            try:
                status, headers, body = _get(url + "/models/meta.json")
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert status == 200 and json.loads(body) == {"where": "default"}
        assert headers["cross-origin-opener-policy"] == "same-origin"
    finally:
        p.terminate()
        rc = p.wait(timeout=10)
    assert rc == 0, "SIGTERM should stop the server cleanly"
