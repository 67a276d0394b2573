"""Quantization-aware training with knowledge distillation, for the quantizer of the target that runs it.

    kdmobile compress qat build/email/student.safetensors --target executorch -o build/qat

PTQ (``kdmobile export --precision int8``) calibrates activation ranges on a few samples and rounds the
trained weights. QAT instead fine-tunes the model *through* the target's own fake quantization, so the
weights and the activation ranges adapt to int8 before conversion. Here the fine-tuning loss is the
``kd`` loss (Hinton et al. 2015) against the float model (or a teacher, or the teacher-output cache):
the int8 student is trained to agree with the float model it replaces, which is exactly what the export
validation later measures.

Steps (torchao PT2E, as the target's own PTQ path uses them):

1. ``torch.export.export`` with a dynamic batch dimension (training batches vary in size), then
   ``prepare_qat_pt2e(module, quantizer)`` with the target's quantizer in QAT mode:

   - ``executorch``: ``XNNPACKQuantizer`` + ``get_symmetric_quantization_config(is_per_channel=True,
     is_qat=True)`` (per-channel symmetric int8 weights, per-tensor int8 activations with moving-average
     min/max fake quantizers).
   - ``tflite``: litert-torch's ``PT2EQuantizer`` + its ``get_symmetric_quantization_config(
     is_per_channel=True, is_qat=True)``, minus its QAT-only conv+bn patterns, which crash with torchao
     0.18 (see ``_litert_qat_quantizer_class``). The ``.tflite`` is full-integer: int8 input and output
     tensors, which the runtime quantizes / dequantizes with the tensors' own scales.

2. ``allow_exported_model_train_eval`` so the training loop's ``train()`` / ``eval()`` switch the
   exported graph's dropout and batch norm (``move_exported_model_to_train`` / ``_eval``).
3. :class:`kdmobile.distill.Distiller` fine-tunes the prepared graph with the ``kd`` loss.
4. ``convert_pt2e`` turns the fake quantizers into quantize/dequantize pairs with the *trained* scales and
   zero points. The target exports that program as it is (precision ``int8-qat``: no re-calibration) and
   the export validation compares it with the float model (``reference``).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdmobile.errors import UsageError

QAT_TARGETS = ("executorch", "tflite")
QAT_PRECISION = "int8-qat"

# The fine-tuning loss: KD at a moderate temperature against the float model (alpha = 0: its soft targets
# only, no labels needed) plus logit MSE. KD alone leaves each row's logits free to shift by a constant
# (softmax ignores it), and the export validation compares raw outputs with the float model (SQNR, max
# error): on the MNIST outlier case, KD alone reached 99.1% top-1 agreement but 16.8 dB SQNR (< 20 dB).
DEFAULT_LOSS = {
    "kd": {"weight": 1.0, "temperature": 4.0, "alpha": 0.0},
    "logit_mse": {"weight": 1.0},
}


@dataclass
class QATResult:
    """What :func:`qat_distill` returns.

    Attributes:
        converted: the quantized program (``convert_pt2e`` output, an ``fx.GraphModule``) to export with
            precision ``int8-qat``.
        prepared: the fake-quantized graph after training (for more fine-tuning or inspection).
        target: the target whose quantizer was used; only that target can export ``converted``.
        history: the Distiller's history (per-epoch loss, eval).
    """

    converted: Any
    prepared: Any
    target: str
    history: dict[str, Any] = field(default_factory=dict)


_NOT_QAT = {
    "onnx-web": "onnx-web int8 is dynamic quantization: there are no activation ranges to train",
    "coreml": "Core ML int8 is not wired to a PT2E quantizer here",
}


def check_target(target: str) -> None:
    if target not in QAT_TARGETS:
        why = _NOT_QAT.get(target, "no QAT quantizer for this target")
        raise UsageError(
            f"quantization-aware training is available for {', '.join(QAT_TARGETS)}, not {target!r}: {why}"
        )


def qat_quantizer(target: str) -> Any:
    """The target's PT2E quantizer in QAT mode (per-channel symmetric int8 weights, int8 activations)."""
    check_target(target)
    if target == "tflite":
        from litert_torch.quantize import pt2e_quantizer

        config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
        return _litert_qat_quantizer_class()().set_global(config)
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))


@functools.cache
def _litert_qat_quantizer_class() -> type:
    """litert-torch's ``PT2EQuantizer`` without its QAT-only conv+bn patterns.

    With torchao 0.18, building those patterns crashes every ``prepare_qat_pt2e`` call, with or without a
    convolution in the model ("Expected `mod` to be an instance of `torch.nn.Module`, got <class
    'function'>", litert-torch 0.10). Without them a conv followed by batch norm is annotated like any conv
    (batch norm is not folded into it during training); every other pattern is litert-torch's own.
    """
    from litert_torch.quantize import pt2e_quantizer

    class LiteRTQATQuantizer(pt2e_quantizer.PT2EQuantizer):
        STATIC_QAT_ONLY_OPS: list[str] = []

    return LiteRTQATQuantizer


def prepare_qat(model: Any, example_inputs: Sequence[Any], target: str = "executorch") -> Any:
    """Export ``model`` with a dynamic batch axis and insert ``target``'s fake quantizers.

    Args:
        model: the float ``nn.Module`` (copied; the original is left untouched).
        example_inputs: one batch of inputs (any batch size >= 2, so the batch axis stays symbolic).

    Returns:
        The prepared ``fx.GraphModule``; ``train()`` / ``eval()`` work on it. The model is exported in eval
        mode, so branches on ``self.training`` (e.g. the email student's token dropout) stay off while
        fine-tuning; batch norm and dropout nodes in the graph are switched by ``train()``.
    """
    import torch
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    quantizer = qat_quantizer(target)
    example = tuple(example_inputs)
    if any(x.shape[0] < 2 for x in example):
        raise UsageError("prepare_qat needs an example batch of at least 2 rows (the batch axis is dynamic)")
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    shapes = tuple({0: batch} for _ in example)
    float_model = copy.deepcopy(model).eval()
    ep = torch.export.export(float_model, example, dynamic_shapes=shapes, strict=False)
    prepared = prepare_qat_pt2e(ep.module(), quantizer)
    return allow_exported_model_train_eval(prepared)


def convert_qat(prepared: Any, target: str) -> Any:
    """``convert_pt2e`` of a trained prepared graph, in eval mode, keeping its trained ranges.

    ExecuTorch: weights folded to int8 constants, as its PTQ path does (unfolded, a per-channel
    ``quantize`` node stays outside the XNNPACK delegate and the portable kernel aborts the process on its
    float32 scales, executorch 1.5.1). TFLite: unfolded, as litert-torch's converter expects.
    """
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    prepared.eval()
    converted = convert_pt2e(copy.deepcopy(prepared), fold_quantize=target == "executorch")
    return allow_exported_model_train_eval(converted)


def qat_distill(
    model: Any,
    train_set: Any,
    *,
    example_inputs: Sequence[Any],
    target: str = "executorch",
    teacher: Any = None,
    config: Any = None,
    eval_set: Any = None,
    run_dir: str | Path = "build/qat/run",
    teacher_id: str | None = None,
    log: Callable[[str], None] | None = None,
) -> QATResult:
    """Fine-tune ``model`` through ``target``'s fake quantization with the KD loss; convert it.

    Args:
        model: the trained float model.
        train_set: Distiller dataset (items ``{"student": inputs, "teacher": inputs, "label": y}``; label
            -1 when unlabelled). With ``teacher=None`` the teacher inputs are the student's.
        example_inputs: one batch (>= 2 rows) for ``torch.export``.
        target: whose quantizer the fake quantization copies (``executorch``; see ``QAT_TARGETS``).
        teacher: the KD teacher; None: a frozen copy of ``model`` (the float model the int8 one replaces).
        config: a :class:`kdmobile.distill.DistillConfig`; None: 3 epochs of ``kd`` at T=4, AdamW 1e-4
            cosine. Its cache settings apply (the teacher-output cache is used when enabled).
        eval_set: optional labelled set evaluated after each epoch (fake-quantized accuracy).
        run_dir: the Distiller's checkpoints and history.

    Returns:
        A :class:`QATResult` whose ``converted`` program goes to ``export(..., precisions=["int8-qat"])``.
    """
    from kdmobile.distill import DistillConfig, Distiller, OptimConfig, TrainConfig

    check_target(target)
    if config is None:
        config = DistillConfig(
            loss=DEFAULT_LOSS,
            train=TrainConfig(epochs=3, batch_size=128, seed=0, progress=False),
            optim=OptimConfig(name="adamw", lr=1e-4, weight_decay=0.0, schedule="cosine"),
        )
    if teacher is None:
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
    prepared = prepare_qat(model, example_inputs, target)
    distiller = Distiller(
        prepared,
        teacher,
        config,
        run_dir=run_dir,
        architecture=f"pt2e-qat-{target}",
        model_config={},
        teacher_id=teacher_id,
        log=log,
    )
    prepared, history = distiller.fit(train_set, eval_set=eval_set)
    return QATResult(convert_qat(prepared, target), prepared, target, history.to_dict())


def is_quantized_program(model: Any) -> bool:
    """True for a ``convert_pt2e`` output: a graph with quantize_per_tensor/per_channel nodes."""
    graph = getattr(model, "graph", None)
    if graph is None:
        return False
    return any(
        node.op == "call_function"
        and "quantize_per_" in str(node.target)
        and "dequantize" not in str(node.target)
        for node in graph.nodes
    )


__all__ = [
    "DEFAULT_LOSS",
    "QAT_PRECISION",
    "QAT_TARGETS",
    "QATResult",
    "convert_qat",
    "is_quantized_program",
    "prepare_qat",
    "qat_distill",
    "qat_quantizer",
]


def qat_checkpoint(
    checkpoint: str | Path,
    target: str,
    out: str | Path,
    *,
    epochs: int = 3,
    lr: float = 1e-4,
    temperature: float = 4.0,
    transfer: int = 8000,
    heldout: int = 512,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Any:
    """QAT + KD of a checkpoint for ``target``, then its ``int8-qat`` export validated against the float model.

    Writes ``out/export/`` (artifact, summary) and ``out/qat.json`` (the fine-tuning history); returns the
    ``ExportResult``. Transfer rows: generated emails (email task) or MNIST training images (mnist task).
    """
    import torch

    import kdmobile
    from kdmobile.checkpoint import load_checkpoint
    from kdmobile.distill import CacheConfig, DistillConfig, OptimConfig, TrainConfig
    from kdmobile.export.specs import model_spec_for
    from kdmobile.io import write_json

    check_target(target)
    out = Path(out)
    model, meta = load_checkpoint(checkpoint)
    model.eval()
    spec = model_spec_for(model, meta, n_heldout=heldout, seed=seed)
    if spec.real_split is None:
        raise UsageError(f"{checkpoint}: its task has no real held-out samples to validate QAT on")
    real = spec.validation[spec.real_split]
    train_set = transfer_set(spec.task, meta, transfer, seed)
    cfg = DistillConfig(
        loss={**DEFAULT_LOSS, "kd": {**DEFAULT_LOSS["kd"], "temperature": temperature}},
        train=TrainConfig(epochs=epochs, batch_size=64, seed=seed, progress=False),
        optim=OptimConfig(name="adamw", lr=lr, weight_decay=0.0, schedule="cosine"),
        cache=CacheConfig(enabled=True),
    )
    torch.manual_seed(seed)
    example = tuple(torch.from_numpy(x[:2].copy()) for x in real)
    qat = qat_distill(
        model, train_set, example_inputs=example, target=target, config=cfg, run_dir=out / "run", log=log
    )
    result = kdmobile.export(
        qat.converted,
        tuple(torch.from_numpy(x[:1].copy()) for x in real),
        targets=target,
        precisions=[QAT_PRECISION],
        validation=real,
        input_names=spec.input_names,
        output_names=spec.output_names,
        reference=model,  # validated against the float checkpoint
        out_dir=out / "export",
        log=log,
    )
    write_json(out / "qat.json", {"checkpoint": str(checkpoint), "history": qat.history["epochs"]})
    return result


def transfer_set(task: str, meta: dict[str, Any], n: int, seed: int) -> Any:
    """Unlabelled transfer rows for QAT of a ``task`` checkpoint (email and mnist have generators)."""
    if task == "email":
        from kdmobile.compress.prune import email_transfer_set

        return email_transfer_set(meta.get("tokenizer"), n, seed)
    if task == "mnist":
        from kdmobile.tasks.mnist.data import make_set, split

        return make_set(*split("train", subset=n), hide_labels=True)
    raise UsageError(f"kdmobile compress qat has transfer data for the email and mnist tasks, not {task!r}")
