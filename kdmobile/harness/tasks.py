"""What the bench measures on: the evaluation set, its metrics, and the teacher; task-free for a user's data.

    kdmobile bench build/export --task email --data heldout -o build/report     # a registered task
    kdmobile bench my_export --data eval.npz --teacher big.pt2 -o my_report      # no task: a user's arrays

A task plug-in (``kdmobile.task.get_task``) gives

- ``eval_set(data, student_meta) -> EvalSet``: the model inputs of every example, the labels, the example
  timed for latency, and optionally its own metric function (the email task's diversity rule, say);
- ``find_teacher`` / ``load_teacher(path, eval_set, threads) -> TeacherModel`` (called in a bench worker).

Without a task, ``--data FILE.npz`` is the evaluation set (``npz_eval_set``: arrays named after the model
inputs or ``x0``, ``x1``, ...; an optional ``labels`` ``int[N]``) and ``--teacher`` a ``.pt2`` program
(``torch.export.save``) or an exported artifact (``load_teacher``). The metrics are generic
(``classification_metrics``): top-1 and top-3 against the labels, agreement with the teacher.
This module imports no task: the harness reaches tasks only through ``kdmobile.task``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdmobile.errors import UsageError

# (logits [N, C], acceptable class indices per example or None, teacher logits or None) -> metrics
MetricFn = Callable[[np.ndarray, Sequence[Sequence[int]] | None, np.ndarray | None], dict[str, float]]


@dataclass
class EvalSet:
    """The evaluation data of one bench run.

    ``inputs`` holds one array per model input with a leading sample axis (example ``k`` is
    ``x[k : k + 1]``). ``acceptable`` lists the acceptable class indices of each example (None: unlabelled).
    ``texts`` are the raw texts of a text task (the browser run tokenises them in JavaScript).
    """

    task: str
    data: str
    inputs: tuple[np.ndarray, ...]
    acceptable: list[list[int]] | None
    latency_index: int  # the example timed at batch 1
    texts: list[str] | None = None
    tokenizer_json: str | None = None
    metric: MetricFn | None = None  # the task's own metrics; None: ``classification_metrics``
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ids(self) -> np.ndarray:
        """The first input (the token ids of a text task)."""
        return self.inputs[0]

    def __len__(self) -> int:
        return int(len(self.inputs[0]))

    def rows(self, idx: Sequence[int]) -> tuple[np.ndarray, ...]:
        """The inputs of examples ``idx`` (contiguous copies)."""
        return tuple(np.ascontiguousarray(x[list(idx)]) for x in self.inputs)

    def fingerprint(self) -> str:
        """sha256 of the data and its labels: a baseline measured on other data is not comparable."""
        if self.texts is not None:  # a text task: the texts and labels (unchanged by a tokenizer change)
            blob = json.dumps([self.texts, self.acceptable], ensure_ascii=False, separators=(",", ":"))
            return hashlib.sha256(blob.encode("utf-8")).hexdigest()
        h = hashlib.sha256()
        for x in self.inputs:
            h.update(f"{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        h.update(json.dumps(self.acceptable).encode())
        return h.hexdigest()

    def metrics(self, logits: np.ndarray, teacher_logits: np.ndarray | None) -> dict[str, float]:
        """``n``, ``top1``, ``recall_at_3`` (with labels) and ``teacher_agreement``, ``kl`` (with a teacher)."""
        fn = self.metric or classification_metrics
        return fn(logits, self.acceptable, teacher_logits)


@dataclass
class TeacherModel:
    """A loaded teacher, ready to time and to predict (inside a worker)."""

    name: str
    path: str
    size_bytes: int
    call: Callable[[list[int]], Callable[[], Any]]  # example indices -> zero-arg call on prepared inputs
    logits: Callable[[], np.ndarray]  # [N, C] over the whole eval set
    flops: Callable[[list[int]], int]
    runtime: str = "PyTorch eager"  # what runs it, as the report labels it


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def classification_metrics(
    logits: np.ndarray,
    acceptable: Sequence[Sequence[int]] | None,
    teacher_logits: np.ndarray | None = None,
    k: int = 3,
) -> dict[str, float]:
    """Generic classifier metrics of ``logits [N, C]``.

    Returns:
        ``n``; with labels ``top1`` (the best class is acceptable) and ``recall_at_3`` (an acceptable class
        is among the ``k`` best, ties to the lower index); with the teacher's logits ``teacher_agreement``
        (same best class) and ``kl`` (mean KL(teacher || model) at temperature 1, nats).
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {z.shape}")
    out: dict[str, float] = {"n": int(len(z))}
    if acceptable is not None:
        if len(acceptable) != len(z):
            raise ValueError(f"{len(z)} rows of logits but {len(acceptable)} labelled examples")
        order = np.argsort(-z, axis=1, kind="stable")[:, :k]
        top1 = [int(o[0]) in set(ok) for o, ok in zip(order, acceptable, strict=True)]
        topk = [bool(set(map(int, o)) & set(ok)) for o, ok in zip(order, acceptable, strict=True)]
        out["top1"], out["recall_at_3"] = float(np.mean(top1)), float(np.mean(topk))
    if teacher_logits is not None:
        t = np.asarray(teacher_logits, dtype=np.float64)
        if t.shape != z.shape:
            raise ValueError(f"teacher logits {t.shape} and logits {z.shape} differ in shape")
        out["teacher_agreement"] = float(np.mean(t.argmax(-1) == z.argmax(-1)))
        lt = _log_softmax(t)
        out["kl"] = float(np.mean((np.exp(lt) * (lt - _log_softmax(z))).sum(-1)))
    return out


def fidelity(outputs: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How close ``outputs`` are to ``reference`` (same shape): ``sqnr_db``, ``max_abs``, ``mean_abs``, ``n``."""
    a = np.asarray(outputs, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if a.shape != r.shape:
        raise ValueError(f"outputs {a.shape} and reference {r.shape} differ in shape")
    err = a - r
    noise = float(np.mean(err**2))
    signal = float(np.mean(r**2))
    sqnr = float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-30) / noise)
    return {
        "sqnr_db": min(sqnr, 200.0),  # identical outputs: capped so the report stays valid JSON
        "max_abs": float(np.abs(err).max()) if err.size else 0.0,
        "mean_abs": float(np.abs(err).mean()) if err.size else 0.0,
        "n": int(len(a)),
    }


def median_length_index(ids: np.ndarray) -> int:
    """The example whose non-padding length is the median one (ties: the first)."""
    lengths = (np.asarray(ids) != 0).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    return int(order[len(order) // 2])


def npz_eval_set(path: str | Path, input_specs: Sequence[dict[str, Any]], task: str = "npz") -> EvalSet:
    """The evaluation set in ``path``: arrays named after the model inputs (or ``x0``, ``x1``, ...) with a
    leading sample axis, and an optional ``labels`` ``int[N]``. ``input_specs`` are the export's (name,
    shape, dtype); every example must have the model's per-example shape.

    Raises:
        UsageError: naming the file and what is wrong with it.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise UsageError(f"--data {path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    names = [s["name"] for s in input_specs]
    if all(n in arrays for n in names):
        keys = names
    elif all(f"x{i}" in arrays for i in range(len(names))):
        keys = [f"x{i}" for i in range(len(names))]
    else:
        raise UsageError(
            f"--data {path}: holds {sorted(arrays)}; expected one array per model input named "
            f"{', '.join(names)} (or {', '.join(f'x{i}' for i in range(len(names)))}), plus optional 'labels'"
        )
    inputs = []
    for key, spec in zip(keys, input_specs, strict=True):
        x = arrays[key]
        want = tuple(spec["shape"][1:])
        if x.ndim < 1 or tuple(x.shape[1:]) != want:
            raise UsageError(
                f"--data {path}: array {key!r} has shape {x.shape}; the model takes [N, {', '.join(map(str, want))}]"
            )
        inputs.append(np.ascontiguousarray(x.astype(np.dtype(spec["dtype"]), copy=False)))
    n = len(inputs[0])
    if n == 0 or any(len(x) != n for x in inputs):
        raise UsageError(f"--data {path}: the input arrays must have the same, non-zero number of examples")
    acceptable = None
    if "labels" in arrays:
        y = arrays["labels"]
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise UsageError(
                f"--data {path}: 'labels' must be int[{n}], got {y.dtype}[{', '.join(map(str, y.shape))}]"
            )
        acceptable = [[int(v)] for v in y]
    return EvalSet(task=task, data=str(path), inputs=tuple(inputs), acceptable=acceptable, latency_index=0)


def is_generic_teacher(path: str | Path) -> bool:
    """A teacher the harness loads itself: a ``.pt2`` program or an exported artifact (it has a sidecar)."""
    from kdmobile.export.runner import artifact_metadata_path

    path = Path(path)
    return path.suffix == ".pt2" or artifact_metadata_path(path).is_file()


def load_teacher(path: str | Path, eval_set: EvalSet, threads: int) -> TeacherModel:
    """A ``.pt2`` program (``torch.export.save``) or an exported artifact as the server-side teacher."""
    from kdmobile.harness.eager import load_model

    path = Path(path)
    model = load_model(path, threads)

    def call(idx: list[int]) -> Callable[[], Any]:
        rows = eval_set.rows(idx)
        return lambda: model.predict(rows)

    def flops(idx: list[int]) -> int | None:
        return model.flops(eval_set.rows(idx))

    def logits() -> np.ndarray:
        return model.predict_all(eval_set.inputs)

    size = (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else path.stat().st_size
    )
    return TeacherModel(f"{path.name} ({model.kind})", str(path), size, call, logits, flops, model.label)


def is_npz(data: str | None) -> bool:
    """``--data`` names a ``.npz`` file (a user's evaluation set) rather than a task's split."""
    return bool(data) and str(data).endswith(".npz")


def is_classifier(output_specs: Sequence[dict[str, Any]]) -> bool:
    """One output of shape ``[1, C]`` with ``C >= 2``: judged by top-1/top-k; other models by fidelity."""
    return len(output_specs) == 1 and len(output_specs[0]["shape"]) == 2 and output_specs[0]["shape"][1] >= 2


def eval_set_for(
    task: str | None, data: str, student_meta: dict[str, Any], validation: dict[str, Any]
) -> EvalSet:
    """The evaluation set of a bench run: ``data`` as a ``.npz`` file, else the task's split ``data``.

    ``validation`` is the export summary's ``validation`` (its ``input_specs`` and ``output_specs``).
    """
    if is_npz(data):
        if not Path(data).is_file():
            raise UsageError(f"--data {data}: file not found")
        input_specs = validation.get("input_specs") or []
        if not input_specs:
            raise UsageError(f"--data {data}: the export summary records no input specs to read it with")
        es = npz_eval_set(data, input_specs, task or "npz")
        es.info["classifier"] = is_classifier(validation.get("output_specs") or [])
        return es
    if not task:
        raise UsageError(
            f"--data {data!r} is not a .npz file: name the task (--task NAME) or pass --data FILE.npz"
        )
    from kdmobile.task import get_task

    return get_task(task).eval_set(data, student_meta)


def teacher_for(task: str | None, path: str, eval_set: EvalSet, threads: int) -> TeacherModel:
    """The task's teacher loader, or the harness's own for a ``.pt2`` program or an exported artifact."""
    if task and not is_generic_teacher(path):
        from kdmobile.task import get_task

        return get_task(task).load_teacher(path, eval_set, threads)
    return load_teacher(path, eval_set, threads)
