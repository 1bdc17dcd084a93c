"""Fewer dimensions: a projection of an encoder's vectors, kept with the vectors it made.

- ``matryoshka``: the first N dimensions, where an encoder declares it was trained for that
  (its provenance's ``matryoshka_dims``); nothing to fit.
- ``pca``: the top N principal directions of a store's vectors (centred), fitted on them.

Either output is L2-normalised again. A projected store's provenance says which projection made
it (``projection``: kind, from_dim, dim and the sha256 of its parameters) and ``dim`` is N, so
an index, head or query of the unprojected vectors is refused; the parameters themselves are
``projection.npz`` in the store folder, and queries are projected with them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .atomic import atomic_write_bytes
from .embeddings import Embeddings, l2_normalize
from .errors import IncompatibleError, InvalidInputError, NotFoundError

PROJECTION_FILE = "projection.npz"
FIT_ROWS = 200_000  # rows a PCA is fitted on at most (a seeded sample of them)


@dataclass(frozen=True, eq=False)
class Projection:
    kind: str  # "pca" | "matryoshka"
    from_dim: int
    dim: int
    mean: np.ndarray | None = None  # pca: (from_dim,)
    components: np.ndarray | None = None  # pca: (dim, from_dim), rows orthonormal

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, np.float32)
        if x.ndim != 2 or x.shape[1] != self.from_dim:
            raise InvalidInputError(f"the projection takes {self.from_dim}-d vectors; got shape "
                                    f"{x.shape}")
        if self.kind == "matryoshka":
            return l2_normalize(x[:, :self.dim])
        # in float64, then rounded: a vector projected alone (a query) and in a shard of a
        # million get the same float32 values, whatever kernel the batch size picks
        y = (x.astype(np.float64) - self.mean) @ self.components.T.astype(np.float64)
        return l2_normalize(y.astype(np.float32))

    @property
    def sha256(self) -> str:
        h = hashlib.sha256(f"{self.kind}:{self.from_dim}:{self.dim}".encode())
        for part in (self.mean, self.components):
            if part is not None:
                h.update(np.ascontiguousarray(part, np.float32).tobytes())
        return h.hexdigest()

    def info(self) -> dict[str, Any]:
        """What a provenance records of it."""
        return {"kind": self.kind, "from_dim": self.from_dim, "dim": self.dim, "sha256": self.sha256}

    def save(self, folder: str | Path) -> None:
        buf = io.BytesIO()
        arrays = {"mean": self.mean, "components": self.components} if self.kind == "pca" else {}
        np.savez(buf, kind=np.array(self.kind), from_dim=self.from_dim, dim=self.dim, **arrays)
        atomic_write_bytes(Path(folder) / PROJECTION_FILE, buf.getvalue())


def fit_rows(count: int, seed: int = 0) -> np.ndarray:
    """Which of ``count`` rows a PCA is fitted on: all, or a seeded sample of ``FIT_ROWS``."""
    return np.sort(np.random.default_rng(seed).choice(count, min(count, FIT_ROWS), replace=False))


def fit_projection(vectors: np.ndarray, dim: int, provenance: Mapping[str, Any]) -> Projection:
    """The projection to ``dim`` dimensions for vectors made as ``provenance`` says: matryoshka
    where the encoder declares ``dim``, else a PCA fitted on ``vectors`` (``fit_rows`` of them)."""
    from_dim = int(np.asarray(vectors).shape[1])
    if provenance.get("projection"):
        raise InvalidInputError("these vectors are projected already; project the store they "
                                "were made from")
    if not isinstance(dim, int) or not 1 <= dim < from_dim:
        raise InvalidInputError(f"dimensions must be from 1 to {from_dim - 1} (the vectors have "
                                f"{from_dim}); got {dim!r}")
    if dim in (provenance.get("matryoshka_dims") or ()):
        return Projection("matryoshka", from_dim, dim)
    n = len(vectors)
    if n < dim + 1:
        raise InvalidInputError(f"a PCA to {dim} dimensions needs more than {dim} vectors; the "
                                f"store has {n} ({provenance.get('backbone')} declares no "
                                f"matryoshka dimensions)")
    x = np.asarray(vectors, np.float64)
    mean = x.mean(axis=0)
    # eigenvectors of the covariance, largest first; each one's sign fixed (largest entry
    # positive) so that a refit on the same rows gives bitwise the same projection
    values, vecs = np.linalg.eigh(np.cov(x - mean, rowvar=False))
    top = vecs[:, np.argsort(values)[::-1][:dim]].T
    top *= np.sign(top[np.arange(dim), np.abs(top).argmax(axis=1)])[:, None]
    return Projection("pca", from_dim, dim, mean.astype(np.float32), top.astype(np.float32))


def load_projection(folder: str | Path, expected: Mapping[str, Any]) -> Projection:
    """The projection saved in ``folder``, checked against the provenance's record of it."""
    path = Path(folder) / PROJECTION_FILE
    if not path.is_file():
        raise NotFoundError(f"{str(folder)!r} holds projected vectors but no {PROJECTION_FILE}")
    with np.load(path) as f:
        p = Projection(str(f["kind"]), int(f["from_dim"]), int(f["dim"]),
                       f["mean"] if "mean" in f else None,
                       f["components"] if "components" in f else None)
    if p.sha256 != expected.get("sha256"):
        raise IncompatibleError(f"{path} is not the projection its vectors were made with "
                                f"(sha256 {p.sha256[:12]}…, expected {str(expected.get('sha256'))[:12]}…)")
    return p


def source_provenance(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance of the vectors before their projection (what the encoder itself makes)."""
    projection = provenance.get("projection")
    if not projection:
        return dict(provenance)
    return {**provenance, "dim": projection["from_dim"], "projection": None}


def project_embeddings(emb: Embeddings, projection: Projection,
                       provenance: Mapping[str, Any]) -> Embeddings:
    """``emb`` through ``projection``, the one the store of ``provenance`` was made with;
    refused unless ``emb`` holds the vectors it projects (normalised, same encoder and
    settings)."""
    from .provenance import check_compatible

    if not emb.provenance.get("normalized"):
        raise InvalidInputError("dimensions and raw vectors do not mix: a projection is "
                                "fitted on normalised vectors")
    check_compatible(source_provenance(provenance), emb.provenance,
                     f"the projection to {projection.dim} dimensions")
    return dataclasses.replace(emb, vectors=projection.apply(emb.vectors),
                               provenance=dict(provenance))
