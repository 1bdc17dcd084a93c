"""``embedsvc project``: a store of fewer dimensions made from another (projection.py says how).
The new store holds the same rows, its vectors projected, its provenance naming the projection,
and ``projection.npz`` beside them; it is written beside OUT and renamed into place."""
from __future__ import annotations

import os
from pathlib import Path

from ..atomic import written_beside
from ..projection import fit_projection, fit_rows
from .store import EmbeddingStore


def project_store(src: str | os.PathLike, out: str | os.PathLike, dim: int,
                  overwrite: bool = False) -> dict:
    store = EmbeddingStore.open(src)
    projection = fit_projection(store.take(fit_rows(store.count)), dim, store.provenance)
    provenance = {**store.provenance, "dim": projection.dim, "projection": projection.info()}
    with written_beside(Path(out), overwrite) as tmp:
        projected = EmbeddingStore.open_or_create(tmp, provenance, store.dtype)
        for vectors, rows in store.iter_shards():
            projected.append(projection.apply(vectors), [dict(r) for r in rows], [], None)
        projection.save(tmp)
    return {"store": str(out), "rows": store.count, "from_dim": projection.from_dim,
            "dim": projection.dim, "kind": projection.kind}
