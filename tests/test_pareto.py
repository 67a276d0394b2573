"""``kdmobile compress pareto`` on the selftest task: two students x fp32/int8, validated, evaluated, timed.

    .venv/bin/python -m pytest -q tests/test_pareto.py

The selftest task reaches everything through the task seam (evaluation set, metrics, teacher), as the email
task does. Expected figures are computed here from the eager models and the teacher, not by the command.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("executorch")


@pytest.mark.slow  # ~40 s of CPU: trains the selftest pair, four ExecuTorch exports, 4 x 320 evaluations
@pytest.mark.target("executorch")
def test_pareto_on_the_selftest_task(tmp_path) -> None:
    from test_report_render import make_report

    from kdmobile.checkpoint import load_checkpoint, save_checkpoint
    from kdmobile.compress import pareto
    from kdmobile.compress.prune import count_params, prune_email_student
    from kdmobile.harness.report import write_report
    from kdmobile.task import get_task
    from kdmobile.tasks.selftest import fixture

    paths = fixture.train(tmp_path / "st")
    model, meta = load_checkpoint(paths["student"])
    small, _ = prune_email_student(model, dim=16, hidden=32)
    mc = {**meta["model_config"], "dim": 16, "hidden": 32}
    keep = {
        k: v for k, v in meta.items() if k not in ("format_version", "architecture", "model_config", "sha256")
    }
    pruned = save_checkpoint(
        tmp_path / "pruned" / "student.safetensors", small, architecture=meta["architecture"],
        model_config=mc, metadata=keep,
    )  # fmt: skip
    report_dir = tmp_path / "report"
    write_report(make_report(), report_dir)

    data = pareto.run(
        pareto.parse_students([f"base={paths['student']}", f"pruned={pruned}"]),
        tmp_path / "pareto",
        targets=["executorch"],
        task="selftest",
        blocks=3,
        calls_per_block=3,
        report_dir=report_dir,
        log=lambda m: None,
    )

    rows = {(r["student"], r["precision"]): r for r in data["rows"]}
    assert set(rows) == {("base", "fp32"), ("base", "int8"), ("pruned", "fp32"), ("pruned", "int8")}
    assert all(r["status"] == "ok" for r in rows.values()), [r["reason"] for r in rows.values()]
    assert rows["base", "fp32"]["params"] == count_params(model)
    assert rows["pruned", "fp32"]["params"] == count_params(small) < count_params(model)
    assert rows["base", "int8"]["size_bytes"] <= 0.3 * rows["base", "fp32"]["size_bytes"]
    assert rows["base", "fp32"]["x_fp32"] == 1.0 and all(r["p50_us"] > 0 for r in rows.values())

    # Accuracy figures against the eager models and the teacher, computed here.
    es = get_task("selftest").eval_set("heldout", meta)
    teacher = fixture.load_teacher(str(paths["teacher"]), es, 1).logits()
    t = es.metrics(teacher, None)
    assert data["teacher"]["top1"] == pytest.approx(t["top1"])
    for name, m in (("base", model), ("pruned", small)):
        with torch.no_grad():
            eager = m(torch.from_numpy(es.ids)).numpy()
        want = es.metrics(eager, teacher)
        got = rows[name, "fp32"]
        # the fp32 artifact may flip a near-tie: at most one example of 320
        assert abs(got["top1"] - want["top1"]) <= 1 / len(es) + 1e-9
        assert abs(got["teacher_agreement"] - want["teacher_agreement"]) <= 1 / len(es) + 1e-9
        assert got["retention_top1"] == pytest.approx(got["top1"] / t["top1"])

    out = tmp_path / "pareto"
    md = (out / "pareto.md").read_text()
    assert "| base int8 | executorch |" in md and "embedding-int8-rows" in md
    assert (out / "pareto.svg").read_text().count("<circle") == 4 + 1  # 4 points + 1 legend entry
    assert json.loads((out / "pareto.json").read_text())["rows"] == json.loads(json.dumps(data["rows"]))
    page = (report_dir / "report.html").read_text()
    assert "Compression: size vs accuracy" in page and "pruned int8" in page
    assert json.loads((report_dir / "report.json").read_text())["pareto"]["task"] == "selftest"
    assert np.isfinite([r["cpu_x_fp32"] for r in rows.values()]).all()
