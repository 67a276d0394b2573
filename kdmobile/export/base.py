"""The contract between kdmobile and one export target (one file per target in ``targets/``).

    kdmobile targets            # lists every registered target and whether it exports/runs here

A target turns an eager ``nn.Module`` into an on-device artifact and loads that artifact back in its real
runtime. Validation (``kdmobile.export.validate``) then runs the artifact on the same inputs as the eager
model and records ``ErrorStats``; outside ``Tolerance`` is an error (``MismatchError``), never a warning.
The tolerances live in ``TOLERANCES`` below: the one place where fp16 and int8 are relaxed.

Writing a target (``targets/mytarget.py``)::

    @register_target
    class MyTarget(Target):
        name, suffix, runtime = "mytarget", ".bin", "my-runtime"
        requires = ("my_runtime",)            # import names; heavy imports go inside methods

        def export(self, model, spec, out, precision): ...   # write ``out``; return details (``flavour``)
        def load(self, path, threads=1): ...                 # -> Runtime; RuntimeUnavailable if it can't run
        def inspect(self, path): ...                         # -> (inputs, outputs) TensorSpecs of the artifact

Everything else about the target lives on its class too, so the generic code never tests a target's
name: ``op_patterns`` (how its converter names an unsupported operator), ``post_export`` (extra files,
e.g. ``.ort``), ``flags`` (summary warnings), ``bundle_snippet`` (README lines that load and run it),
``bundle_sidecars``, ``runtime_label``, ``runtime_dist``, ``report_order``, ``colour``, ``check_thresholds``
(merged into ``thresholds()``, the one source ``kdmobile check`` reads) and ``tolerance_overrides``.
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from kdmobile.errors import KDMobileError
from kdmobile.registry import Registry

# ``int8-full`` is a second int8 flavour (full-integer, static activations) for targets that offer both;
# ``int8-qat`` exports a program already quantized by quantization-aware training (kdmobile.compress.qat).
PRECISIONS = ("fp32", "fp16", "int8", "int8-full", "int8-qat")


def precision_family(precision: str) -> str:
    """``int8-full`` → ``int8``: the family whose tolerance applies."""
    return "int8" if precision.startswith("int8") else precision


class Stage(enum.StrEnum):
    """Where an export failed; the summary and the report name it."""

    EXPORT = "export"
    LOWER = "lower"
    SERIALIZE = "serialize"
    LOAD = "load"
    RUN = "run"
    MISMATCH = "mismatch"


class Status(enum.StrEnum):
    OK = "ok"
    VALIDATED_CONVERSION = "conversion_validated"  # converted + spec checked; runtime unavailable here
    UNAVAILABLE = "unavailable"
    EXPORT_FAILED = "export_failed"
    LOAD_FAILED = "load_failed"
    RUN_FAILED = "run_failed"
    MISMATCH = "mismatch"


STAGE_STATUS = {
    Stage.EXPORT: Status.EXPORT_FAILED,
    Stage.LOWER: Status.EXPORT_FAILED,
    Stage.SERIALIZE: Status.EXPORT_FAILED,
    Stage.LOAD: Status.LOAD_FAILED,
    Stage.RUN: Status.RUN_FAILED,
    Stage.MISMATCH: Status.MISMATCH,
}


class ExportError(KDMobileError):
    """An export stage failed. ``stage`` says which; ``op`` names an unsupported operator if known."""

    def __init__(self, stage: Stage, target: str, message: str, op: str | None = None) -> None:
        self.stage, self.target, self.op, self.detail = Stage(stage), target, op, message
        where = f" (op {op})" if op else ""
        super().__init__(f"{target}: {self.stage.value} failed{where}: {message}")


class UnsupportedOpError(ExportError):
    """``target`` cannot convert or run operator ``op``."""

    def __init__(self, target: str, op: str, message: str = "", stage: Stage = Stage.EXPORT) -> None:
        super().__init__(stage, target, message or f"operator {op} is not supported by {target}", op=op)


class MismatchError(ExportError):
    """Validation ran and the artifact is outside tolerance; ``stats``/``by_split`` hold what was measured."""

    def __init__(
        self,
        target: str,
        message: str,
        stats: dict[str, Any] | None = None,
        by_split: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(Stage.MISMATCH, target, message)
        self.stats, self.by_split = stats, by_split


class RuntimeUnavailable(KDMobileError):
    """The runtime cannot run on this machine (e.g. Core ML prediction needs macOS). Not a failure."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Tolerance:
    """Validation bounds. ``max_abs <= atol + rtol * max|reference|``, SQNR and top-1 agreement floors.

    ``min_top1_agreement`` applies to the real (held-out) samples; SQNR and the absolute bound to every
    validation input (real and seeded random).
    """

    atol: float
    rtol: float = 0.0
    min_sqnr_db: float = 0.0
    min_top1_agreement: float = 1.0

    def violations(self, stats: ErrorStats, ref_max_abs: float, real: ErrorStats | None = None) -> list[str]:
        """Human-readable reasons why ``stats`` is out of tolerance (empty list: within)."""
        out = []
        bound = self.atol + self.rtol * ref_max_abs
        if not stats.max_abs <= bound:
            out.append(
                f"max abs error {stats.max_abs:.3g} > {bound:.3g} (atol {self.atol:g} + rtol {self.rtol:g} * {ref_max_abs:.3g})"
            )
        if not stats.sqnr_db >= self.min_sqnr_db:
            out.append(f"SQNR {stats.sqnr_db:.1f} dB < {self.min_sqnr_db:g} dB")
        top1 = (real or stats).top1_agreement
        if not top1 >= self.min_top1_agreement:
            which = "held-out" if real is not None else "all"
            out.append(f"top-1 agreement on {which} samples {top1:.4f} < {self.min_top1_agreement:g}")
        return out


# The ONE place where precisions are relaxed. fp32 artifacts differ from eager only by kernel order and
# vectorised math (XNNPACK: ~2e-4 relative on the email student's logits); fp16 computes in half precision
# (Core ML's default). int8 is judged on signal (SQNR) and decisions (top-1): its per-element bound is
# loose because static int8 clips the seeded random inputs, which lie outside the real samples its
# activation ranges were calibrated on (ExecuTorch email student: max error 0.17 of the logit range).
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-3, rtol=1e-3, min_sqnr_db=60.0, min_top1_agreement=0.995),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2, min_sqnr_db=35.0, min_top1_agreement=0.99),
    "int8": Tolerance(atol=0.05, rtol=0.25, min_sqnr_db=20.0, min_top1_agreement=0.98),
}

# Regression thresholds read by ``kdmobile check`` (the one source: ``Target.thresholds()``); a target
# overrides single keys in ``check_thresholds``. ``browser_latency_pct`` applies to in-browser runs instead
# of ``latency_pct``: a browser shares the machine through several processes and its timer is coarse, so its
# same-run ratio is noisier (measured with two CPU hogs on 2 cores: up to +10% where the Python runtimes
# stayed within +-3%).
DEFAULT_CHECK_THRESHOLDS: dict[str, float] = {
    "latency_pct": 15.0,
    "accuracy_pt": 0.5,
    "size_pct": 5.0,
    "browser_latency_pct": 30.0,
}

SQNR_CAP_DB = 200.0  # identical outputs: SQNR is infinite; JSON holds this cap instead


@dataclass(frozen=True)
class ErrorStats:
    """Artifact vs eager over ``n`` samples. ``sqnr_db`` is capped at 200 (identical outputs)."""

    max_abs: float
    mean_abs: float
    sqnr_db: float
    top1_agreement: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: "int64", "int32", "float32", "float16", "int8"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], tuple(int(s) for s in d["shape"]), str(d["dtype"]))


@runtime_checkable
class Runtime(Protocol):
    """A loaded artifact: call on numpy inputs, get numpy outputs. The harness times exactly this call."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]: ...


class ArtifactRuntime:
    """Base for runtimes: ``inputs``/``outputs`` are the artifact's real specs; ``cast`` adapts dtypes."""

    def __init__(self, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
        self.inputs, self.outputs = inputs, outputs
        self._dtypes = [np.dtype(s.dtype) for s in inputs]

    def cast(self, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        if len(inputs) != len(self._dtypes):
            raise ValueError(
                f"expected {len(self._dtypes)} inputs ({[s.name for s in self.inputs]}), got {len(inputs)}"
            )
        return [x if x.dtype == dt else x.astype(dt) for x, dt in zip(inputs, self._dtypes, strict=True)]

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError


@dataclass
class ModelSpec:
    """What an exporter and the validator need to know about the model besides its weights.

    Arrays are numpy with a leading sample axis: ``calibration[i]`` and ``validation[split][i]`` hold
    input ``i`` for every sample; one sample is ``x[k : k + 1]`` (batch 1, the shape every artifact has).
    ``real_split`` names the split of real held-out samples (top-1 agreement is judged on it).
    """

    task: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    calibration: tuple[np.ndarray, ...]
    validation: dict[str, tuple[np.ndarray, ...]]
    real_split: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def example_inputs(self) -> tuple[np.ndarray, ...]:
        """One real sample (batch 1) for tracing."""
        return tuple(x[:1] for x in self.calibration)

    def torch_example_inputs(self) -> tuple[Any, ...]:
        import torch

        return tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in self.example_inputs())

    def calibration_samples(self) -> Iterator[tuple[np.ndarray, ...]]:
        n = len(self.calibration[0])
        for k in range(n):
            yield tuple(x[k : k + 1] for x in self.calibration)


class Target:
    """Base class of an export target. Subclasses live one per file in ``targets/``.

    Subclasses set ``name``, ``suffix``, ``runtime``, ``requires`` (import names), ``precisions`` and
    implement ``export``, ``load`` and ``inspect``. ``load`` raises ``RuntimeUnavailable`` when the
    runtime cannot run here.
    """

    name: ClassVar[str]
    suffix: ClassVar[str]
    runtime: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    packages: ClassVar[tuple[str, ...]] = ()  # distributions whose versions go into the metadata
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "int8")
    default_precisions: ClassVar[tuple[str, ...] | None] = None  # None: all of ``precisions``
    is_dir_artifact: ClassVar[bool] = False
    tolerance_overrides: ClassVar[dict[str, Tolerance]] = {}
    check_thresholds: ClassVar[dict[str, float]] = {}
    # Regexes over a converter's or runtime's error text; group(s) name the operator it cannot handle.
    op_patterns: ClassVar[tuple[str, ...]] = ()
    # The distribution whose version is "the runtime's version" of the artifact ``load`` gives.
    runtime_dist: ClassVar[str] = ""
    # Report layout: rows sorted by ``report_order``; ``colour`` in plots (any CSS colour).
    report_order: ClassVar[int] = 100
    colour: ClassVar[str] = "#7f7f7f"
    # Bundles carry each artifact's metadata sidecar (a web bundle keeps only meta.json).
    bundle_sidecars: ClassVar[bool] = True

    # -- to implement -------------------------------------------------------------------------------
    def export(
        self, model: Any, spec: ModelSpec, out: Path, precision: str, variant: str | None = None
    ) -> dict[str, Any]:
        """Write the artifact to ``out``; return details (at least ``flavour``). Raise ``ExportError``.

        ``variant`` is one of ``variants(precision)``; the runner tries them in order until one validates.
        """
        raise NotImplementedError

    def variants(self, precision: str) -> tuple[str | None, ...]:
        """Ways to produce ``precision``, best first (default: one)."""
        return (None,)

    def variant_applies(self, variant: str | None, model: Any) -> bool:
        """Whether ``variant`` means anything for ``model`` (e.g. one that needs embedding tables).

        The runner skips the variants that do not apply, without recording an attempt.
        """
        return True

    def load(self, path: Path, threads: int = 1) -> Runtime:
        raise NotImplementedError

    def inspect(self, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """The artifact's own input and output specs, read from the file (not from the model)."""
        raise NotImplementedError

    def extra_validation(
        self, path: Path, spec: ModelSpec, eager: dict[str, np.ndarray], precision: str
    ) -> dict[str, Any]:
        """Target-specific checks after the main validation (e.g. a second runtime); raise on failure."""
        return {}

    def post_export(
        self, artifact: Path, precision: str, options: dict[str, Any], root: Path
    ) -> dict[str, Any]:
        """Extra steps on a validated artifact (e.g. a second file format), asked for in ``options``.

        Write beside ``artifact`` (atomically); return details to record (paths relative to ``root``).
        An exception is recorded as a flag on the artifact, not a failure.
        """
        return {}

    def flags(self, details: dict[str, Any]) -> list[str]:
        """Warnings about a validated artifact for the summary (e.g. operators left undelegated)."""
        return []

    def bundle_snippet(self, sidecar: dict[str, Any], sidecars: dict[str, dict[str, Any]]) -> str:
        """The bundle README's Markdown section with the few lines that load and run ``sidecar``'s artifact.

        ``sidecars`` holds every bundled precision's sidecar (``inputs``/``outputs`` are the artifact's own
        names, shapes and dtypes).
        """
        return f"Input `{sidecar['inputs']}`, output `{sidecar['outputs']}`.\n"

    @property
    def runtime_label(self) -> str:
        """The runtime ``load`` gives on this host, as a report labels it (default: ``runtime``)."""
        return self.runtime

    # -- provided -----------------------------------------------------------------------------------
    def find_op(self, text: str) -> str | None:
        """The operator named in an error message by one of ``op_patterns``, if any."""
        return find_op(text, self.op_patterns)

    def tolerance(self, precision: str) -> Tolerance:
        if precision in self.tolerance_overrides:
            return self.tolerance_overrides[precision]
        return TOLERANCES[precision_family(precision)]

    def thresholds(self) -> dict[str, float]:
        return {**DEFAULT_CHECK_THRESHOLDS, **self.check_thresholds}

    def artifact_name(self, precision: str) -> str:
        return f"model_{precision}{self.suffix}"

    def availability(self) -> tuple[bool, str]:
        """(can export here, reason if not): every module in ``requires`` imports."""
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            return (
                False,
                f"missing Python modules: {', '.join(missing)} (pip install 'kdmobile[{self.name}]')",
            )
        return True, ""

    def runtime_availability(self) -> tuple[bool, str]:
        """(can run artifacts here, reason if not). Defaults to ``availability()``."""
        return self.availability()

    def error(self, stage: Stage, message: str, op: str | None = None) -> ExportError:
        return (
            UnsupportedOpError(self.name, op, message, stage)
            if op
            else ExportError(stage, self.name, message)
        )

    @contextlib.contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        """Turn any exception inside the block into an ``ExportError`` for ``stage``, naming the op if found."""
        try:
            yield
        except (ExportError, RuntimeUnavailable):
            raise
        except Exception as e:  # noqa: BLE001 - every failure becomes a typed, staged error
            text = with_hint(clean_message(e))
            raise self.error(stage, text, self.find_op(text)) from e


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def find_op(text: str, patterns: Sequence[str]) -> str | None:
    """The operator the first matching pattern names (its groups joined by ``.``), or None."""
    for pat in patterns:
        m = re.search(pat, text)
        if m:
            return ".".join(g for g in m.groups() if g)
    return None


# Failures whose cause is the model, not the target, with what to do about them.
_HINTS = (
    (
        ("GuardOnDataDependentSymNode", "data-dependent"),
        "hint: the model has a data-dependent shape or branch (e.g. trimming padding with x[:, : mask.sum()], "
        "nonzero, a Python `if` on a tensor value); every target needs static shapes, so compute on the full "
        "padded input and mask instead",
    ),
)


def hints_for(text: str) -> list[str]:
    """The hints for a failure message whose usual cause and fix are known."""
    return [hint for needles, hint in _HINTS if any(n in text for n in needles)]


def with_hint(text: str) -> str:
    """``text`` plus its hints (once)."""
    for hint in hints_for(text):
        if hint not in text:
            text = f"{text} ({hint})"
    return text


def clean_message(e: BaseException, limit: int = 600) -> str:
    """A one-paragraph reason: exception type + message without colour codes, trimmed."""
    text = _ANSI.sub("", str(e)).strip() or repr(e)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(e).__name__}: {text}"


def finite(x: float) -> float:
    return x if math.isfinite(x) else SQNR_CAP_DB


TARGETS: Registry[type[Target]] = Registry("target")


def register_target(cls: type[Target]) -> type[Target]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    return TARGETS.register(cls.name)(cls)
