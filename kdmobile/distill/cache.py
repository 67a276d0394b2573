"""Teacher-output cache: run the teacher once over the transfer set, read its logits from disk afterwards.

    python -c "from kdmobile.distill.cache import TeacherCache; print(TeacherCache.open('build/runs/mnist/teacher_cache'))"

Layout of a cache directory (written atomically as a whole: a crash leaves the old cache or none)::

    header.json    format_version, key, components {teacher, data, settings}, mode, shapes, files {sha256, ...}
    logits.npy     mode "full": float32 or float16 [N, ..., C]
    values.npy     mode "topk": float16 [N, ..., k]  the k largest logits
    indices.npy    mode "topk": int32   [N, ..., k]  their classes
    rest.npy       mode "topk": float32 [N, ...]     probability mass (T=1) of the other C - k classes

The key is the sha256 of (sha256 of the teacher's state_dict bytes, a fingerprint of every teacher input,
the settings, the format version). ``open`` checks the key, every file's size and sha256 and the array
shapes; any mismatch is a ``CacheError`` with the reason, and ``open_or_build`` reports it and rebuilds.

Top-k reconstruction (documented choice): ``logits(idx)`` returns dense logits. The k stored logits are
placed at their classes and every other class gets the same logit ``c``, chosen so that the softmax at
T=1 gives those classes exactly the stored remaining mass (spread uniformly):
``c = log(rest / (C - k)) + logsumexp(top-k) - log(1 - rest)``. The loss then applies its temperature to
these logits. ``rest`` is clamped to >= 1e-12 so ``c`` stays finite.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdmobile.distill import distributed as D
from kdmobile.distill.data import fetch, fingerprint
from kdmobile.errors import KDMobileError, UsageError
from kdmobile.io import atomic_path, sha256_file, write_json

FORMAT_VERSION = 1
_MIN_REST = 1e-12


class CacheError(KDMobileError):
    """A cache on disk is missing, stale (another key) or corrupt; ``reason`` says which."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"teacher cache {path}: {reason}")


def state_dict_sha256(module: torch.nn.Module) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor in ``module.state_dict()``, in order."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        if not isinstance(t, torch.Tensor):
            h.update(f"{name}={t!r}".encode())
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def teacher_identity(teacher: Any, teacher_id: str | None = None) -> str:
    """What identifies the teacher in the cache key: ``teacher_id`` if given, else its state_dict sha256."""
    if teacher_id:
        return f"id:{teacher_id}"
    if callable(getattr(teacher, "state_dict", None)):
        return state_dict_sha256(teacher)
    raise UsageError(
        f"the teacher is a plain callable ({type(teacher).__name__}) with no state_dict: pass teacher_id=... "
        "(e.g. a hash of its weights) so the teacher-output cache can tell teachers apart"
    )


def teacher_logits(teacher: Callable[..., Any], inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Call ``teacher(*inputs)`` and return its logits (a tensor, ``.logits``, or a tuple's first element)."""
    if not inputs:
        raise UsageError('the dataset items have no "teacher" inputs, but a loss term needs the teacher')
    return as_logits(teacher(*inputs), "teacher")


def as_logits(out: Any, who: str = "teacher") -> torch.Tensor:
    """The logits in a model's output: a tensor, ``.logits`` (Hugging Face) or a tuple's first element."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise UsageError(
        f"the {who} returned {type(out).__name__}; expected logits (a tensor, .logits or a tuple)"
    )


def cache_key(teacher: str, data: str, settings: dict[str, Any]) -> str:
    blob = json.dumps(
        {"format_version": FORMAT_VERSION, "teacher": teacher, "data": data, "settings": settings},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _files_for(mode: str) -> tuple[str, ...]:
    return ("logits.npy",) if mode == "full" else ("values.npy", "indices.npy", "rest.npy")


class TeacherCache:
    """A verified, memory-mapped teacher-output cache. Build with :meth:`open_or_build`."""

    def __init__(self, path: Path, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.path = Path(path)
        self.header = header
        self.key: str = header["key"]
        self.mode: str = header["mode"]
        self.topk: int = header["topk"]
        self.num_classes: int = header["num_classes"]
        self._arrays = arrays

    def __len__(self) -> int:
        return int(self.header["n"])

    def __repr__(self) -> str:
        return f"TeacherCache({str(self.path)!r}, n={len(self)}, mode={self.mode!r}, key={self.key[:12]})"

    # ----------------------------------------------------------------------------------------------- read
    def logits(self, indices: torch.Tensor | np.ndarray | list[int]) -> torch.Tensor:
        """Dense float32 teacher logits of dataset rows ``indices`` (top-k: reconstructed, see module doc)."""
        idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64)
        if self.mode == "full":
            return torch.from_numpy(np.ascontiguousarray(self._arrays["logits"][idx])).float()
        vals = torch.from_numpy(np.ascontiguousarray(self._arrays["values"][idx])).float()
        ind = torch.from_numpy(np.ascontiguousarray(self._arrays["indices"][idx])).long()
        rest = (
            torch.from_numpy(np.ascontiguousarray(self._arrays["rest"][idx])).double().clamp(_MIN_REST, 1.0)
        )
        others = self.num_classes - self.topk
        lse_top = torch.logsumexp(vals.double(), dim=-1)
        fill = (torch.log(rest / others) + lse_top - torch.log1p(-rest.clamp(max=1.0 - 1e-7))).float()
        out = fill.unsqueeze(-1).expand(*vals.shape[:-1], self.num_classes).clone()
        return out.scatter_(-1, ind, vals)

    # ------------------------------------------------------------------------------------------- verify
    @classmethod
    def open(cls, path: str | Path, key: str | None = None, *, verify: bool = True) -> TeacherCache:
        """Open a cache; ``CacheError`` if it is missing, has another key, or fails a size/sha256 check."""
        path = Path(path)
        hp = path / "header.json"
        if not hp.is_file():
            raise CacheError(path, "missing (no header.json)")
        try:
            header = json.loads(hp.read_text())
            mode, files = header["mode"], header["files"]
        except (ValueError, KeyError, TypeError) as e:
            raise CacheError(path, f"header.json is unreadable ({e})") from None
        if header.get("format_version") != FORMAT_VERSION:
            raise CacheError(path, f"format version {header.get('format_version')} != {FORMAT_VERSION}")
        if key is not None and header.get("key") != key:
            raise CacheError(
                path,
                f"stale: its key {str(header.get('key'))[:12]}... does not match {key[:12]}... "
                f"(teacher weights, data or settings changed)",
            )
        arrays: dict[str, np.ndarray] = {}
        for name in _files_for(mode):
            fp = path / name
            info = files.get(name)
            if info is None or not fp.is_file():
                raise CacheError(path, f"corrupt: {name} is missing")
            if fp.stat().st_size != info["bytes"]:
                raise CacheError(
                    path, f"corrupt: {name} has {fp.stat().st_size} bytes, header says {info['bytes']}"
                )
            if verify and sha256_file(fp) != info["sha256"]:
                raise CacheError(path, f"corrupt: {name} does not match its sha256 in header.json")
            try:
                arr = np.load(fp, mmap_mode="r")
            except (ValueError, OSError) as e:
                raise CacheError(path, f"corrupt: {name} does not load ({e})") from None
            if list(arr.shape) != info["shape"] or str(arr.dtype) != info["dtype"]:
                raise CacheError(path, f"corrupt: {name} is {arr.dtype}{list(arr.shape)}, header says {info}")
            arrays[name.removesuffix(".npy")] = arr
        return cls(path, header, arrays)

    # -------------------------------------------------------------------------------------------- build
    @classmethod
    def open_or_build(
        cls,
        path: str | Path,
        teacher: Callable[..., Any],
        dataset: Any,
        *,
        topk: int = 0,
        dtype: str = "float32",
        batch_size: int = 256,
        teacher_id: str | None = None,
        env: D.DistEnv | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> tuple[TeacherCache, dict[str, Any]]:
        """Open the cache at ``path`` if its key matches and it verifies; otherwise (re)build it.

        Under DDP every rank computes its contiguous shard of the transfer set, rank 0 merges them, and
        every rank then opens the same files.

        Returns:
            (cache, info) with info ``{"status": "reused"|"built"|"rebuilt", "reason", "seconds", "path",
            "key", "bytes"}``.
        """
        env = env or D.DistEnv()
        log = log or (lambda msg: print(msg, file=sys.stderr))
        if dtype not in ("float32", "float16"):
            raise UsageError(f"cache.dtype must be float32 or float16, got {dtype!r}")
        path = Path(path)
        t0 = time.perf_counter()
        settings = {"topk": int(topk), "dtype": dtype if topk == 0 else "float16+int32+float32"}
        components = {
            "teacher": teacher_identity(teacher, teacher_id),
            "data": fingerprint(dataset, progress=progress and env.is_main),
            "settings": settings,
        }
        key = cache_key(components["teacher"], components["data"], settings)

        status, reason = "reused", None
        if env.is_main:
            try:
                cls.open(path, key)
            except CacheError as e:
                reason = e.reason
                status = "built" if reason.startswith("missing") else "rebuilt"
                if status == "rebuilt":
                    log(f"kdmobile: teacher cache {path} is {reason}: rebuilding it")
        if D.broadcast_flag(env, status != "reused"):
            cls._build(path, teacher, dataset, key, components, topk, dtype, batch_size, env, progress)
            status = status if env.is_main else "built"
        D.barrier(env)
        cache = cls.open(path, key, verify=env.is_main and status != "reused")
        info = {
            "status": status,
            "reason": reason,
            "seconds": round(time.perf_counter() - t0, 3),
            "path": str(path),
            "key": key,
            "bytes": sum(f["bytes"] for f in cache.header["files"].values()),
            "mode": cache.mode,
        }
        return cache, info

    @classmethod
    def _build(
        cls,
        path: Path,
        teacher: Callable[..., Any],
        dataset: Any,
        key: str,
        components: dict[str, Any],
        topk: int,
        dtype: str,
        batch_size: int,
        env: D.DistEnv,
        progress: bool,
    ) -> None:
        from tqdm.auto import tqdm

        n = len(dataset)
        if n == 0:
            raise UsageError("the transfer set is empty: nothing to cache")
        lo, hi = env.rank * n // env.world_size, (env.rank + 1) * n // env.world_size
        shard_dir = path.with_name(f".{path.name}.shards-{key[:12]}")
        shard_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(teacher, torch.nn.Module):
            teacher.eval()
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {}
        bar = tqdm(
            total=hi - lo,
            desc="teacher cache",
            unit="ex",
            disable=not (progress and env.is_main),
            leave=False,
        )
        with torch.no_grad():
            for start in range(lo, hi, batch_size):
                idx = list(range(start, min(hi, start + batch_size)))
                batch = fetch(dataset, idx).to(env.device)
                z = teacher_logits(teacher, batch.teacher).detach().float().cpu()
                if not torch.isfinite(z).all():
                    raise KDMobileError(
                        f"the teacher produced NaN/inf logits for dataset rows {idx[0]}..{idx[-1]}"
                    )
                rows = cls._encode(z, topk, dtype)
                if not arrays:
                    meta = {"item_shape": list(z.shape[1:]), "num_classes": int(z.shape[-1])}
                    if topk >= z.shape[-1]:
                        raise UsageError(
                            f"cache.topk={topk} must be smaller than the {z.shape[-1]} classes (or 0)"
                        )
                    for name, r in rows.items():
                        arrays[name] = np.lib.format.open_memmap(
                            shard_dir / f"{name}.rank{env.rank}.npy",
                            mode="w+",
                            dtype=r.dtype,
                            shape=(hi - lo, *r.shape[1:]),
                        )
                for name, r in rows.items():
                    arrays[name][start - lo : start - lo + len(idx)] = r
                bar.update(len(idx))
        bar.close()
        for a in arrays.values():
            a.flush()
        write_json(shard_dir / f"meta.rank{env.rank}.json", {"lo": lo, "hi": hi, **meta})
        D.barrier(env)
        if env.is_main:
            cls._merge(path, shard_dir, key, components, topk, dtype, n, env.world_size)
            shutil.rmtree(shard_dir, ignore_errors=True)

    @staticmethod
    def _encode(z: torch.Tensor, topk: int, dtype: str) -> dict[str, np.ndarray]:
        if topk == 0:
            return {"logits": z.numpy().astype(np.float16 if dtype == "float16" else np.float32)}
        vals, ind = torch.topk(z, topk, dim=-1)
        lse_all = torch.logsumexp(z.double(), dim=-1)
        masked = z.double().scatter(-1, ind, float("-inf"))
        rest = torch.exp(torch.logsumexp(masked, dim=-1) - lse_all)
        return {
            "values": vals.numpy().astype(np.float16),
            "indices": ind.numpy().astype(np.int32),
            "rest": rest.numpy().astype(np.float32),
        }

    @staticmethod
    def _merge(
        path: Path,
        shard_dir: Path,
        key: str,
        components: dict[str, Any],
        topk: int,
        dtype: str,
        n: int,
        world: int,
    ) -> None:
        metas = [json.loads((shard_dir / f"meta.rank{r}.json").read_text()) for r in range(world)]
        mode = "full" if topk == 0 else "topk"
        names = [f.removesuffix(".npy") for f in _files_for(mode)]
        files: dict[str, Any] = {}
        with atomic_path(path, is_dir=True) as tmp:
            for name in names:
                parts = [np.load(shard_dir / f"{name}.rank{r}.npy", mmap_mode="r") for r in range(world)]
                parts = [p for p, m in zip(parts, metas, strict=True) if m["hi"] > m["lo"]]
                out = np.lib.format.open_memmap(
                    tmp / f"{name}.npy", mode="w+", dtype=parts[0].dtype, shape=(n, *parts[0].shape[1:])
                )
                pos = 0
                for p in parts:
                    out[pos : pos + len(p)] = p
                    pos += len(p)
                out.flush()
                del out
                fp = tmp / f"{name}.npy"
                arr = np.load(fp, mmap_mode="r")
                files[f"{name}.npy"] = {
                    "dtype": str(arr.dtype),
                    "shape": list(arr.shape),
                    "bytes": fp.stat().st_size,
                    "sha256": sha256_file(fp),
                }
            meta = next(m for m in metas if "num_classes" in m)
            header = {
                "format_version": FORMAT_VERSION,
                "key": key,
                "components": components,
                "mode": mode,
                "topk": topk,
                "dtype": dtype if mode == "full" else "float16",
                "n": n,
                "item_shape": meta["item_shape"],
                "num_classes": meta["num_classes"],
                "files": files,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "reconstruction": None
                if mode == "full"
                else "dense logits; the other classes share the remaining T=1 mass uniformly",
            }
            write_json(tmp / "header.json", header)
