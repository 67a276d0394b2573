"""The contract between kdmobile and one export target (one file per target in ``targets/``).

A target turns an eager ``nn.Module`` into an on-device artifact and loads that artifact back in its real
runtime. Validation (``kdmobile.export.validate``) then runs the artifact on the same inputs as the eager
model and records ``ErrorStats``; outside ``Tolerance`` is an error (``MismatchError``), never a warning.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from kdmobile.errors import KDMobileError

PRECISIONS = ("fp32", "fp16", "int8")


class Stage(str, enum.Enum):
    """Where an export failed; the summary and the report name it."""

    EXPORT = "export"
    LOWER = "lower"
    SERIALIZE = "serialize"
    LOAD = "load"
    RUN = "run"
    MISMATCH = "mismatch"


class Status(str, enum.Enum):
    OK = "ok"
    VALIDATED_CONVERSION = "conversion_validated"  # converted + spec checked; runtime unavailable here
    UNAVAILABLE = "unavailable"
    EXPORT_FAILED = "export_failed"
    LOAD_FAILED = "load_failed"
    RUN_FAILED = "run_failed"
    MISMATCH = "mismatch"


class ExportError(KDMobileError):
    """An export stage failed. ``stage`` says which; ``op`` names an unsupported operator if known."""

    def __init__(self, stage: Stage, target: str, message: str, op: str | None = None) -> None:
        self.stage, self.target, self.op = Stage(stage), target, op
        where = f" (op {op})" if op else ""
        super().__init__(f"{target}: {self.stage.value} failed{where}: {message}")


class UnsupportedOpError(ExportError):
    def __init__(self, target: str, op: str, message: str = "", stage: Stage = Stage.EXPORT) -> None:
        super().__init__(stage, target, message or f"operator {op} is not supported by {target}", op=op)


class MismatchError(ExportError):
    def __init__(self, target: str, message: str) -> None:
        super().__init__(Stage.MISMATCH, target, message)


class RuntimeUnavailable(KDMobileError):
    """The runtime cannot run on this machine (e.g. Core ML prediction needs macOS). Not a failure."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float = 0.0
    min_sqnr_db: float = 0.0
    min_top1_agreement: float = 1.0


@dataclass(frozen=True)
class ErrorStats:
    max_abs: float
    mean_abs: float
    sqnr_db: float
    top1_agreement: float
    n: int


@runtime_checkable
class Runtime(Protocol):
    """A loaded artifact: call on numpy inputs, get numpy outputs. The harness times exactly this call."""

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]: ...


@dataclass
class ModelSpec:
    """What an exporter needs to know about the model besides its weights."""

    input_names: list[str]
    output_names: list[str]
    example_inputs: tuple[Any, ...]  # torch tensors, batch 1
    calibration: list[tuple[Any, ...]] = field(default_factory=list)  # real samples for int8
    metadata: dict[str, Any] = field(default_factory=dict)


class Target:
    """Base class of an export target. Subclasses live one per file in ``targets/``.

    Subclasses set ``name``, ``suffix``, ``requires`` (import names), ``precisions`` and implement
    ``export`` and ``load``. ``load`` raises ``RuntimeUnavailable`` when the runtime cannot run here.
    """

    name: ClassVar[str]
    suffix: ClassVar[str]
    runtime: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "int8")
    is_dir_artifact: ClassVar[bool] = False

    def export(self, model: Any, spec: ModelSpec, out: Path, precision: str) -> Path:
        raise NotImplementedError

    def load(self, path: Path, threads: int = 1) -> Runtime:
        raise NotImplementedError

    def availability(self) -> tuple[bool, str]:
        """(can export, reason if not): every module in ``requires`` imports."""
        import importlib.util

        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"missing Python modules: {', '.join(missing)} (pip install 'kdmobile[{self.name}]')"
        return True, ""
