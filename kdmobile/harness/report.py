"""The bench report: one versioned JSON, a Markdown table and a self-contained HTML page with a plot.

    kdmobile bench build/export --task email --data heldout -o build/report
    # -> build/report/report.json, report.md, report.html

``report.json`` (``schema: "kdmobile.report"``, ``schema_version`` below) holds:

- ``machine`` (CPU model, cores, ``machine_class``, the same-run matmul rate), ``versions`` (every runtime),
  ``settings`` (threads, measurement window, the same-run reference);
- ``teacher`` and ``student`` (the eager PyTorch student): entries like the artifacts', the teacher's with a
  ``server_batch`` measurement too;
- ``artifacts``: one entry per exported artifact and per in-browser run, each with at least ``id``,
  ``target``, ``precision``, ``runtime``, ``status``, ``reason``, ``size_bytes``, ``latency_ms``
  (``p50``/``p90``/``p99``/``mean``/``std``), ``speedup_vs_teacher``, ``top1``, ``recall_at_3``,
  ``retention``, ``teacher_agreement``, and what ``kdmobile check`` tests statistically: the per-block
  same-run ``ratio_samples`` (with ``ratio_reference`` naming the reference) and the per-example
  ``outcomes`` (``{"n", "eval_fingerprint", "top1": "0110…", "recall_at_3", "teacher_agreement",
  "top1_class": [...]}``, example ``i`` at position ``i`` of the evaluation set).

``report.md`` and ``report.html`` are rendered from the JSON alone (``render_markdown``, ``render_html``),
so a report can be re-rendered or compared later without re-measuring.
"""

from __future__ import annotations

import functools
import html
import json
import math
from pathlib import Path
from typing import Any

from kdmobile.errors import UsageError
from kdmobile.io import write_json, write_text

SCHEMA = "kdmobile.report"
SCHEMA_VERSION = 1

# Every entry carries every one of these keys (None when it does not apply); see ``new_entry``.
ENTRY_KEYS = (
    "id",
    "kind",  # "teacher" | "student" | "artifact" | "browser"
    "target",
    "precision",
    "runtime",
    "runtime_version",
    "flavour",
    "status",
    "reason",
    "path",
    "size_bytes",
    "threads",
    "batch",
    "load_ms",
    "latency_ms",
    "ratio_to_reference",
    "ratio_to_teacher",
    "ratio_to_student",
    "speedup_vs_teacher",
    "speedup_vs_student",
    "flops",
    "compute_floor_ms",
    "p50_over_floor",
    "peak_memory_bytes",
    "top1",
    "recall_at_3",
    "teacher_agreement",
    "retention",
    "n_examples",
    "outcomes",  # per-example results for the paired accuracy test (see kdmobile.harness.bench)
    "ratio_reference",  # what the latency ratios divide by (ratios to different references don't compare)
    "measurement",
    "samples_ms",
    "ratio_samples",
    "details",
)
LATENCY_KEYS = ("p50", "p90", "p99", "mean", "std")
OK_STATUSES = ("ok", "conversion_validated")
PRECISION_ORDER = ("fp32", "fp16", "int8", "int8-full")


def new_entry(**fields: Any) -> dict[str, Any]:
    """An entry with every key of ``ENTRY_KEYS`` (unknown keys are an error: the schema is fixed)."""
    unknown = set(fields) - set(ENTRY_KEYS)
    if unknown:
        raise KeyError(f"unknown report entry keys: {', '.join(sorted(unknown))}")
    entry: dict[str, Any] = dict.fromkeys(ENTRY_KEYS)
    entry.update(fields)
    entry["details"] = entry["details"] or {}
    return entry


def entry_id(
    target: str, precision: str, runtime: str, threads: int | None = None, kind: str = "artifact"
) -> str:
    """Stable key of an entry across runs (``kdmobile check`` matches baseline and report on it)."""
    if kind == "browser":
        return f"{target}/{precision}/browser-{threads}t"
    return f"{target}/{precision}/{runtime}"


def all_entries(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Teacher, eager student, then the artifacts and browser runs, in report order."""
    out = [e for e in (report.get("teacher"), report.get("student")) if e]
    return out + list(report.get("artifacts", []))


@functools.cache
def target_facts() -> dict[str, tuple[int, str]]:
    """``{target name: (report_order, colour)}`` from the registered ``Target`` classes."""
    from kdmobile.export import discover

    registry = discover()
    return {n: (registry.get(n).report_order, registry.get(n).colour) for n in registry.names()}


def sort_key(entry: dict[str, Any]) -> tuple[Any, ...]:
    kinds = {"teacher": 0, "student": 1, "artifact": 2, "browser": 3}
    t = entry.get("target") or ""
    p = entry.get("precision") or ""
    return (
        kinds.get(entry.get("kind"), 9),
        target_facts().get(t, (1000, ""))[0],
        t,
        PRECISION_ORDER.index(p) if p in PRECISION_ORDER else len(PRECISION_ORDER),
        entry.get("threads") or 0,
    )


# Entry fields that must be a finite number or null (NaN/inf would make every comparison false).
NUMBER_KEYS = (
    "size_bytes", "load_ms", "ratio_to_reference", "ratio_to_teacher", "ratio_to_student",
    "speedup_vs_teacher", "speedup_vs_student", "flops", "compute_floor_ms", "p50_over_floor",
    "peak_memory_bytes", "top1", "recall_at_3", "teacher_agreement", "retention", "n_examples", "threads",
    "batch",
)  # fmt: skip
STRING_KEYS = ("id", "target", "precision", "runtime", "status")
METRIC_KEYS = ("top1", "recall_at_3", "teacher_agreement", "retention")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _validate_entry(e: Any, i: int, where: str) -> None:
    def bad(msg: str) -> UsageError:
        name = e.get("id") if isinstance(e, dict) and isinstance(e.get("id"), str) else f"entry {i}"
        return UsageError(f"{where}: {name}: {msg}")

    if not isinstance(e, dict):
        raise UsageError(f"{where}: entry {i} is not a JSON object")
    missing = [k for k in STRING_KEYS if k not in e]
    if missing:
        raise bad(f"lacks {', '.join(missing)}")
    for k in STRING_KEYS:
        if not isinstance(e[k], str):
            raise bad(f"{k} must be a string, got {e[k]!r}")
    for k in NUMBER_KEYS:
        if e.get(k) is not None and not _finite(e[k]):
            raise bad(f"{k} must be a finite number or null, got {e[k]!r}")
    lat = e.get("latency_ms")
    if lat is not None:
        if not isinstance(lat, dict) or not all(_finite(lat.get(k)) for k in LATENCY_KEYS):
            raise bad(f"latency_ms must hold finite {', '.join(LATENCY_KEYS)}, got {lat!r}")
    samples = e.get("ratio_samples")
    if samples is not None and (
        not isinstance(samples, list) or not all(_finite(v) and v > 0 for v in samples)
    ):
        raise bad("ratio_samples must be a list of finite positive numbers")


def _validate_baseline(report: dict[str, Any], where: str) -> None:
    """What a baseline must hold for ``kdmobile check`` to judge against it."""
    arts = report["artifacts"]
    if not arts:
        raise UsageError(
            f"{where}: a baseline with no artifact entries checks nothing; make it from a bench report of an "
            "export that has artifacts (`kdmobile baseline update REPORT -o FILE`)"
        )
    measured = [e for e in arts if e["status"] == "ok"]
    for e in measured:
        if e.get("latency_ms") is None:
            raise UsageError(f"{where}: {e['id']}: status ok but latency_ms is null")
        if not e.get("ratio_samples"):
            raise UsageError(
                f"{where}: {e['id']}: status ok but no ratio_samples: the latency check needs the per-run "
                "same-run ratios (rebuild the baseline with `kdmobile baseline update`)"
            )
    for k in METRIC_KEYS:
        have = [e["id"] for e in measured if e.get(k) is not None]
        lack = [e["id"] for e in measured if e.get(k) is None]
        if have and lack:
            raise UsageError(f"{where}: {lack[0]}: {k} is null while {have[0]} has it")


def validate_report(report: Any, where: str = "report") -> dict[str, Any]:
    """Check the schema of a loaded report or baseline; a clear ``UsageError`` names what is wrong."""
    if not isinstance(report, dict):
        raise UsageError(f"{where}: expected a JSON object")
    schema = report.get("schema")
    if schema not in (SCHEMA, "kdmobile.baseline"):
        raise UsageError(
            f"{where}: not a kdmobile report or baseline (schema {schema!r}); "
            "make one with `kdmobile bench` or `kdmobile baseline update`"
        )
    version = report.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UsageError(
            f"{where}: schema_version {version!r} is not supported (this kdmobile reads {SCHEMA_VERSION}); "
            "re-run `kdmobile bench` / `kdmobile baseline update` with this version"
        )
    for key in ("machine", "versions", "artifacts"):
        if key not in report:
            raise UsageError(f"{where}: missing {key!r}")
    for key in ("machine", "versions"):
        if not isinstance(report[key], dict):
            raise UsageError(f"{where}: {key!r} must be a JSON object")
    if not isinstance(report["artifacts"], list):
        raise UsageError(f"{where}: 'artifacts' must be a list")
    for key in ("teacher", "student"):
        if report.get(key) is not None and not isinstance(report[key], dict):
            raise UsageError(f"{where}: {key!r} must be an entry object or null")
    seen: set[str] = set()
    for i, e in enumerate(all_entries(report)):
        _validate_entry(e, i, where)
        if e["id"] in seen:
            raise UsageError(f"{where}: entry id {e['id']!r} appears twice; entries are matched on it")
        seen.add(e["id"])
    if schema == "kdmobile.baseline":
        _validate_baseline(report, where)
    return report


def read_report(path: str | Path) -> dict[str, Any]:
    """Load and validate a ``report.json`` or a baseline file."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise UsageError(f"report not found: {path} (run `kdmobile bench ... -o DIR` first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not valid JSON: {e}") from None
    return validate_report(data, str(path))


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``out_dir`` (atomically)."""
    validate_report(report)
    out_dir = Path(out_dir)
    return {
        "json": write_json(out_dir / "report.json", report),
        "md": write_text(out_dir / "report.md", render_markdown(report)),
        "html": write_text(out_dir / "report.html", render_html(report)),
    }


# --- formatting helpers --------------------------------------------------------------------------------


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "–"
    if x < 1:
        return f"{x * 1000:.3g} µs"
    return f"{x:.3g} ms"


def fmt_pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3g}×" if x < 100 else f"{x:,.0f}×"


def fmt_num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def runtime_label(entry: dict[str, Any]) -> str:
    rt = entry.get("runtime") or "?"
    if entry.get("kind") == "browser":
        t = entry.get("threads")
        rt = f"{rt}, {t} thread{'s' if t != 1 else ''}"
    return rt


def display_name(entry: dict[str, Any]) -> str:
    kind = entry.get("kind")
    if kind == "teacher":
        return "teacher"
    if kind == "student":
        return "eager student"
    name = f"{entry.get('target')} {entry.get('precision')}"
    if kind == "browser":
        name += f" · browser {entry.get('threads')}t"
    return name


# --- Markdown -----------------------------------------------------------------------------------------


def _row_name(entry: dict[str, Any]) -> str:
    kind = entry.get("kind")
    return {"teacher": "teacher (server)", "student": "eager student"}.get(kind) or entry.get("target") or "?"


def _table_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for e in sorted(all_entries(report), key=sort_key):
        lat = e.get("latency_ms") or {}
        status = e.get("status") or "?"
        rows.append(
            [
                _row_name(e),
                e.get("precision") or "–",
                runtime_label(e),
                fmt_bytes(e.get("size_bytes")),
                f"{fmt_ms(lat.get('p50'))} / {fmt_ms(lat.get('p90'))}" if lat else "–",
                fmt_ratio(e.get("speedup_vs_teacher")),
                fmt_pct(e.get("top1")),
                fmt_num(e.get("retention")),
                fmt_pct(e.get("teacher_agreement")),
                status if status == "ok" else f"**{status}**",
            ]
        )
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: one table (target × precision × runtime), the machine, the versions, the notes."""
    m = report["machine"]
    s = report.get("settings", {})
    head = [
        "target",
        "precision",
        "runtime",
        "size",
        "p50 / p90",
        "speed-up vs teacher",
        "top-1",
        "retention",
        "agreement",
        "status",
    ]
    lines = [
        f"# kdmobile bench: {report.get('task', '?')} on {report.get('data', '?')} "
        f"({report.get('n_examples', '?')} examples)",
        "",
        f"Machine: {m.get('cpu_model')} · {m.get('cores')} cores · class `{m.get('machine_class')}` · "
        f"matmul {m.get('matmul_gflops', 0):.0f} GFLOP/s ({s.get('threads', '?')} thread). "
        f"Batch 1, {s.get('threads', '?')} thread(s) unless stated; latency = the model call only "
        f"(tokenisation excluded). Speed-up = teacher p50 / artifact p50, measured in the same run.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in _table_rows(report)]
    teacher = report.get("teacher") or {}
    sb = teacher.get("details", {}).get("server_batch") if teacher else None
    if sb:
        lines += [
            "",
            f"Teacher at server batch {sb['batch']}: {fmt_ms(sb['latency_ms']['p50'])} per batch "
            f"= {fmt_ms(sb['per_example_ms'])} per example.",
        ]
    if report.get("goals"):
        lines += ["", "## Goals", ""]
        lines += [
            f"- {'met' if g['ok'] else '**NOT MET**'}: {g['goal']} ({g['detail']})" for g in report["goals"]
        ]
    notes = [e for e in sorted(all_entries(report), key=sort_key) if e.get("reason")]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **{display_name(e)}** ({e['status']}): {e['reason']}" for e in notes]
    lines += [
        "",
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in sorted(report.get("versions", {}).items())),
        "",
    ]
    return "\n".join(lines)


# --- HTML + SVG ----------------------------------------------------------------------------------------

PALETTE = {"teacher": "#444444", "student": "#8c6d31"}  # targets carry their own ``colour``
OTHER_COLOUR = "#17becf"


def colour_of(key: str) -> str:
    """The plot colour of ``teacher``, ``student`` or a target name."""
    return PALETTE.get(key) or target_facts().get(key, (0, OTHER_COLOUR))[1]


def _colour(entry: dict[str, Any]) -> str:
    return colour_of(entry["kind"] if entry["kind"] in ("teacher", "student") else entry.get("target") or "")


def plot_points(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries that can be plotted: measured latency and top-1 (others are listed under the plot)."""
    pts = []
    for e in sorted(all_entries(report), key=sort_key):
        lat = e.get("latency_ms") or {}
        if e.get("status") == "ok" and lat.get("p50") and e.get("top1") is not None:
            pts.append(
                {
                    "label": display_name(e),
                    "x": float(lat["p50"]),
                    "y": float(e["top1"]),
                    "size": float(e.get("size_bytes") or 0),
                    "colour": _colour(e),
                    "hollow": e["kind"] == "browser",
                    "entry": e,
                }
            )
    return pts


def place_labels(
    items: list[tuple[tuple[float, float, float], str]],
    circles: list[tuple[float, float, float]],
    bounds: tuple[float, float, float, float],
    char_w: float = 6.6,
    line_h: float = 15.0,
) -> list[tuple[float, float, float, float]]:
    """Greedy label placement: for each ``((x, y, r), text)`` the first candidate box (x, y, w, h) that
    overlaps no placed label, no marker and stays inside ``bounds``; else the least-overlapping one."""
    x0, y0, x1, y1 = bounds
    placed: list[tuple[float, float, float, float]] = []

    def overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
        w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
        h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
        return max(0.0, w) * max(0.0, h)

    def cost(box: tuple[float, float, float, float], own: int) -> float:
        c = sum(overlap(box, o) for o in placed) * 10
        for j, (cx, cy, cr) in enumerate(circles):
            if j != own:
                c += overlap(box, (cx - cr, cy - cr, 2 * cr, 2 * cr)) * 0.5
        outside = (box[0] < x0) or (box[1] < y0) or (box[0] + box[2] > x1 + 190) or (box[1] + box[3] > y1)
        return c + (1e6 if outside else 0.0)

    order = sorted(range(len(items)), key=lambda i: (items[i][0][0], items[i][0][1]))
    out: list[tuple[float, float, float, float] | None] = [None] * len(items)
    for i in order:
        (x, y, r), text = items[i]
        w, h = char_w * len(text) + 4, line_h
        cands = [
            (x + r + 4, y - h / 2),
            (x - r - 4 - w, y - h / 2),
            (x - w / 2, y - r - 2 - h),
            (x - w / 2, y + r + 2),
        ]
        for step in range(1, 9):
            d = step * line_h
            cands += [(x + r + 4, y - h / 2 + d), (x + r + 4, y - h / 2 - d)]
            cands += [(x - r - 4 - w, y - h / 2 + d), (x - r - 4 - w, y - h / 2 - d)]
        best, best_cost = None, math.inf
        for cx, cy in cands:
            box = (cx, cy, w, h)
            c = cost(box, i)
            if c == 0:
                best = box
                break
            if c < best_cost:
                best, best_cost = box, c
        assert best is not None
        placed.append(best)
        out[i] = best
    return [b for b in out if b is not None]


def render_svg(report: dict[str, Any], width: int = 900, height: int = 520) -> str:
    """Latency (p50, log scale) vs top-1; marker area proportional to the artifact's size."""
    pts = plot_points(report)
    left, right, top, bottom = 70, 200, 30, 60
    pw, ph = width - left - right, height - top - bottom
    esc = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'font-family="system-ui, sans-serif" font-size="12" role="img" '
        'aria-label="Latency versus top-1 accuracy; marker area is the artifact size">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
    ]
    if not pts:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no measured entries</text></svg>'
        )
        return "".join(parts)
    xs = [math.log10(p["x"]) for p in pts]
    x_lo, x_hi = math.floor(min(xs) * 2) / 2, math.ceil(max(xs) * 2) / 2
    if x_hi - x_lo < 1:
        x_hi = x_lo + 1
    ys = [p["y"] for p in pts]
    y_lo = max(0.0, math.floor((min(ys) - 0.02) * 20) / 20)
    y_hi = min(1.0, math.ceil((max(ys) + 0.02) * 20) / 20)
    if y_hi - y_lo < 0.1:
        y_lo = max(0.0, y_hi - 0.1)

    def px(v: float) -> float:
        return left + (math.log10(v) - x_lo) / (x_hi - x_lo) * pw

    def py(v: float) -> float:
        return top + (1 - (v - y_lo) / (y_hi - y_lo)) * ph

    # Grid and axes: decades (and 2x, 5x) on x, 5-point steps on y.
    decade = math.floor(x_lo)
    while decade <= x_hi:
        for mult in (1, 2, 5):
            v = mult * 10.0**decade
            if x_lo <= math.log10(v) <= x_hi:
                x = px(v)
                parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#e5e5e5"/>')
                parts.append(
                    f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle" fill="#555">{esc(fmt_ms(v))}</text>'
                )
        decade += 1
    step = 0.05 if y_hi - y_lo > 0.2 else 0.02
    v = math.ceil(y_lo / step) * step
    while v <= y_hi + 1e-9:
        y = py(v)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(
            f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{100 * v:.0f}%</text>'
        )
        v += step
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 15}" text-anchor="middle" font-size="13">'
        "latency per inference, p50, batch 1 (log scale) — left is faster</text>"
    )
    parts.append(
        f'<text transform="translate(18 {top + ph / 2}) rotate(-90)" text-anchor="middle" font-size="13">'
        "top-1 on the held-out set — up is better</text>"
    )
    # Marker area ∝ size: the largest entry gets radius 34 px; a floor keeps tiny ones visible.
    max_size = max(p["size"] for p in pts) or 1.0
    for p in sorted(pts, key=lambda p: -p["size"]):  # big ones first so small ones stay on top
        r = max(3.0, 34.0 * math.sqrt(p["size"] / max_size))
        x, y = px(p["x"]), py(p["y"])
        fill = "none" if p["hollow"] else p["colour"]
        dash = ' stroke-dasharray="4 2"' if p["hollow"] else ""
        e = p["entry"]
        title = (
            f"{p['label']}: p50 {fmt_ms(p['x'])}, top-1 {fmt_pct(p['y'])}, size {fmt_bytes(p['size'])}, "
            f"speed-up vs teacher {fmt_ratio(e.get('speedup_vs_teacher'))}"
        )
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{fill}" fill-opacity="0.35" '
            f'stroke="{p["colour"]}" stroke-width="2"{dash}><title>{esc(title)}</title></circle>'
        )
        p["_xy"] = (x, y, r)
    # Labels: the first free spot around each marker (right, left, above, below, then further out),
    # avoiding other labels, other markers and the plot's edges; a leader line when placed away.
    circles = [p["_xy"] for p in pts]
    boxes = place_labels([(p["_xy"], p["label"]) for p in pts], circles, (left, top, left + pw, top + ph))
    for p, (bx, by, bw, bh) in zip(pts, boxes, strict=True):
        x, y, r = p["_xy"]
        cx, cy = min(max(x, bx), bx + bw), min(max(y, by), by + bh)  # nearest point of the box
        if math.hypot(cx - x, cy - y) > r + 8:
            parts.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{cx:.1f}" y2="{cy:.1f}" stroke="#aaa"/>')
        parts.append(
            f'<text x="{bx:.1f}" y="{by + bh - 3:.1f}" fill="{p["colour"]}">{esc(p["label"])}</text>'
        )
    # Legend: colours by target; hollow dashed = in-browser run.
    lx, ly = left + pw + 20, top + 10
    seen = []
    for p in pts:
        e = p["entry"]
        key = e["kind"] if e["kind"] in ("teacher", "student") else e["target"]
        if key not in seen:
            seen.append(key)
    for key in seen:
        colour = colour_of(key)
        name = {"teacher": "teacher (PyTorch)", "student": "eager student (PyTorch)"}.get(key, key)
        parts.append(
            f'<circle cx="{lx + 6}" cy="{ly}" r="6" fill="{colour}" fill-opacity="0.35" stroke="{colour}"/>'
        )
        parts.append(f'<text x="{lx + 18}" y="{ly + 4}">{esc(name)}</text>')
        ly += 20
    if any(p["hollow"] for p in pts):
        parts.append(
            f'<circle cx="{lx + 6}" cy="{ly}" r="6" fill="none" stroke="#666" stroke-width="2" stroke-dasharray="4 2"/>'
        )
        parts.append(f'<text x="{lx + 18}" y="{ly + 4}">in the browser (wasm)</text>')
        ly += 20
    parts.append(f'<text x="{lx}" y="{ly + 10}" fill="#555">marker area = size</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_speedup_svg(report: dict[str, Any], width: int = 900, mark: float = 20.0) -> str:
    """Horizontal bars: each measured entry's speed-up over the teacher at batch 1 (log scale)."""
    rows = [
        e
        for e in sorted(all_entries(report), key=sort_key)
        if e["kind"] != "teacher" and e.get("status") == "ok" and e.get("speedup_vs_teacher")
    ]
    if not rows:
        return ""
    esc = html.escape
    left, right, top, row_h = 230, 90, 28, 22
    height = top + row_h * len(rows) + 36
    pw = width - left - right
    hi = math.ceil(math.log10(max(max(e["speedup_vs_teacher"] for e in rows), mark * 1.5)))
    lo = min(0, math.floor(math.log10(min(e["speedup_vs_teacher"] for e in rows))))

    def px(v: float) -> float:
        return left + (math.log10(max(v, 10.0**lo)) - lo) / (hi - lo) * pw

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'font-family="system-ui, sans-serif" font-size="12" role="img" aria-label="Speed-up over the teacher">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="16" font-size="13">speed-up over the teacher, batch 1, same run (log scale)</text>',
    ]
    for d in range(lo, hi + 1):
        x = px(10.0**d)
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 30}" stroke="#e5e5e5"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{height - 14}" text-anchor="middle" fill="#555">{10**d:,}×</text>'
        )
    for i, e in enumerate(rows):
        y = top + i * row_h
        v = e["speedup_vs_teacher"]
        colour = _colour(e)
        hollow = e["kind"] == "browser"
        dash = ' stroke-dasharray="4 2"' if hollow else ""
        parts.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">{esc(display_name(e))}</text>')
        parts.append(
            f'<rect x="{px(10.0**lo):.1f}" y="{y + 3}" width="{max(1.0, px(v) - px(10.0**lo)):.1f}" height="{row_h - 7}" '
            f'fill="{"white" if hollow else colour}" fill-opacity="0.55" stroke="{colour}"{dash}>'
            f"<title>{esc(fmt_ratio(v))}</title></rect>"
        )
        parts.append(f'<text x="{px(v) + 6:.1f}" y="{y + 14}" fill="#333">{esc(fmt_ratio(v))}</text>')
    x = px(mark)
    parts.append(
        f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 30}" stroke="#b00020" stroke-dasharray="5 3"/>'
    )
    parts.append(f'<text x="{x + 4:.1f}" y="{height - 32}" fill="#b00020">{mark:g}×</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} .sub{color:#555;margin-top:0}
table{border-collapse:collapse;font-size:12px;margin-top:12px;width:100%} th,td{padding:4px 6px;border-bottom:1px solid #ddd}
th{text-align:left;background:#f6f6f6} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
svg{display:block;max-width:100%;height:auto;margin:8px 0}
.bad{color:#b00020;font-weight:600} .ok{color:#1b7a1b} .cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{border:1px solid #ddd;border-radius:8px;padding:8px 12px;min-width:150px}
.card b{display:block;font-size:20px} .card span{color:#555;font-size:12px} .small{color:#555;font-size:12px}
"""


def _pareto_section(report: dict[str, Any]) -> str:
    """The compression table and size-vs-accuracy plot, when ``kdmobile compress pareto --report`` added them."""
    if not isinstance(report.get("pareto"), dict):
        return ""
    from kdmobile.compress.pareto import render_html_section

    return render_html_section(report["pareto"])


def render_html(report: dict[str, Any]) -> str:
    """``report.html``: headline figures, the latency-vs-accuracy plot, the table; no external resource."""
    esc = html.escape
    m = report["machine"]
    entries = sorted(all_entries(report), key=sort_key)
    teacher = report.get("teacher") or {}
    measured = [e for e in entries if e["kind"] in ("artifact", "browser") and e.get("status") == "ok"]
    cards = []
    if measured:
        fastest = max(measured, key=lambda e: e.get("speedup_vs_teacher") or 0)
        cards.append(
            (fmt_ratio(fastest.get("speedup_vs_teacher")), f"fastest vs teacher: {display_name(fastest)}")
        )
        rets = [e["retention"] for e in measured if e.get("retention") is not None]
        if rets:
            cards.append((f"{min(rets):.3f}", "lowest retention (student top-1 / teacher top-1)"))
        smallest = min(
            (e for e in measured if e.get("size_bytes")), key=lambda e: e["size_bytes"], default=None
        )
        if smallest:
            cards.append((fmt_bytes(smallest["size_bytes"]), f"smallest: {display_name(smallest)}"))
    if teacher.get("top1") is not None:
        cards.append(
            (
                fmt_pct(teacher["top1"]),
                f"teacher top-1, p50 {fmt_ms((teacher.get('latency_ms') or {}).get('p50'))}",
            )
        )
    failed = [e for e in entries if e.get("status") not in OK_STATUSES]
    cards.append((str(len(failed)), "entries not ok"))

    head = [
        "target",
        "precision",
        "runtime",
        "size",
        "p50",
        "p90",
        "p99",
        "× teacher",
        "load",
        "peak mem",
        "top-1",
        "recall@3",
        "retention",
        "agreement",
        "status",
    ]
    rows = []
    for e in entries:
        lat = e.get("latency_ms") or {}
        status = e.get("status") or "?"
        cls = "ok" if status == "ok" else ("" if status == "conversion_validated" else "bad")
        cells = [
            esc(_row_name(e)),
            esc(e.get("precision") or "–"),
            esc(runtime_label(e)),
            fmt_bytes(e.get("size_bytes")),
            fmt_ms(lat.get("p50")),
            fmt_ms(lat.get("p90")),
            fmt_ms(lat.get("p99")),
            fmt_ratio(e.get("speedup_vs_teacher")),
            fmt_ms(e.get("load_ms")),
            fmt_bytes(e.get("peak_memory_bytes")),
            fmt_pct(e.get("top1")),
            fmt_pct(e.get("recall_at_3")),
            fmt_num(e.get("retention")),
            fmt_pct(e.get("teacher_agreement")),
        ]
        tds = "".join(f'<td class="num">{c}</td>' if i >= 3 else f"<td>{c}</td>" for i, c in enumerate(cells))
        title = f' title="{esc(e["reason"])}"' if e.get("reason") else ""
        rows.append(f'<tr>{tds}<td class="{cls}"{title}>{esc(status)}</td></tr>')
    goal_items = "".join(
        f'<li><span class="{"ok" if g["ok"] else "bad"}">{"met" if g["ok"] else "NOT MET"}</span> '
        f'{esc(g["goal"])} <span class="small">({esc(g["detail"])})</span></li>'
        for g in report.get("goals") or []
    )
    notes = "".join(
        f"<li><b>{esc(display_name(e))}</b> ({esc(e['status'])}): {esc(e['reason'])}</li>"
        for e in entries
        if e.get("reason")
    )
    versions = ", ".join(f"{esc(k)} {esc(str(v))}" for k, v in sorted(report.get("versions", {}).items()))
    card_html = "".join(f'<div class="card"><b>{esc(v)}</b><span>{esc(t)}</span></div>' for v, t in cards)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kdmobile bench: {esc(str(report.get("task", "")))}</title>
<style>{_CSS}</style></head><body>
<h1>kdmobile bench — {esc(str(report.get("task", "?")))} on {esc(str(report.get("data", "?")))} ({esc(str(report.get("n_examples", "?")))} examples)</h1>
<p class="sub">{esc(str(m.get("cpu_model")))} · {esc(str(m.get("cores")))} cores · class <code>{esc(str(m.get("machine_class")))}</code> ·
measured {esc(str(report.get("created", "")))}</p>
<div class="cards">{card_html}</div>
{f"<ul>{goal_items}</ul>" if goal_items else ""}
{render_svg(report)}
{render_speedup_svg(report)}
<table><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead><tbody>{"".join(rows)}</tbody></table>
{_pareto_section(report)}
<p class="small">Batch 1, {esc(str(report.get("settings", {}).get("threads", "?")))} thread(s) unless stated; latency is the model
call only. × teacher = teacher p50 / entry p50 in the same run. Load = loading the artifact in a warm runtime; peak mem =
the extra resident memory of loading and running it (its own process). Retention = top-1 / teacher top-1.</p>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<p class="small">Versions: {versions}</p>
</body></html>
"""
