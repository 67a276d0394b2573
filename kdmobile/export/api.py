"""Export any ``nn.Module`` from memory: the front door of ``kdmobile export``.

    python -c "import torch, kdmobile; m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)); \
print(kdmobile.export(m, (torch.rand(1, 1, 28, 28),), out_dir='build/my-export'))"

``kdmobile.export(model, example_inputs, ...)`` builds the ``ModelSpec`` from the example inputs (input
names from ``forward``'s signature, dtypes and shapes from the samples, outputs from one eager run), exports
to every selected target and precision, loads each artifact back in its runtime and compares it with the
eager model, and returns an ``ExportResult``. Checkpoints and ``.pt2`` programs are thin wrappers over it.

Sample forms (``calibration=`` and ``validation=``): a tuple of arrays or tensors with a leading sample axis
``N`` (one per model input), one array or tensor for a one-input model, or a ``.npz`` path whose arrays are
named after the inputs (or ``x0``, ``x1``, ...; an optional ``labels`` array is ignored). Each sample is fed
at batch 1 (``x[k : k + 1]``). Without ``validation=`` the artifacts are compared on seeded synthetic inputs:
the log says so loudly and the summary records ``validation.synthetic: true``.

Outputs: a tensor is one output; a tuple, list or dict of tensors (nested too) is flattened in
``torch.utils._pytree`` order (tuple/list positions, dict insertion order), the order every exporter uses,
and named after the dict keys when there are any (else ``output``, ``output_0``, ``output_1``, ...).
Validation compares the first output (the class scores for top-1 agreement).
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdmobile.errors import UsageError
from kdmobile.export.base import ModelSpec, TensorSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from kdmobile.export.runner import ExportResult

Samples = Any  # tuple of arrays/tensors [N, ...], one array/tensor, or a .npz path

N_SYNTHETIC = 64  # synthetic validation inputs when no real ones are given
N_RANDOM = 16  # seeded random inputs added to real validation data (cover inputs the real ones miss)
N_SYNTHETIC_CALIBRATION = 32
SYNTHETIC_WARNING = (
    "WARNING: no validation data given: the artifacts are compared with the eager model on {n} seeded "
    "SYNTHETIC inputs only, which say little about real inputs. Pass validation= (or --validation FILE.npz)."
)


def export(
    model: nn.Module,
    example_inputs: Any,
    *,
    targets: str | Sequence[str] = "all",
    precisions: Sequence[str] | None = None,
    calibration: Samples = None,
    validation: Samples = None,
    out_dir: str | os.PathLike[str] = "out",
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    reference: nn.Module | None = None,
    bundle: bool = False,
    task: str | None = None,
    log: Callable[[str], None] | None = None,
    seed: int = 0,
    threads: int = 1,
    options: dict[str, Any] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    fidelity_only: bool = False,
) -> ExportResult:
    """Export ``model`` to the selected targets and precisions; validate every artifact in its runtime.

    Args:
        model: any ``torch.nn.Module`` (copied and put in eval mode; the caller's module is not touched).
        example_inputs: a tuple of tensors at batch 1, as for ``torch.export`` (one tensor is accepted too).
        targets: ``"all"``, one target name, or a list of names (``kdmobile targets``).
        precisions: ``None`` for each target's default set, else e.g. ``["fp32", "int8"]``.
        calibration: int8 calibration samples (default: the validation samples, else synthetic ones).
        validation: real validation samples; ``None`` validates on seeded synthetic inputs, loudly.
        out_dir: the export folder; written in a staging folder beside it and swapped in whole at the end.
        input_names: default: ``model.forward``'s parameter names.
        output_names: default: the dict keys of the outputs, else ``output`` / ``output_0``, ``output_1``...
        reference: the eager model the artifacts are compared with (default: ``model``), e.g. the float model
            when ``model`` is already quantized.
        bundle: also write ``out_dir/<target>/bundle/`` hand-off folders.
        task: a task plug-in name (or ``"package.module:Class"``) for bundle extras (tokenizer, labels).
        log: called with one progress line at a time.
        seed: seed of the synthetic inputs.
        threads: runtime threads during validation.
        options: per-target extras, e.g. ``{"ort": True}`` (onnx-web also writes ``.ort``).
        checkpoint: the file the model was loaded from (a ``.pt2``, a checkpoint), recorded with its sha256.
        fidelity_only: the ``validation`` samples are stand-ins, not real data (a random-init model, inputs
            from a generator): every artifact is judged by its outputs' fidelity to the eager model (SQNR,
            max error) and not by top-1 agreement, whose argmax flips on noise for such models. The summary
            records it.

    Returns:
        An ``ExportResult``: iterate it for the per-artifact ``Result``\\ s; ``.ok``, ``.summary``,
        ``.load(target, precision)``; ``str()`` is the table.

    Raises:
        UsageError: bad target/precision names, samples that do not match the inputs, a model whose
            outputs are not tensors (e.g. a Hugging Face ``ModelOutput``: wrap it).
    """
    from kdmobile.export.runner import resolve_selection, run_export

    log = log or (lambda _m: None)
    if isinstance(targets, str):
        plan = resolve_selection(None if targets == "all" else [targets], precisions, targets == "all")
    else:
        plan = resolve_selection(list(targets), precisions, False)
    model = _eval_copy(model)
    reference = model if reference is None else _eval_copy(reference)
    built = build_spec(
        model,
        example_inputs,
        input_names=input_names,
        output_names=output_names,
        calibration=calibration,
        validation=validation,
        task=task,
        seed=seed,
        fidelity_only=fidelity_only,
    )
    for w in built.warnings:
        log(w)
    meta: dict[str, Any] = {}
    task_plugin = None
    if task:
        from kdmobile.task import get_task

        task_plugin = get_task(task)
    from kdmobile.io import sha256_file

    source = {
        "source_checkpoint": None if checkpoint is None else str(checkpoint),
        "checkpoint_sha256": None if checkpoint is None else sha256_file(checkpoint),
        "weights_sha256": weights_sha256(model),
        "architecture": f"{type(model).__module__}:{type(model).__qualname__}",
        "task": task,
    }
    return run_export(
        built.wrap(model),
        built.spec,
        plan,
        out_dir,
        source=source,
        reference=built.wrap(reference),
        bundle=bundle,
        task=task_plugin,
        meta=meta,
        checkpoint=None if checkpoint is None else Path(checkpoint),
        options=options,
        threads=threads,
        seed=seed,
        log=log,
        warnings=built.warnings,
        extra_validation={
            "synthetic": built.synthetic,
            "fidelity_only": fidelity_only,
            "calibration_source": built.calibration_source,
        },
    )


def _eval_copy(model: Any) -> Any:
    import copy

    from torch import nn

    if not isinstance(model, nn.Module):
        raise UsageError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return copy.deepcopy(model).eval()


def weights_sha256(model: Any) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes, bytes): which weights were exported."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        try:
            h.update(t.numpy().tobytes())
        except (TypeError, RuntimeError):  # dtypes numpy lacks (bfloat16, quantized): hash their repr
            h.update(repr(t).encode())
    return h.hexdigest()


def forward_input_names(model: Any, n: int, default: Sequence[str] = ()) -> list[str]:
    """Names of ``model.forward``'s first ``n`` positional parameters (``default``, or ``x0``... if absent).

    Every artifact's inputs are named after them (TFLite signatures take inputs by keyword, so they must
    match the names the model is called with).
    """
    try:
        params = inspect.signature(model.forward).parameters.values()
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        names = []
    if len(names) >= n:
        return names[:n]
    return list(default)[:n] if len(default) >= n else [f"x{i}" for i in range(n)]


class BuiltSpec:
    """``build_spec``'s result: the spec, how to wrap the model to match it, and what to warn about."""

    def __init__(self, spec: ModelSpec, adapter: dict[str, Any] | None, warnings: list[str]) -> None:
        self.spec, self.adapter, self.warnings = spec, adapter, warnings
        self.synthetic = "synthetic" in spec.validation  # no samples given: seeded synthetic ones
        self.calibration_source = spec.metadata.get("calibration_source", "")

    def wrap(self, model: Any) -> Any:
        """``model`` itself, or an adapter taking the spec's input names and returning a flat tuple."""
        return model if self.adapter is None else _adapter_class()(model, **self.adapter)


def build_spec(
    model: Any,
    example_inputs: Any,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    calibration: Samples = None,
    validation: Samples = None,
    task: str | None = None,
    seed: int = 0,
    n_synthetic: int = N_SYNTHETIC,
    n_random: int = N_RANDOM,
    fidelity_only: bool = False,
) -> BuiltSpec:
    """The ``ModelSpec`` of ``model`` from its example inputs and optional real samples (see module doc)."""
    import torch

    examples = _example_tuple(example_inputs)
    names = list(input_names) if input_names is not None else forward_input_names(model, len(examples))
    if len(names) != len(examples) or len(set(names)) != len(names):
        raise UsageError(f"input_names {names} must name each of the {len(examples)} example inputs once")
    inputs = [
        TensorSpec(n, tuple(int(d) for d in x.shape), _np_dtype(x, f"input {n!r}"))
        for n, x in zip(names, examples, strict=True)
    ]
    with torch.no_grad():
        out = model(*examples)
    leaves, keys = _flatten_outputs(out)
    if output_names is not None:
        onames = list(output_names)
        if len(onames) != len(leaves):
            raise UsageError(f"output_names {onames} must name each of the model's {len(leaves)} outputs")
    elif keys and len(set(keys)) == len(keys):
        onames = keys
    else:
        onames = ["output"] if len(leaves) == 1 else [f"output_{i}" for i in range(len(leaves))]
    outputs = [
        TensorSpec(n, tuple(int(d) for d in t.shape), _np_dtype(t, f"output {n!r}"))
        for n, t in zip(onames, leaves, strict=True)
    ]
    if outputs[0].dtype not in ("float32", "float16", "float64"):
        raise UsageError(
            f"the model's first output {onames[0]!r} is {outputs[0].dtype}: validation compares the first "
            "output as scores, so return the float scores (logits) first"
        )

    warnings: list[str] = []
    ex_np = [x.detach().cpu().numpy() for x in examples]
    splits: dict[str, tuple[np.ndarray, ...]] = {}
    if validation is not None:
        real = read_samples(validation, inputs, "validation")
        splits["validation"] = real
        if n_random:
            splits["random"] = synthetic_samples(ex_np, n_random, seed + 2)
        real_split: str | None = None if fidelity_only else "validation"
    else:
        splits["synthetic"] = synthetic_samples(ex_np, n_synthetic, seed + 2)
        real_split = None
        warnings.append(SYNTHETIC_WARNING.format(n=n_synthetic))
    if calibration is not None:
        calib, calib_source = read_samples(calibration, inputs, "calibration"), "given"
    elif validation is not None:
        calib, calib_source = splits["validation"], "validation samples"
    else:
        calib, calib_source = synthetic_samples(ex_np, N_SYNTHETIC_CALIBRATION, seed + 1), "synthetic"
    # The example itself comes first: exporters trace (and int8 static calibrates) with calibration[0].
    calib = tuple(np.concatenate([e.astype(c.dtype), c]) for e, c in zip(ex_np, calib, strict=True))
    spec = ModelSpec(
        task=task or "model",
        inputs=inputs,
        outputs=outputs,
        calibration=calib,
        validation=splits,
        real_split=real_split,
        metadata={
            "calibration_source": calib_source,
            "fidelity_only": bool(fidelity_only and validation is not None),
        },
    )
    own = forward_input_names(model, len(examples))
    flat = isinstance(out, torch.Tensor)
    adapter = None if flat and own == names else {"input_names": names, "flat": not flat}
    return BuiltSpec(spec, adapter, warnings)


def _example_tuple(example_inputs: Any) -> tuple[Any, ...]:
    import torch

    examples = example_inputs if isinstance(example_inputs, tuple | list) else (example_inputs,)
    if not examples:
        raise UsageError("example_inputs is empty: pass a tuple with one tensor per model input")
    out = []
    for i, x in enumerate(examples):
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        if not isinstance(x, torch.Tensor):
            raise UsageError(
                f"example input {i} is a {type(x).__name__}: every model input must be a tensor (static "
                "shapes; pass other arguments through a wrapper module)"
            )
        if x.ndim == 0 or x.shape[0] != 1:
            raise UsageError(
                f"example input {i} has shape {tuple(x.shape)}: give it at batch 1 (a leading axis of size 1), "
                "the shape every artifact is exported with"
            )
        out.append(x.detach())
    return tuple(out)


def _np_dtype(t: Any, what: str) -> str:
    import torch

    try:
        return torch.empty(0, dtype=t.dtype).numpy().dtype.name
    except TypeError:
        raise UsageError(f"{what} has dtype {t.dtype}, which numpy (and the runtimes' I/O) lacks") from None


def _flatten_outputs(out: Any) -> tuple[list[Any], list[str]]:
    """(tensors in pytree order, their dict keys when the outputs were a flat dict)."""
    import torch
    from torch.utils import _pytree as pytree

    if any(c.__name__ == "ModelOutput" for c in type(out).__mro__):
        raise UsageError(
            f"the model returns a Hugging Face {type(out).__name__}: wrap it in a module that returns plain "
            "tensors, e.g. `class Wrapped(nn.Module): def forward(self, x): return self.model(x).logits`"
        )
    leaves, _ = pytree.tree_flatten(out)
    if not leaves or not all(isinstance(t, torch.Tensor) for t in leaves):
        kinds = sorted({type(t).__name__ for t in leaves if not isinstance(t, torch.Tensor)}) or ["nothing"]
        raise UsageError(
            f"the model must return tensors (a tensor, or a tuple/list/dict of them); it returned {', '.join(kinds)}"
        )
    keys = [str(k) for k in out] if isinstance(out, dict) and len(out) == len(leaves) else []
    return leaves, keys


def read_samples(samples: Samples, inputs: Sequence[TensorSpec], what: str) -> tuple[np.ndarray, ...]:
    """Normalise a sample form (see the module doc) to one ``[N, ...]`` array per input, checked.

    Raises:
        UsageError: a missing file, a wrong number of arrays, an array whose per-sample shape or dtype does
            not match the input it feeds (the message names the array and the input).
    """
    import torch

    where = what
    if isinstance(samples, str | os.PathLike):
        where = f"{what} file {samples}"
        arrays = load_npz(samples, what)
        labels = npz_keys(arrays, [s.name for s in inputs], where)
        arrays_list = [arrays[k] for k in labels]
    else:
        items = samples if isinstance(samples, tuple | list) else (samples,)
        arrays_list = [
            x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in items
        ]
        labels = [f"array {i}" for i in range(len(arrays_list))]
        if len(arrays_list) != len(inputs):
            raise UsageError(
                f"{what}: {len(arrays_list)} arrays for {len(inputs)} model inputs ({', '.join(s.name for s in inputs)})"
            )
    out = []
    n = None
    for label, x, s in zip(labels, arrays_list, inputs, strict=True):
        if x.ndim != len(s.shape) or tuple(x.shape[1:]) != tuple(s.shape[1:]):
            raise UsageError(
                f"{where}: {label} has shape {list(x.shape)}; input {s.name!r} takes samples of shape "
                f"{list(s.shape[1:])} (the array is [N, {', '.join(str(d) for d in s.shape[1:])}])"
            )
        if n is not None and len(x) != n:
            raise UsageError(f"{where}: {label} has {len(x)} samples, the others {n}")
        n = len(x)
        want = np.dtype(s.dtype)
        if x.dtype != want and x.dtype.kind != want.kind and not (x.dtype.kind in "iu" and want.kind in "iu"):
            raise UsageError(f"{where}: {label} is {x.dtype}; input {s.name!r} is {s.dtype}")
        out.append(np.ascontiguousarray(x.astype(want, copy=False)))
    if not n:
        raise UsageError(f"{where} holds no samples")
    return tuple(out)


def load_npz(path: str | os.PathLike[str], what: str) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` sample file, without its optional ``labels``; UsageError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 - any unreadable file is a usage error
        raise UsageError(f"{what} file {path} is not a readable .npz: {type(e).__name__}: {e}") from None
    arrays.pop("labels", None)
    return arrays


def npz_keys(arrays: dict[str, np.ndarray], names: Sequence[str], where: str) -> list[str]:
    """Which array feeds each input: the input's own name, else ``x0``, ``x1``..., else the only array."""
    positional = [f"x{i}" for i in range(len(names))]
    if set(names) <= set(arrays):
        keys = list(names)
    elif set(positional) <= set(arrays):
        keys = positional
    elif len(names) == 1 and len(arrays) == 1:
        keys = list(arrays)
    else:
        raise UsageError(
            f"{where} has arrays {sorted(arrays)}; expected one per model input named "
            f"{', '.join(names)} (or {', '.join(positional)}), plus an optional 'labels'"
        )
    extra = sorted(set(arrays) - set(keys))
    if extra:
        raise UsageError(f"{where}: arrays {extra} feed no model input (inputs: {', '.join(names)})")
    return keys


def example_from_npz(model: Any, path: str | os.PathLike[str]) -> tuple[Any, ...]:
    """Batch-1 example inputs for ``model``: the first sample of each array of a ``.npz`` sample file."""
    import torch

    arrays = load_npz(path, "samples")
    keys = npz_keys(arrays, forward_input_names(model, len(arrays)), f"samples file {path}")
    return tuple(torch.from_numpy(np.ascontiguousarray(arrays[k][:1])) for k in keys)


def synthetic_samples(examples: Sequence[np.ndarray], n: int, seed: int) -> tuple[np.ndarray, ...]:
    """``n`` seeded samples like ``examples``: floats drawn with the example's mean and spread, integers
    uniform between the example's min and max (ids stay inside the vocabulary it uses), booleans at 50%."""
    rng = np.random.default_rng(seed)
    out = []
    for x in examples:
        shape = (n, *x.shape[1:])
        if x.dtype.kind == "f":
            std = float(x.std()) or 1.0
            out.append(rng.normal(float(x.mean()), std, size=shape).astype(x.dtype))
        elif x.dtype.kind in "iu":
            out.append(rng.integers(int(x.min()), int(x.max()) + 1, size=shape).astype(x.dtype))
        elif x.dtype.kind == "b":
            out.append(rng.random(shape) < 0.5)
        else:
            raise UsageError(f"cannot make synthetic samples of dtype {x.dtype}: pass validation=")
    return tuple(out)


def _adapter_class() -> type:
    """``Adapter(model, input_names, flat)``: inputs by the spec's names, outputs as one flat tuple."""
    from torch import nn
    from torch.utils import _pytree as pytree

    class Adapter(nn.Module):
        def __init__(self, model: nn.Module, input_names: Sequence[str], flat: bool) -> None:
            super().__init__()
            self.model, self.input_names, self.flat = model, list(input_names), flat

        def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> Any:
            args = (*args, *(kwargs[n] for n in self.input_names[len(args) :]))
            out = self.model(*args)
            return tuple(pytree.tree_leaves(out)) if self.flat else out

    return Adapter


__all__ = [
    "BuiltSpec",
    "build_spec",
    "example_from_npz",
    "export",
    "forward_input_names",
    "load_npz",
    "read_samples",
    "synthetic_samples",
]
