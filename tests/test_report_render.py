"""report.json → report.md / report.html, schema checks, the check/baseline CLI, and a screenshot of the page.

The report is constructed here with known figures; the expected strings are written out by hand.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from kdmobile.cli import main
from kdmobile.errors import UsageError
from kdmobile.harness.report import (
    SCHEMA,
    SCHEMA_VERSION,
    new_entry,
    read_report,
    render_html,
    render_markdown,
    write_report,
)
from kdmobile.harness.stats import pack_bits

OUT = Path(__file__).resolve().parents[1] / "build" / "test-artifacts" / "report"


def _samples(ratio: float, seed: int, n: int = 400) -> list[float]:
    return np.exp(np.random.default_rng(seed).normal(math.log(ratio), 0.03, n)).tolist()


N_EXAMPLES = 500


def _outcomes(top1: float, recall_at_3: float, agreement: float) -> dict:
    """Per-example outcomes with the given means: example i is right iff i < mean x n (so a lower top-1
    loses the last right examples and gains none)."""
    bits = lambda mean: pack_bits(np.arange(N_EXAMPLES) < round(mean * N_EXAMPLES))  # noqa: E731
    return {
        "n": N_EXAMPLES,
        "eval_fingerprint": None,
        "top1": bits(top1),
        "recall_at_3": bits(recall_at_3),
        "teacher_agreement": bits(agreement),
        "top1_class": [0] * N_EXAMPLES,
    }


def _lat(p50: float) -> dict[str, float]:
    return {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.5, "mean": p50 * 1.05, "std": p50 * 0.1}


def make_report(**changes: float) -> dict:
    """A report with a teacher, the eager student, three artifacts, one browser run and a Core ML entry."""
    t50 = 12.0
    teacher = new_entry(
        id="teacher",
        kind="teacher",
        target="server",
        precision="fp32",
        runtime="PyTorch eager",
        status="ok",
        size_bytes=90_868_000,
        latency_ms=_lat(t50),
        top1=0.70,
        recall_at_3=0.90,
        teacher_agreement=1.0,
        retention=1.0,
        speedup_vs_teacher=1.0,
        outcomes=_outcomes(0.70, 0.90, 1.0),
    )
    student = new_entry(
        id="student",
        kind="student",
        target="eager",
        precision="fp32",
        runtime="PyTorch eager",
        status="ok",
        size_bytes=4_300_000,
        latency_ms=_lat(0.034),
        top1=0.68,
        recall_at_3=0.88,
        teacher_agreement=0.85,
        retention=0.68 / 0.70,
        speedup_vs_teacher=t50 / 0.034,
        outcomes=_outcomes(0.68, 0.88, 0.85),
    )

    def art(target, precision, runtime, p50, size, top1, kind="artifact", threads=1, ratio=None):
        return new_entry(
            id=f"{target}/{precision}/{runtime if kind == 'artifact' else f'browser-{threads}t'}",
            kind=kind,
            target=target,
            precision=precision,
            runtime=runtime,
            status="ok",
            threads=threads,
            size_bytes=size,
            latency_ms=_lat(p50),
            speedup_vs_teacher=t50 / p50,
            top1=top1,
            recall_at_3=0.87,
            teacher_agreement=0.84,
            retention=top1 / 0.70,
            ratio_samples=_samples(ratio or p50 / 0.034, hash((target, precision, kind)) % 1000),
            ratio_reference="ref",
            outcomes=_outcomes(top1, 0.87, 0.84),
        )

    arts = [
        art(
            "executorch",
            "fp32",
            "executorch (XNNPACK)",
            0.008 * changes.get("xnn_slowdown", 1.0),
            int(4_300_000 * changes.get("xnn_size", 1.0)),
            0.68,
        ),
        art(
            "tflite",
            "int8",
            "ai-edge-litert interpreter",
            0.006,
            1_100_000,
            0.67 - changes.get("tflite_drop", 0.0),
        ),
        art("onnx-web", "fp32", "onnxruntime (Python, CPU)", 0.011, 4_300_000, 0.68),
        art(
            "onnx-web",
            "fp32",
            "onnxruntime-web (Chromium wasm)",
            0.017,
            4_300_000,
            0.68,
            kind="browser",
            threads=2,
        ),
        new_entry(
            id="coreml/fp32/Core ML",
            kind="artifact",
            target="coreml",
            precision="fp32",
            runtime="Core ML",
            status="conversion_validated",
            reason="Core ML prediction needs macOS",
            size_bytes=4_310_000,
        ),
    ]
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": "2026-01-01T00:00:00Z",
        "task": "email",
        "data": "heldout",
        "n_examples": 320,
        "machine": {
            "cpu_model": "Test CPU",
            "cores": 2,
            "machine_class": "x86_64-test-cpu-2c",
            "matmul_gflops": 100.0,
        },
        "versions": {"torch": "2.13.0", "onnxruntime": "1.32.0", "executorch": "1.5.1"},
        "settings": {"threads": 1},
        "teacher": teacher,
        "student": student,
        "artifacts": arts,
    }


def test_markdown_has_one_row_per_entry_with_the_figures():
    md = render_markdown(make_report())
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 7  # header + teacher, student, 3 artifacts, browser, Core ML
    assert (
        "| teacher (server) | fp32 | PyTorch eager | 90.9 MB | 12 ms / 13.2 ms | 1× | 70.0% | 1.000 | 100.0% | ok |"
        in md
    )
    assert (
        "| executorch | fp32 | executorch (XNNPACK) | 4.3 MB | 8 µs / 8.8 µs | 1,500× | 68.0% | 0.971 | 84.0% | ok |"
        in md
    )
    assert "onnxruntime-web (Chromium wasm), 2 threads" in md
    assert "| coreml | fp32 | Core ML | 4.31 MB | – | – | – | – | – | **conversion_validated** |" in md
    assert "Core ML prediction needs macOS" in md


def test_html_is_self_contained_with_a_plot(tmp_path):
    page = render_html(make_report())
    assert "<svg" in page and page.count("<circle") >= 6  # 6 measured entries (+ legend markers)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert "<script" not in page
    paths = write_report(make_report(), tmp_path)
    assert read_report(paths["json"])["n_examples"] == 320
    assert paths["md"].read_text().startswith("# kdmobile bench")


def test_bad_reports_are_clear_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        read_report(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        read_report(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"schema": "something", "schema_version": 1}))
    with pytest.raises(UsageError, match="not a kdmobile report"):
        read_report(tmp_path / "other.json")
    r = make_report()
    r["schema_version"] = 99
    (tmp_path / "v99.json").write_text(json.dumps(r))
    with pytest.raises(UsageError, match="schema_version 99"):
        read_report(tmp_path / "v99.json")


def test_cli_baseline_update_and_check_exit_codes(tmp_path, capsys):
    write_report(make_report(), tmp_path / "base")
    baseline = tmp_path / "baseline.json"
    assert main(["baseline", "update", str(tmp_path / "base"), "-o", str(baseline)]) == 0
    b = json.loads(baseline.read_text())
    assert b["schema"] == "kdmobile.baseline" and b["machine"]["machine_class"] == "x86_64-test-cpu-2c"
    assert b["versions"]["onnxruntime"] == "1.32.0" and len(b["artifacts"]) == 5

    write_report(make_report(), tmp_path / "same")
    assert main(["check", str(tmp_path / "same"), "--baseline", str(baseline)]) == 0
    assert "no regression" in capsys.readouterr().out

    write_report(make_report(xnn_slowdown=1.6, xnn_size=1.2, tflite_drop=0.02), tmp_path / "worse")
    assert main(["check", str(tmp_path / "worse"), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert "executorch fp32" in out and "latency ratio" in out and "+60" in out
    assert "size" in out and "+20.0%" in out and "-2.00 pt" in out and "10 lost, 0 gained of 500" in out
    # Thresholds from the command line: a 25 % size allowance and a 100 % latency allowance for executorch.
    args = [
        "check",
        str(tmp_path / "worse"),
        "--baseline",
        str(baseline),
        "--size-pct",
        "25",
        "--threshold",
        "executorch.latency_pct=100",
        "--only",
        "executorch/",
    ]
    assert main(args) == 0
    assert main(["check", str(tmp_path / "nope"), "--baseline", str(baseline)]) == 2
    # A baseline from before per-example outcomes: refused (exit 2), with the command that re-takes it.
    old = tmp_path / "old-baseline.json"
    old.write_text(json.dumps({**b, "artifacts": [{**e, "outcomes": None} for e in b["artifacts"]]}))
    capsys.readouterr()
    assert main(["check", str(tmp_path / "same"), "--baseline", str(old)]) == 2
    assert "kdmobile baseline update" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "same"), "--baseline", str(baseline), "--threshold", "bogus=1"]) == 2
    capsys.readouterr()


def _png_pixels(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) into [H, W, C]."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, dtype=np.int32)
        for x in range(stride):
            a = cur[x - channels] if x >= channels else 0
            b = prev[x]
            c = prev[x - channels] if x >= channels else 0
            if f == 0:
                p = 0
            elif f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + p) & 0xFF
        out[y] = cur
        prev = cur
    return out.reshape(height, width, channels)


@pytest.mark.browser
def test_report_html_renders_in_headless_chromium(tmp_path):
    from kdmobile.harness.browser import availability, screenshot

    ok, reason = availability()
    if not ok and shutil.which("chromium") is None:
        pytest.fail(reason)
    paths = write_report(make_report(), tmp_path)
    png = screenshot(paths["html"], OUT / "report.png", width=1000, height=700)
    px = _png_pixels(png)[::4, ::4, :3]  # every 4th pixel is plenty and keeps the pure-Python decode fast
    h, w, _ = px.shape
    assert h * 4 >= 700 and w * 4 >= 1000
    colours = {tuple(c) for c in px.reshape(-1, 3)}
    assert len(colours) > 50, "the page rendered almost blank"
    # The plot is drawn: pixels close to the ExecuTorch blue (#1f77b4) and the ONNX red (#d62728) exist.
    blue = np.abs(px.astype(int) - (0x1F, 0x77, 0xB4)).sum(-1) < 60
    red = np.abs(px.astype(int) - (0xD6, 0x27, 0x28)).sum(-1) < 60
    assert blue.sum() > 5 and red.sum() > 5
    white = (px > 245).all(-1).mean()
    assert 0.3 < white < 0.99


def test_cli_bench_bad_input_is_usage_error(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope")]) == 2
    assert "artifacts directory not found" in capsys.readouterr().err
    (tmp_path / "summary.json").write_text(
        json.dumps({"schema_version": 1, "checkpoint": str(tmp_path / "gone.safetensors"), "results": []})
    )
    assert main(["bench", str(tmp_path), "-o", str(tmp_path / "r")]) == 2
    assert "student checkpoint" in capsys.readouterr().err
    assert main(["bench", str(tmp_path), "--min-runs", "0"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["bench", str(tmp_path), "--browser-threads", "0,x"])
    assert e.value.code == 2
