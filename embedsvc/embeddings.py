"""Vectors with the provenance of the model that made them."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes
from .provenance import read_artifact, write_artifact


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero). One function, so vectors made by the
    library, a store and the server are bitwise the same."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Embeddings:
    """``vectors`` (N, D) float32, one row per entry of ``ids``; ``skipped`` lists (id, reason)
    for inputs that could not be decoded; ``truncated`` the ids of inputs cut to fit the
    encoder (text longer than its token limit); ``tokens`` what the texts cost."""

    vectors: np.ndarray
    ids: tuple[str, ...]
    provenance: dict[str, Any]
    skipped: tuple[tuple[str, str], ...] = field(default=())
    truncated: tuple[str, ...] = field(default=())
    tokens: int = 0  # tokens the encoder read (texts, after truncation); 0 for images

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (.npy) and ``path`` + ``.json`` (ids, provenance, skipped), atomically."""
        path = Path(path)
        if path.suffix != ".npy":
            path = path.with_suffix(path.suffix + ".npy") if path.suffix else path.with_suffix(".npy")
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(self.vectors, dtype=np.float32))
        atomic_write_bytes(path, buf.getvalue())
        meta = {"ids": list(self.ids), "skipped": [list(s) for s in self.skipped],
                "truncated": list(self.truncated)}
        write_artifact(sidecar(path), meta, self.provenance)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Embeddings":
        path = Path(path)
        meta = read_artifact(sidecar(path), "embeddings' ids and provenance")
        vectors = np.load(path, allow_pickle=False)
        return cls(vectors, tuple(meta["ids"]), meta["provenance"],
                   tuple(tuple(s) for s in meta.get("skipped", ())),
                   tuple(meta.get("truncated", ())))


def sidecar(npy_path: Path) -> Path:
    return npy_path.with_name(npy_path.name + ".json")
