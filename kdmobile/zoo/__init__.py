"""A zoo of on-device architectures, built offline, to prove the exporters on models people really ship.

    python -m kdmobile.zoo.coverage -o docs/coverage.md          # every model x target x precision
    python -c "from kdmobile.zoo import build, names; print(names()); print(build('mnist_cnn').summary())"

Each entry builds a ``ZooModel``: the module (eval mode), example inputs at batch 1, calibration and
validation samples (numpy, leading sample axis, one array per input), whether the model is *real* (trained
or pretrained weights AND real inputs: judged by top-1 agreement with the eager model) or random-init
(judged by SQNR, since the argmax of random logits flips on noise), and labels when real.

Vision models come from ``transformers`` configs with random init (torchvision and timm wheels need the
CUDA torch here); their inputs are 128 x 128 px (``small=True``: 64 px and shallower configs, for tests).
Entries register with ``@ZOO.register(name)``; building one imports torch (and transformers) lazily.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdmobile.registry import Registry

# The bars the coverage matrix judges a cell by (the exporters' own tolerances still decide its status:
# they also bound the absolute error, and ask 60 dB of fp32 where the zoo asks 40).
MIN_SQNR_DB = {"fp32": 40.0, "fp16": 35.0, "int8": 20.0}
MIN_TOP1 = {"fp32": 0.995, "fp16": 0.99, "int8": 0.98}

_ENTRY_MODULES = ("kdmobile.zoo.vision", "kdmobile.zoo.text", "kdmobile.zoo.audio")


@dataclass
class ZooModel:
    """A built zoo entry. Arrays have a leading sample axis; ``x[k : k + 1]`` is one batch-1 sample."""

    name: str
    module: Any
    example_inputs: tuple[Any, ...]
    calibration: tuple[np.ndarray, ...]
    validation: tuple[np.ndarray, ...]
    real: bool
    labels: np.ndarray | None = None
    input_names: list[str] = field(default_factory=list)
    family: str = ""  # cnn, transformer, rnn, mlp, embedding
    notes: str = ""

    def params(self) -> int:
        return int(sum(p.numel() for p in self.module.parameters()))

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "params": self.params(),
            "inputs": {
                n: [list(x.shape[1:]), str(x.dtype)]
                for n, x in zip(self.input_names, self.validation, strict=True)
            },
            "real": self.real,
            "n_calibration": int(len(self.calibration[0])),
            "n_validation": int(len(self.validation[0])),
            "notes": self.notes,
        }

    def bar(self, precision: str) -> tuple[str, float]:
        """The zoo's bar for ``precision``: ("top1", floor) for real models, ("sqnr_db", floor) otherwise."""
        return bar(self.real, precision)


def bar(real: bool, precision: str) -> tuple[str, float]:
    """("top1", floor) for a real model, ("sqnr_db", floor) for a random-init one, at ``precision``."""
    family = "int8" if precision.startswith("int8") else precision
    return ("top1", MIN_TOP1[family]) if real else ("sqnr_db", MIN_SQNR_DB[family])


Builder = Callable[..., ZooModel]
ZOO: Registry[Builder] = Registry("zoo model")


def _load() -> Registry[Builder]:
    for m in _ENTRY_MODULES:
        importlib.import_module(m)
    return ZOO


def names() -> list[str]:
    """Every zoo entry's name."""
    return _load().names()


def build(
    name: str, *, small: bool = False, n_calibration: int = 32, n_validation: int = 64, seed: int = 0
) -> ZooModel:
    """Build zoo entry ``name`` (KeyError listing the valid names on a miss).

    Args:
        small: a reduced configuration (lower resolution, fewer layers) for fast tests.
        n_calibration: int8 calibration samples.
        n_validation: validation samples (real models: real held-out samples, as many as exist up to this).
        seed: weights of random-init models and synthetic inputs.
    """
    import torch

    builder = _load().get(name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # in-process training is then deterministic for a seed
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            zm = builder(small=small, n_calibration=n_calibration, n_validation=n_validation, seed=seed)
    finally:
        torch.set_num_threads(threads)
    zm.name = name
    zm.module.eval()
    if not zm.input_names:
        from kdmobile.export.specs import forward_input_names

        zm.input_names = forward_input_names(zm.module, [f"x{i}" for i in range(len(zm.validation))])
    return zm


# -- helpers for entries -----------------------------------------------------------------------------------
def smooth_noise(n: int, shape: tuple[int, ...], seed: int, scale: int = 8) -> np.ndarray:
    """Seeded synthetic images/feature maps ``[n, C, *spatial]``: low-frequency noise plus fine noise,
    roughly zero-mean unit-variance, like normalised natural inputs (white noise alone calibrates int8
    ranges no real input has)."""
    import torch
    from torch.nn import functional as F

    g = torch.Generator().manual_seed(seed)
    c, *spatial = shape
    coarse = torch.randn((n, c, *[max(1, s // scale) for s in spatial]), generator=g)
    mode = "bilinear" if len(spatial) == 2 else "linear"
    x = F.interpolate(coarse, size=tuple(spatial), mode=mode, align_corners=False)
    x = x / x.std().clamp(min=1e-6) + 0.3 * torch.randn((n, c, *spatial), generator=g)
    return x.numpy().astype(np.float32)


def as_tensors(arrays: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
    """The first sample of each array as a batch-1 tensor (example inputs for ``torch.export``)."""
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(a[:1])) for a in arrays)


__all__ = [
    "MIN_SQNR_DB",
    "MIN_TOP1",
    "ZOO",
    "ZooModel",
    "as_tensors",
    "bar",
    "build",
    "names",
    "smooth_noise",
]
