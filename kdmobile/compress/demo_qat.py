"""PTQ vs QAT+KD int8 on one model, in the real runtimes: a ReLU net on real MNIST with outlier channels.

    python -m kdmobile.compress.demo_qat -o build/qat            # ExecuTorch and TFLite, ~5 min on one core

The case, and why it is honest. A 784-64-64-10 ReLU net is trained on the real MNIST training set. A ReLU
net computes the same function when a hidden unit's incoming weights and bias are multiplied by ``c > 0``
and its outgoing weights divided by ``c``; trained nets drift into such imbalances, and the result is a few
*outlier channels* whose activations are far larger than the rest (the reason cross-layer equalisation
exists, and what breaks per-tensor int8 activations in MobileNets and transformers). Here the imbalance is
made explicit: 4 of the first layer's 64 units are scaled by ``--outlier-scale`` (default 60) and the second
layer compensates, so the float model is *exactly* the trained one (same predictions, checked). One
per-tensor int8 scale must then cover the outliers, and the other 60 units are left a handful of levels.

The same float model is then quantized two ways for the same target, and each artifact is run in the real
runtime on the 10,000 held-out MNIST test images and compared with the float model:

- PTQ: ``kdmobile``'s static int8 export (PT2E, calibrated on 128 validation images): ExecuTorch ``int8``
  (when that misses the 98% top-1 bar the runner falls back to dynamic int8; both are reported) and
  TFLite ``int8-full``.
- QAT+KD: :func:`kdmobile.compress.qat.qat_distill` fine-tunes through the same target's quantizer in QAT
  mode with the ``kd`` + ``logit_mse`` loss against the float model (teacher-output cache on), converts,
  and the ``int8-qat`` export lowers that program as trained.

Writes ``OUT/qat_demo.json`` and ``OUT/qat_demo.md`` (the table) and the artifacts under ``OUT/<target>/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REAL_SPLIT = "validation"  # kdmobile.export's name for the real samples passed as validation=
# Each target's static PTQ int8 (int8 weights and activations, calibrated ranges): the scheme QAT trains.
PTQ_STATIC = {"executorch": "int8", "tflite": "int8-full"}


def outlier_mlp(
    seed: int, epochs: int, outlier_scale: float, outliers: int = 4, n_train: int = 0, log=print
) -> Any:
    """Train the float 784-64-64-10 net on MNIST (hard labels), then scale ``outliers`` units.

    ``n_train``: the first n training images (0: all 50,000).

    Returns the float model, function-identical to the trained one (asserted on the test set).
    """
    import torch

    from kdmobile.distill import DistillConfig, Distiller, OptimConfig, TrainConfig
    from kdmobile.tasks.mnist.data import make_set, split
    from kdmobile.tasks.mnist.model import MLP

    torch.manual_seed(seed)
    model = MLP(hidden=(64, 64))
    cfg = DistillConfig(
        loss={"ce": {}},
        train=TrainConfig(epochs=epochs, batch_size=128, seed=seed, progress=False),
        optim=OptimConfig(name="adamw", lr=1e-3, weight_decay=0.0, schedule="constant"),
    )
    with _tmpdir() as run:
        model, _ = Distiller(model, None, cfg, run_dir=run, log=log).fit(make_set(*split("train", n_train)))
    model.eval()
    xte, _ = split("test")
    with torch.no_grad():
        before = model(xte)
        first, second = model.net[0], model.net[2]
        idx = torch.arange(outliers)
        first.weight[idx] *= outlier_scale
        first.bias[idx] *= outlier_scale
        second.weight[:, idx] /= outlier_scale
        after = model(xte)
    if not torch.equal(before.argmax(1), after.argmax(1)):
        raise AssertionError("rescaling outlier units changed the float model's predictions")
    return model


def run(
    out_dir: Path,
    *,
    targets: tuple[str, ...] = ("executorch", "tflite"),
    seed: int = 0,
    epochs: int = 5,
    qat_epochs: int = 15,
    qat_lr: float = 3e-3,
    outlier_scale: float = 60.0,
    n_heldout: int = 10_000,
    n_train: int = 0,
    log=print,
) -> dict[str, Any]:
    """Train the case, export PTQ int8 and QAT+KD int8 for each target, validate both; write the report.

    Returns the report: per target, ``ptq.static`` (the static PTQ attempt, int8 activations like QAT),
    ``ptq.kept`` (what the runner kept after its fallbacks) and ``qat``, each with the held-out top-1
    agreement and SQNR against the float model, the status and the artifact size.
    """
    import torch

    from kdmobile.compress.qat import DEFAULT_LOSS, qat_distill
    from kdmobile.distill import CacheConfig, DistillConfig, OptimConfig, TrainConfig
    from kdmobile.tasks.mnist.data import make_set, split

    t0 = time.perf_counter()
    torch.set_num_threads(1)
    model = outlier_mlp(seed, epochs, outlier_scale, n_train=n_train, log=log)
    xte, yte = split("test")
    xte, yte = xte[:n_heldout], yte[:n_heldout]
    xval, _ = split("val")
    with torch.no_grad():
        float_acc = float((model(xte).argmax(1) == yte).float().mean())
    with torch.no_grad():
        ranges = model.net[1](model.net[0](xte[:1000])).amax(0)
    report: dict[str, Any] = {
        "case": "784-64-64-10 ReLU MLP, real MNIST, 4 outlier units (function-preserving rescale)",
        "outlier_scale": outlier_scale,
        "float_test_accuracy": float_acc,
        "hidden_activation_max": {"outliers": float(ranges[:4].max()), "others": float(ranges[4:].max())},
        "heldout": f"MNIST test images, first {len(yte)}",
        "targets": {},
    }
    train_set = make_set(*split("train", n_train), hide_labels=True)  # KD against the float model: no labels
    for target in targets:
        row: dict[str, Any] = {}
        log(f"{target}: PTQ int8 export ...")
        ptq = _export(
            model, target, PTQ_STATIC[target], out_dir / "ptq", xte, calibration=xval[:128], log=log
        )
        row["ptq"] = _ptq_row(ptq)
        log(f"{target}: QAT+KD fine-tuning ({qat_epochs} epochs) ...")
        cfg = DistillConfig(
            loss=DEFAULT_LOSS,
            train=TrainConfig(epochs=qat_epochs, batch_size=128, seed=seed, progress=False),
            optim=OptimConfig(name="adamw", lr=qat_lr, weight_decay=0.0, schedule="cosine"),
            cache=CacheConfig(enabled=True),
        )
        t1 = time.perf_counter()
        qat = qat_distill(
            model,
            train_set,
            example_inputs=(xte[:2],),
            target=target,
            config=cfg,
            run_dir=out_dir / "runs" / target,
            log=log,
        )
        row["qat_seconds"] = round(time.perf_counter() - t1, 1)
        res = _export(qat.converted, target, "int8-qat", out_dir / "qat", xte, reference=model, log=log)
        row["qat"] = _row(res)
        report["targets"][target] = row
        log(f"{target}: PTQ top-1 agreement {_fmt(row['ptq'])}, QAT+KD {_fmt(row['qat'])}")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    from kdmobile.io import write_json, write_text

    write_json(out_dir / "qat_demo.json", report)
    write_text(out_dir / "qat_demo.md", render(report))
    return report


def _export(model: Any, target: str, precision: str, out: Path, heldout: Any, **kw: Any) -> Any:
    """One artifact through ``kdmobile.export``, validated on the real held-out images."""
    import kdmobile

    res = kdmobile.export(
        model, (heldout[:1],), targets=target, precisions=[precision], validation=heldout, out_dir=out, **kw
    )
    return res.result(target, precision)


def _row(res: Any) -> dict[str, Any]:
    heldout = (res.error_stats_by_split or {}).get(REAL_SPLIT) or {}
    return {
        "status": res.status.value,
        "flavour": res.flavour,
        "top1_agreement": heldout.get("top1_agreement"),
        "sqnr_db": heldout.get("sqnr_db"),
        "sqnr_db_all": (res.error_stats or {}).get("sqnr_db"),
        "size_bytes": res.size_bytes,
        "reason": res.reason,
    }


def _ptq_row(res: Any) -> dict[str, Any]:
    """The static PTQ attempt (comparable with QAT: int8 activations) and what the runner kept."""
    row = {"kept": _row(res)}
    for a in res.details.get("attempts", []):
        heldout = (a.get("error_stats_by_split") or {}).get(REAL_SPLIT) or {}
        row.setdefault("static", {"flavour": a["flavour"], "status": a["status"], **_pick(heldout)})
    row.setdefault("static", row["kept"])
    return row


def _pick(stats: dict[str, Any]) -> dict[str, Any]:
    return {"top1_agreement": stats.get("top1_agreement"), "sqnr_db": stats.get("sqnr_db")}


def _fmt(row: dict[str, Any]) -> str:
    r = row.get("static", row)
    return f"{r['top1_agreement']:.4f}" if r.get("top1_agreement") is not None else r.get("status", "?")


def render(report: dict[str, Any]) -> str:
    lines = [
        f"# PTQ vs QAT+KD int8: {report['case']}",
        "",
        f"Float model: {report['float_test_accuracy']:.2%} test accuracy; hidden-1 activation max "
        f"{report['hidden_activation_max']['outliers']:.1f} (outlier units) vs "
        f"{report['hidden_activation_max']['others']:.1f} (the other 60). Agreement = top-1 of the artifact, "
        f"run in its runtime, vs the float model on {report['heldout']}.",
        "",
        "| target | method | flavour | status | top-1 agreement | SQNR dB | size |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for target, row in report["targets"].items():
        items = [("PTQ static int8", row["ptq"]["static"])]
        if row["ptq"]["kept"]["flavour"] != row["ptq"]["static"].get("flavour"):
            items.append(("PTQ, runner's fallback", row["ptq"]["kept"]))
        items.append(("QAT+KD int8", row["qat"]))
        for name, r in items:
            agree = f"{r['top1_agreement']:.2%}" if r.get("top1_agreement") is not None else "-"
            sqnr = f"{r['sqnr_db']:.1f}" if r.get("sqnr_db") is not None else "-"
            size = f"{r['size_bytes'] / 1024:.0f} KiB" if r.get("size_bytes") else "-"
            lines.append(
                f"| {target} | {name} | {r.get('flavour')} | {r['status']} | {agree} | {sqnr} | {size} |"
            )
    lines.append("")
    return "\n".join(lines)


class _tmpdir:
    def __enter__(self) -> Path:
        import tempfile

        self._d = tempfile.TemporaryDirectory(prefix="kdmobile-qat-")
        return Path(self._d.name)

    def __exit__(self, *exc: object) -> None:
        self._d.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m kdmobile.compress.demo_qat", description=__doc__.split("\n")[0]
    )
    p.add_argument("-o", "--out", type=Path, default=Path("build/qat"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=5, help="float training epochs")
    p.add_argument("--qat-epochs", type=int, default=15)
    p.add_argument("--qat-lr", type=float, default=3e-3)
    p.add_argument("--outlier-scale", type=float, default=60.0)
    p.add_argument("--target", action="append", choices=sorted(PTQ_STATIC), help="default: both")
    args = p.parse_args(argv)
    report = run(
        args.out,
        targets=tuple(args.target or PTQ_STATIC),
        seed=args.seed,
        epochs=args.epochs,
        qat_epochs=args.qat_epochs,
        qat_lr=args.qat_lr,
        outlier_scale=args.outlier_scale,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(render(report))
    print(json.dumps({t: r["qat"]["status"] for t, r in report["targets"].items()}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
