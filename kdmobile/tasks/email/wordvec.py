"""Word vectors from the teacher's pretrained encoder, to initialise the student's embedding table.

    python -m kdmobile.tasks.email.wordvec --workdir build   # embed the vocabulary (cached), print its size

Every whole word of the teacher's vocabulary (all-MiniLM-L6-v2: ~21k words) is embedded on its own by the
*pretrained* encoder (mean pooling, as sentence-transformers does). A PCA brings the vectors to the
student's width, and each hashed feature the student's tokenizer makes of a word gets them: ``w:word``
the word's vector, each character n-gram ``c:...`` the mean vector of the words that contain it. A
bucket holds the mean of the features that hash to it; buckets no word reaches keep their random init.
Words the generated emails never use then start near words of similar meaning, which is what lets a
bag-of-n-grams student read hand-written email (the same trick as initialising a fastText classifier
with pretrained vectors). The vectors are cached in ``<workdir>/email/wordvec-<key>.npz``.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdmobile.tasks.email.teacher import TeacherConfig

WORD = re.compile(r"[a-z]{2,}")
VERSION = 1


def vocabulary(tokenizer: Any) -> list[str]:
    """Whole lower-case words of a Hugging Face tokenizer's vocabulary, sorted."""
    return sorted(w for w in tokenizer.get_vocab() if WORD.fullmatch(w))


def embed_words(
    cfg: TeacherConfig, words: list[str], *, batch_size: int = 512, progress: bool = True
) -> np.ndarray:
    """Mean-pooled pretrained-encoder vectors ``[len(words), hidden]`` of each word on its own."""
    from kdmobile.tasks.email import teacher as T

    model = T.build_teacher(cfg, 1, pretrained=True).eval()
    ids, mask = T.tokenize(T.load_tokenizer(cfg), words, 12)
    return T.predict_logits(
        model.pool, ids, mask, batch_size=batch_size, progress=progress, desc="word vectors"
    )


def load_or_embed(
    cfg: TeacherConfig,
    cache_root: str | Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """``(words, vectors, info)``, from ``cache_root/wordvec-<key>.npz`` when it is there."""
    from kdmobile.io import atomic_path
    from kdmobile.tasks.email import teacher as T

    log = log or (lambda m: print(m, file=sys.stderr))
    key = hashlib.sha256(f"{T.base_identity(cfg)}:{VERSION}".encode()).hexdigest()[:16]
    path = Path(cache_root) / f"wordvec-{key}.npz"
    t0 = time.perf_counter()

    def info(status: str, words: list[str]) -> dict[str, Any]:
        seconds = round(time.perf_counter() - t0, 2)
        return {"status": status, "path": str(path), "words": len(words), "seconds": seconds}

    if path.is_file():
        try:
            with np.load(path) as f:
                words, vecs = [str(w) for w in f["words"]], f["vectors"].astype(np.float32)
            if len(words) == len(vecs) > 0:
                return words, vecs, info("reused", words)
            log(f"kdmobile: word vectors {path} are empty or inconsistent; computing them again")
        except (OSError, ValueError, KeyError) as e:
            log(f"kdmobile: word vectors {path} are unusable ({e}); computing them again")
    words = vocabulary(T.load_tokenizer(cfg))
    vecs = embed_words(cfg, words, progress=progress)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, words=np.asarray(words), vectors=vecs.astype(np.float16))
    return words, vecs, info("computed", words)


def bucket_vectors(
    tokenizer: Any, dim: int, words: list[str], vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, values)``: the embedding rows the words reach and their initial values ``[len(rows), dim]``.

    PCA to ``dim`` with unit variance per component (like ``nn.Embedding``'s N(0, 1) init); a feature
    ``w:word`` takes the word's vector, ``c:gram`` the mean over the words containing the gram; a bucket
    takes the mean of its features.
    """
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    proj = x @ vt[:dim].T
    proj /= proj.std(axis=0, keepdims=True) + 1e-12
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for word, v in zip(words, proj, strict=True):
        for feat in tokenizer.features(word):
            if feat.startswith(("w:", "c:")):
                sums[feat] = sums[feat] + v if feat in sums else v.copy()
                counts[feat] = counts.get(feat, 0) + 1
    per_bucket: dict[int, list[np.ndarray]] = {}
    for feat, total in sums.items():
        per_bucket.setdefault(tokenizer.feature_id(feat), []).append(total / counts[feat])
    rows = np.array(sorted(per_bucket), dtype=np.int64)
    values = (
        np.stack([np.mean(per_bucket[r], axis=0) for r in rows]).astype(np.float32)
        if len(rows)
        else np.zeros((0, dim), np.float32)
    )
    return rows, values


def init_embedding(embed: torch.nn.Embedding, rows: np.ndarray, values: np.ndarray) -> int:
    """Write ``values`` into ``rows`` of ``embed`` (the padding row stays 0); returns how many rows."""
    with torch.no_grad():
        embed.weight[torch.as_tensor(rows)] = torch.as_tensor(values, dtype=embed.weight.dtype)
        if embed.padding_idx is not None:
            embed.weight[embed.padding_idx] = 0.0
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(
        description="Embed the teacher's vocabulary for the student's initial embeddings."
    )
    ap.add_argument("--workdir", default="build")
    args = ap.parse_args(argv)
    words, vecs, info = load_or_embed(TeacherConfig(), Path(args.workdir) / "email")
    print(f"{len(words)} words x {vecs.shape[1]} ({info['status']}, {info['seconds']} s): {info['path']}")


if __name__ == "__main__":
    main()
