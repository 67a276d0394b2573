"""The compression Pareto report: every setting's size, speed and accuracy, measured in one run.

    kdmobile compress pareto --student base=build/email/student.safetensors \\
        --student pruned=build/pruned/student.safetensors --qat base -o build/pareto --report build/report

For each student checkpoint (``--student NAME=PATH``; e.g. the distilled student and a pruned + KD copy)
and each compression setting:

- ``fp32`` and ``int8`` (post-training quantization: whatever ``kdmobile export --precision int8`` keeps,
  its flavour recorded) on every selected target;
- ``int8-qat`` (QAT + KD, ``kdmobile.compress.qat``) for the students named by ``--qat``, on the targets
  that have a QAT quantizer;

it measures, in the same process and the same run:

- parameters of the student, artifact bytes per target (and as a fraction of the teacher's weights);
- p50 latency per target at batch 1 on the task's latency example: the artifacts of one target are timed
  in interleaved, shuffled blocks, so ``x fp32`` (p50 / the p50 of the first student's fp32 artifact on
  that target) is a same-run ratio; the thread's CPU time is recorded beside the wall time, because on a
  shared machine CPU time is what load changes least;
- top-1, recall@3 and teacher agreement of the artifact run in its runtime over the task's whole
  evaluation set, and retention (each divided by the teacher's own top-1 / recall@3 on that set).

Every artifact goes through the export validation gate first (``kdmobile.export``); one that fails is
listed with its status and not measured. Everything task-specific comes through the task seam
(``kdmobile.task.get_task``: the evaluation set and its metrics, the teacher, the export spec), so the
command works for any task that provides them (the tests run it on the ``selftest`` task).

Outputs in ``-o DIR``: ``pareto.json``, ``pareto.md`` (the table), ``pareto.svg`` (artifact bytes vs
top-1 retention, log x axis); with ``--report DIR`` the table and plot are added to that bench report's
``report.json`` / ``report.html`` (section "Compression: size vs accuracy").
"""

from __future__ import annotations

import html
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdmobile.errors import UsageError

SCHEMA = "kdmobile.pareto"
PRECISIONS = ("fp32", "int8")


def parse_students(items: Sequence[str]) -> dict[str, Path]:
    """``["base=a.safetensors", "pruned=b.safetensors"]`` → ordered ``{name: path}``."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(
                f"--student {item!r}: expected NAME=CHECKPOINT, e.g. base=build/email/student.safetensors"
            )
        if name in out:
            raise UsageError(f"--student {name!r} is given twice")
        if not Path(path).is_file():
            raise UsageError(f"--student {item!r}: {path} not found")
        out[name] = Path(path)
    if not out:
        raise UsageError("give at least one --student NAME=CHECKPOINT")
    return out


def safetensors_params(path: str | Path) -> int | None:
    """The number of weights in a ``.safetensors`` file, read from its header (None for other files)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return int(sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__"))


def run(
    students: dict[str, Path],
    out: str | Path,
    *,
    targets: Sequence[str] = ("executorch", "tflite"),
    task: str | None = None,
    qat: Sequence[str] = (),
    qat_epochs: int = 3,
    qat_transfer: int = 8000,
    data: str = "heldout",
    teacher: str | None = None,
    blocks: int = 60,
    calls_per_block: int = 20,
    threads: int = 1,
    seed: int = 0,
    report_dir: str | Path | None = None,
    command: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Export, validate, evaluate and time every setting; write the table, JSON and plot; return the data."""
    import torch

    from kdmobile.checkpoint import load_checkpoint
    from kdmobile.compress.prune import count_params
    from kdmobile.export.discovery import get_target
    from kdmobile.export.runner import export_checkpoint
    from kdmobile.task import get_task

    out = Path(out)
    for name in qat:
        if name not in students:
            raise UsageError(f"--qat {name!r}: not one of the --student names ({', '.join(students)})")
    t_start = time.perf_counter()
    loaded = {name: load_checkpoint(path) for name, path in students.items()}
    first_meta = next(iter(loaded.values()))[1]
    task_name = task or first_meta.get("task")
    if not task_name:
        raise UsageError(f"{next(iter(students.values()))}: the checkpoint names no task: pass --task NAME")
    plugin = get_task(task_name)

    # -- the teacher: its logits on the evaluation set and its server-side accuracy -------------------
    eval_sets = {name: plugin.eval_set(data, meta) for name, (_, meta) in loaded.items()}
    es0 = next(iter(eval_sets.values()))
    teacher_path = teacher or plugin.find_teacher(first_meta, str(next(iter(students.values()))))
    if not teacher_path:
        raise UsageError(
            f"task {task_name!r} found no teacher for {next(iter(students.values()))}: pass --teacher"
        )
    log(f"teacher {teacher_path}: predicting {len(es0)} examples")
    tm = plugin.load_teacher(str(teacher_path), es0, threads)
    teacher_logits = np.asarray(tm.logits(), dtype=np.float32)
    t_metrics = es0.metrics(teacher_logits, None)
    teacher_row = {
        "path": str(teacher_path),
        "name": tm.name,
        "params": safetensors_params(teacher_path),
        "bytes": int(tm.size_bytes),
        "top1": t_metrics.get("top1"),
        "recall_at_3": t_metrics.get("recall_at_3"),
    }

    # -- export (every artifact through the validation gate) --------------------------------------------
    rows: list[dict[str, Any]] = []
    for name, path in students.items():
        model, meta = loaded[name]
        params = count_params(model)
        log(f"{name}: exporting {path} ({params:,} parameters) to {', '.join(targets)}")
        summary = export_checkpoint(
            path,
            out / "export" / name,
            targets=list(targets),
            precisions=list(PRECISIONS),
            seed=seed,
            log=log,
        )
        for r in summary["results"]:
            rows.append(_row(name, params, r, out / "export" / name))
        if name in qat:
            rows.extend(_qat_rows(name, path, params, targets, qat_epochs, qat_transfer, seed, out, log))

    # -- accuracy of each artifact in its runtime, on the whole evaluation set ---------------------------
    for row in rows:
        if row["status"] != "ok":
            continue
        es = eval_sets[row["student"]]
        rt = get_target(row["target"]).load(Path(row["path"]), threads=threads)
        logits = np.concatenate([rt(*es.rows([k]))[0] for k in range(len(es))])
        m = es.metrics(logits, teacher_logits)
        row.update({k: m.get(k) for k in ("top1", "recall_at_3", "teacher_agreement")})
        if teacher_row["top1"] and row.get("top1") is not None:
            row["retention_top1"] = row["top1"] / teacher_row["top1"]
        if teacher_row["recall_at_3"] and row.get("recall_at_3") is not None:
            row["retention_recall_at_3"] = row["recall_at_3"] / teacher_row["recall_at_3"]

    # -- latency: per target, every artifact interleaved in shuffled blocks -----------------------------
    for target in targets:
        mine = [r for r in rows if r["target"] == target and r["status"] == "ok"]
        if mine:
            _time_target(mine, eval_sets, get_target(target), threads, blocks, calls_per_block, seed, log)
    for row in rows:
        if teacher_row["bytes"] and row.get("size_bytes"):
            row["teacher_bytes_fraction"] = row["size_bytes"] / teacher_row["bytes"]
        if teacher_row["params"]:
            row["teacher_params_fraction"] = row["params"] / teacher_row["params"]

    from kdmobile.harness.machine import machine_info

    data_out = {
        "schema": SCHEMA,
        "task": task_name,
        "data": data,
        "n_examples": len(es0),
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "torch_threads": torch.get_num_threads(),
        "timing": {"blocks": blocks, "calls_per_block": calls_per_block, "threads": threads},
        "teacher": teacher_row,
        "students": {n: str(p) for n, p in students.items()},
        "rows": rows,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    write_outputs(data_out, out, report_dir)
    return data_out


def _row(student: str, params: int, r: dict[str, Any], root: Path) -> dict[str, Any]:
    return {
        "student": student,
        "setting": f"{student} {r['precision']}",
        "precision": r["precision"],
        "target": r["target"],
        "flavour": r.get("flavour"),
        "status": r["status"],
        "reason": r.get("reason"),
        "params": params,
        "size_bytes": r.get("size_bytes"),
        "path": str(root / r["path"]) if r.get("path") else None,
    }


def _qat_rows(
    name: str,
    path: Path,
    params: int,
    targets: Sequence[str],
    epochs: int,
    transfer: int,
    seed: int,
    out: Path,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    from kdmobile.compress.qat import QAT_PRECISION, QAT_TARGETS, qat_checkpoint

    rows = []
    for target in targets:
        if target not in QAT_TARGETS:
            continue
        log(f"{name}: QAT + KD for {target} ({epochs} epochs, {transfer} transfer rows)")
        where = out / "qat" / name / target
        result = qat_checkpoint(path, target, where, epochs=epochs, transfer=transfer, seed=seed, log=log)
        r = result.result(target, QAT_PRECISION)
        rows.append(
            _row(name, params, {**r.to_dict(where / "export"), "precision": QAT_PRECISION}, where / "export")
        )
    return rows


def _time_target(
    rows: list[dict[str, Any]],
    eval_sets: dict[str, Any],
    target: Any,
    threads: int,
    blocks: int,
    calls: int,
    seed: int,
    log: Callable[[str], None],
) -> None:
    """p50 per call (wall and thread CPU, µs) of each artifact, blocks shuffled; ratios to the first fp32."""
    log(f"{target.name}: timing {len(rows)} artifacts, {blocks} interleaved blocks of {calls} calls")
    runs = []
    for row in rows:
        es = eval_sets[row["student"]]
        x = es.rows([es.latency_index])
        rt = target.load(Path(row["path"]), threads=threads)
        for _ in range(max(3, calls // 2)):  # warm-up
            rt(*x)
        runs.append((row, rt, x))
    wall: dict[int, list[float]] = {i: [] for i in range(len(runs))}
    cpu: dict[int, list[float]] = {i: [] for i in range(len(runs))}
    order = list(range(len(runs)))
    rng = random.Random(seed)
    for _ in range(blocks):
        rng.shuffle(order)
        for i in order:
            _, rt, x = runs[i]
            t0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                rt(*x)
            wall[i].append((time.perf_counter() - t0) / calls * 1e6)
            cpu[i].append((time.thread_time() - c0) / calls * 1e6)
    ref = next((i for i, (r, _, _) in enumerate(runs) if r["precision"] == "fp32"), 0)
    for i, (row, _, _) in enumerate(runs):
        row["p50_us"] = float(np.median(wall[i]))
        row["cpu_p50_us"] = float(np.median(cpu[i]))
        row["latency_ref"] = runs[ref][0]["setting"]
        row["x_fp32"] = row["p50_us"] / float(np.median(wall[ref]))
        row["cpu_x_fp32"] = row["cpu_p50_us"] / float(np.median(cpu[ref]))


# -- outputs ---------------------------------------------------------------------------------------------
COLUMNS = (
    ("setting", "setting"),
    ("target", "target"),
    ("params", "params"),
    ("bytes", "artifact"),
    ("teacher_bytes", "× teacher bytes"),
    ("p50", "p50 µs"),
    ("x_fp32", "× fp32 (wall / CPU)"),
    ("top1", "top-1"),
    ("recall", "recall@3"),
    ("retention", "retention top-1 / r@3"),
    ("agreement", "agreement"),
    ("flavour", "flavour / status"),
)


def _cells(row: dict[str, Any]) -> dict[str, str]:
    def pct(v: Any) -> str:
        return "–" if v is None else f"{100 * v:.1f}%"

    def num(v: Any, d: int = 3) -> str:
        return "–" if v is None else f"{v:.{d}f}"

    frac = row.get("teacher_bytes_fraction")
    ok = row["status"] == "ok"
    return {
        "setting": row["setting"],
        "target": row["target"],
        "params": f"{row['params']:,}",
        "bytes": "–" if not row.get("size_bytes") else f"{row['size_bytes'] / 1024:,.0f} KiB",
        "teacher_bytes": "–" if not frac else f"1/{1 / frac:.0f}",
        "p50": num(row.get("p50_us"), 0),
        "x_fp32": "–" if row.get("x_fp32") is None else f"{row['x_fp32']:.2f} / {row['cpu_x_fp32']:.2f}",
        "top1": pct(row.get("top1")),
        "recall": pct(row.get("recall_at_3")),
        "retention": f"{num(row.get('retention_top1'))} / {num(row.get('retention_recall_at_3'))}",
        "agreement": pct(row.get("teacher_agreement")),
        "flavour": (row.get("flavour") or "")
        if ok
        else f"**{row['status']}**: {(row.get('reason') or '')[:80]}",
    }


def render_markdown(data: dict[str, Any]) -> str:
    t = data["teacher"]
    tp = "?" if not t.get("params") else f"{t['params']:,}"
    lines = [
        f"Compression Pareto table: task `{data['task']}`, {data['n_examples']} `{data['data']}` examples, "
        f"measured {data['created']} on {data['machine'].get('cpu_model', '?')} "
        f"({data['timing']['threads']} thread, {data['timing']['blocks']} interleaved blocks per target).",
        "",
        f"Teacher (server side): {tp} parameters, {t['bytes'] / 1e6:.1f} MB, top-1 {100 * (t['top1'] or 0):.1f}%, "
        f"recall@3 {100 * (t['recall_at_3'] or 0):.1f}%.",
        "",
        "| " + " | ".join(h for _, h in COLUMNS) + " |",
        "|"
        + "|".join("---:" if k not in ("setting", "target", "flavour") else "---" for k, _ in COLUMNS)
        + "|",
    ]
    for row in data["rows"]:
        c = _cells(row)
        lines.append("| " + " | ".join(c[k].replace("|", "/") for k, _ in COLUMNS) + " |")
    lines += [
        "",
        "× fp32: p50 over the p50 of the first student's fp32 artifact on the same target, timed in the same "
        "run (wall clock / thread CPU time). Retention: the artifact's top-1 (recall@3) over the teacher's. "
        "Agreement: same top-1 class as the teacher.",
    ]
    if data.get("command"):
        lines += ["", f"Command: `{data['command']}`"]
    return "\n".join(lines) + "\n"


def render_svg(data: dict[str, Any], width: int = 760, height: int = 380) -> str:
    """Artifact bytes (log x) vs top-1 retention, one colour per target, one label per point."""
    from kdmobile.harness.report import colour_of

    pts = [r for r in data["rows"] if r["status"] == "ok" and r.get("size_bytes") and r.get("retention_top1")]
    if not pts:
        return ""
    left, right, top, bottom = 70, 220, 20, 50
    xs = [math.log10(r["size_bytes"]) for r in pts]
    ys = [r["retention_top1"] for r in pts]
    x0, x1 = min(xs) - 0.05, max(xs) + 0.05
    y0, y1 = min(ys) - 0.01, max(max(ys), 1.0) + 0.005
    w, h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * w

    def py(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * h

    esc = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="11" role="img" aria-label="artifact size vs top-1 retention">',
        f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/>',
        f'<text x="{left + w / 2}" y="{height - 12}" text-anchor="middle">artifact bytes (log scale)</text>',
        f'<text x="16" y="{top + h / 2}" transform="rotate(-90 16 {top + h / 2})" text-anchor="middle">'
        "top-1 retention (vs teacher)</text>",
    ]
    for k in range(math.floor(x0), math.ceil(x1) + 1):
        for m in (1, 2, 5):
            v = math.log10(m) + k
            if x0 <= v <= x1:
                label = (
                    f"{m * 10**k / 1e6:g} MB" if k >= 6 or (k == 5 and m >= 5) else f"{m * 10**k / 1e3:g} kB"
                )
                parts.append(
                    f'<line x1="{px(v):.1f}" x2="{px(v):.1f}" y1="{top}" y2="{top + h}" stroke="#eee"/>'
                )
                parts.append(f'<text x="{px(v):.1f}" y="{top + h + 14}" text-anchor="middle">{label}</text>')
    for i in range(6):
        v = y0 + (y1 - y0) * i / 5
        parts.append(f'<text x="{left - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.3f}</text>')
    if y0 <= 1.0 <= y1:
        parts.append(
            f'<line x1="{left}" x2="{left + w}" y1="{py(1.0):.1f}" y2="{py(1.0):.1f}" stroke="#999" stroke-dasharray="4 3"/>'
        )
    seen: set[str] = set()
    labelled: set[str] = set()
    for r, x, y in zip(pts, xs, ys, strict=True):
        c = colour_of(r["target"])
        parts.append(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4.5" fill="{c}"><title>{esc(r["setting"])} '
            f"{esc(r['target'])}: {r['size_bytes']:,} B, retention {y:.3f}</title></circle>"
        )
        if r["setting"] not in labelled:  # one label per setting: its targets' points sit side by side
            labelled.add(r["setting"])
            parts.append(f'<text x="{px(x) + 6:.1f}" y="{py(y) - 6:.1f}">{esc(r["setting"])}</text>')
        seen.add(r["target"])
    for i, t in enumerate(sorted(seen)):
        parts.append(f'<circle cx="{left + w + 20}" cy="{top + 10 + 18 * i}" r="5" fill="{colour_of(t)}"/>')
        parts.append(f'<text x="{left + w + 30}" y="{top + 14 + 18 * i}">{esc(t)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def render_html_section(data: dict[str, Any]) -> str:
    """The ``report.html`` section: the plot and the table."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for _, h in COLUMNS)
    body = []
    for row in data["rows"]:
        c = _cells(row)
        cls = "ok" if row["status"] == "ok" else "bad"
        tds = "".join(
            f'<td class="{cls if k == "flavour" else ("num" if k not in ("setting", "target") else "")}">'
            f"{esc(c[k].replace('**', ''))}</td>"
            for k, _ in COLUMNS
        )
        body.append(f"<tr>{tds}</tr>")
    t = data["teacher"]
    return (
        "<h2>Compression: size vs accuracy</h2>\n"
        f'<p class="small">Task {esc(data["task"])}, {data["n_examples"]} examples; teacher '
        f"{'?' if not t.get('params') else format(t['params'], ',')} parameters, {t['bytes'] / 1e6:.1f} MB, top-1 "
        f"{100 * (t['top1'] or 0):.1f}%. Measured {esc(data['created'])}"
        f"{' with <code>' + esc(data['command']) + '</code>' if data.get('command') else ''}.</p>\n"
        f"{render_svg(data)}\n<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>\n"
        '<p class="small">× fp32: p50 over the first student\'s fp32 p50 on the same target, same run '
        "(wall / thread CPU). Retention: top-1 (recall@3) over the teacher's.</p>\n"
    )


def write_outputs(data: dict[str, Any], out: Path, report_dir: str | Path | None = None) -> dict[str, Path]:
    """``pareto.json``, ``pareto.md``, ``pareto.svg`` in ``out``; the section in ``report_dir``'s report."""
    from kdmobile.io import write_json, write_text

    paths = {
        "json": write_json(out / "pareto.json", data),
        "md": write_text(out / "pareto.md", render_markdown(data)),
        "svg": write_text(out / "pareto.svg", render_svg(data)),
    }
    if report_dir is not None:
        from kdmobile.harness.report import read_report, write_report

        report = read_report(report_dir)
        report["pareto"] = data
        paths.update(write_report(report, report_dir))
    return paths
