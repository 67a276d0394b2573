"""One way to load and call the models the bench compares with: a checkpoint, a ``.pt2`` program, an artifact.

    python -c "from kdmobile.harness.eager import load_model; m = load_model('build/email/student.safetensors'); print(m.kind)"

- a kdmobile checkpoint (``.safetensors`` + its JSON metadata): the eager student an export came from;
- a ``.pt2`` file written by ``torch.export.save``: a user's eager model (or teacher) without a checkpoint;
  run as ``torch.export.load(path).module()``;
- an exported artifact (it has a metadata sidecar): run in its own runtime at batch 1.

Every output of a model is flattened and concatenated per example, so ``predict`` returns ``[B, D]`` (the
logits of a one-output classifier).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdmobile.errors import UsageError


def _flatten(outputs: Any, batch: int) -> np.ndarray:
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    arrays = [np.asarray(o.detach().numpy() if hasattr(o, "detach") else o) for o in outputs]
    return np.concatenate([a.reshape(batch, -1).astype(np.float32) for a in arrays], axis=1)


@dataclass
class LoadedModel:
    """A model the bench can time and predict with; ``kind`` is ``checkpoint``, ``pt2`` or ``artifact``."""

    kind: str
    path: str
    module: Any = None  # the torch module (checkpoint, pt2)
    runtime: Any = None  # the artifact's Runtime
    batch_independent: bool = True  # a checkpoint's module runs any batch; an exported program may not
    label: str = "PyTorch eager"  # what runs it, as a report labels it

    def _tensors(self, rows: Sequence[np.ndarray]) -> tuple[Any, ...]:
        import torch

        return tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in rows)

    def call(self, rows: Sequence[np.ndarray]) -> Callable[[], Any]:
        """A zero-argument call on ``rows`` with every input prepared beforehand (what the bench times)."""
        if self.runtime is not None:
            specs = list(getattr(self.runtime, "inputs", []) or [])
            xs = (
                [x.astype(np.dtype(s.dtype)) for x, s in zip(rows, specs, strict=False)]
                if specs
                else list(rows)
            )
            runtime = self.runtime
            return lambda: runtime(*xs)
        import torch

        x, module = self._tensors(rows), self.module

        def run() -> Any:
            with torch.inference_mode():
                return module(*x)

        return run

    def predict(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        """``[B, D]``: every output flattened per example (batch-1 calls when the model needs them)."""
        batch = len(rows[0])
        if self.runtime is not None or not self.batch_independent:
            if batch > 1:
                return np.concatenate([self.predict([x[k : k + 1] for x in rows]) for k in range(batch)])
        return _flatten(self.call(rows)(), batch)

    def predict_all(self, inputs: Sequence[np.ndarray], chunk: int = 256) -> np.ndarray:
        n = len(inputs[0])
        return np.concatenate([self.predict([x[s : s + chunk] for x in inputs]) for s in range(0, n, chunk)])

    def flops(self, rows: Sequence[np.ndarray]) -> int | None:
        if self.module is None:
            return None
        from kdmobile.harness.machine import model_flops

        try:
            return model_flops(self.module, self._tensors(rows))
        except Exception:  # noqa: BLE001 - a FLOP count is a nicety; an exotic module may not trace
            return None


def load_model(
    path: str | Path, threads: int | None = None, *, trust_unverified: bool = False
) -> LoadedModel:
    """Load a checkpoint, a ``.pt2`` program or an exported artifact (see the module docstring); ``threads``
    sets torch's (and the artifact runtime's) thread count; ``trust_unverified`` accepts a checkpoint without
    a sha256 (``--trust-unverified``).

    Raises:
        UsageError: the file is missing or none of the three.
    """
    import torch

    from kdmobile.export.runner import artifact_metadata_path

    path = Path(path)
    if not path.exists():
        raise UsageError(f"model file not found: {path}")
    if threads is not None:  # None: leave this process's torch threads alone (a FLOP count, a hash)
        torch.set_num_threads(threads)
    if artifact_metadata_path(path).is_file():
        import json

        from kdmobile.export import get_target, load_artifact

        runtime = load_artifact(path, threads=threads or 1)
        target = get_target(json.loads(artifact_metadata_path(path).read_text())["target"])
        return LoadedModel("artifact", str(path), runtime=runtime, label=target.runtime_label)
    if path.suffix == ".pt2":
        try:
            module = torch.export.load(str(path)).module()
        except Exception as e:  # noqa: BLE001 - any failure here means: not a loadable program
            raise UsageError(
                f"{path}: not a program written by torch.export.save ({type(e).__name__}: {e})"
            ) from None
        return LoadedModel(
            "pt2", str(path), module=module, batch_independent=False, label="PyTorch (torch.export program)"
        )
    from kdmobile.checkpoint import load_checkpoint, meta_path

    if not meta_path(path).is_file():
        raise UsageError(
            f"{path}: not a kdmobile checkpoint (no {meta_path(path).name}), a .pt2 program "
            "(torch.export.save) or an exported artifact (no sidecar)"
        )
    module, _ = load_checkpoint(path, trust_unverified=trust_unverified)
    return LoadedModel("checkpoint", str(path), module=module.eval())
