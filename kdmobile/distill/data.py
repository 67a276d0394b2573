"""Dataset items and batches for distillation.

An item is ``{"student": (tensor, ...), "teacher": (tensor, ...), "label": int or int tensor}``; a single
tensor stands for a 1-tuple; ``"teacher"`` may be left out when no loss needs the teacher; ``label`` -1
marks an unlabelled row. A dataset may offer ``get_batch(indices) -> item of batched tensors`` (a fast
path that skips per-item Python work), ``fingerprint() -> str`` (a cheap identity of its teacher inputs
for the cache key) and ``set_epoch(epoch)`` (per-epoch augmentation, teacher online only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdmobile.errors import UsageError


@dataclass
class Batch:
    """A collated batch: input tuples for both models, labels and dataset indices."""

    student: tuple[torch.Tensor, ...]
    teacher: tuple[torch.Tensor, ...]
    label: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        if torch.device(device).type == "cpu":
            return self
        return Batch(
            tuple(t.to(device) for t in self.student),
            tuple(t.to(device) for t in self.teacher),
            self.label.to(device),
            self.index,
        )

    def __len__(self) -> int:
        return len(self.index)


def _as_tuple(x: Any, what: str) -> tuple[torch.Tensor, ...]:
    if x is None:
        return ()
    if isinstance(x, torch.Tensor):
        return (x,)
    if isinstance(x, np.ndarray):
        return (torch.from_numpy(x),)
    if isinstance(x, tuple | list):
        return tuple(torch.from_numpy(v) if isinstance(v, np.ndarray) else torch.as_tensor(v) for v in x)
    raise UsageError(f"dataset item {what!r} must be a tensor or a tuple of tensors, got {type(x).__name__}")


def _check_item(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict) or "student" not in item:
        raise UsageError(
            'a distillation dataset item is a dict {"student": (...), "teacher": (...), "label": int}, got '
            f"{type(item).__name__}"
        )
    return item


def collate(items: Sequence[dict[str, Any]], indices: Sequence[int] | None = None) -> Batch:
    """Stack a list of items into a :class:`Batch` (tensors stacked along a new first dimension)."""
    items = [_check_item(it) for it in items]
    s = [_as_tuple(it["student"], "student") for it in items]
    t = [_as_tuple(it.get("teacher"), "teacher") for it in items]
    student = tuple(torch.stack([row[j] for row in s]) for j in range(len(s[0])))
    teacher = tuple(torch.stack([row[j] for row in t]) for j in range(len(t[0]))) if t and t[0] else ()
    label = torch.stack([torch.as_tensor(it.get("label", -1), dtype=torch.long) for it in items])
    index = torch.as_tensor(list(indices) if indices is not None else range(len(items)), dtype=torch.long)
    return Batch(student, teacher, label, index)


def fetch(dataset: Any, indices: Sequence[int]) -> Batch:
    """The batch of ``dataset`` at ``indices``, through ``get_batch`` when the dataset has one."""
    if hasattr(dataset, "get_batch"):
        item = _check_item(dataset.get_batch(list(indices)))
        label = torch.as_tensor(item.get("label", -1), dtype=torch.long)
        if label.dim() == 0:
            label = label.expand(len(indices)).clone()
        return Batch(
            _as_tuple(item["student"], "student"),
            _as_tuple(item.get("teacher"), "teacher"),
            label,
            torch.as_tensor(list(indices), dtype=torch.long),
        )
    return collate([dataset[i] for i in indices], indices)


def fingerprint(dataset: Any, *, batch_size: int = 512, progress: bool = False) -> str:
    """sha256 identity of the teacher inputs of ``dataset``, in index order.

    Uses ``dataset.fingerprint()`` when defined (cheap, e.g. a hash of the source arrays and the
    augmentation settings); otherwise hashes dtype, shape and bytes of every teacher input tensor.
    """
    if hasattr(dataset, "fingerprint"):
        return "custom:" + str(dataset.fingerprint())
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    n = len(dataset)
    h.update(f"n={n}".encode())
    starts = range(0, n, batch_size)
    for start in tqdm(
        starts, desc="fingerprint teacher inputs", unit="batch", disable=not progress, leave=False
    ):
        batch = fetch(dataset, range(start, min(n, start + batch_size)))
        for tensor in batch.teacher:
            t = tensor.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
