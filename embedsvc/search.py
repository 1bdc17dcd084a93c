"""Search an embedding store by image or text, by vector or by row id, through its FAISS index.

A store without a built index is searched exactly (flat), so search works from the first
``embed-dataset`` on; ``embedsvc index build`` makes it fast. Rows appended after the index was
built (``rows_indexed`` in its info file) are searched exactly and merged, and ``unindexed``
says how many there are, so a stale index never hides new rows.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .errors import InvalidInputError
from .index.store_index import DEFAULT_INDEX, index_dir, load_store_index
from .index.vector_index import build_index, has_index
from .store import EmbeddingStore

FILTER_KEYS = ("label", "split", "domain")


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    metadata: dict[str, Any]

    @property
    def label(self) -> str | None:
        return self.metadata.get("label")

    @property
    def path(self) -> str | None:
        return self.metadata.get("path")


class StoreSearcher:
    """Queries one store; the backbone is loaded only when a query is an image."""

    def __init__(self, store: str | os.PathLike | EmbeddingStore, index: str = DEFAULT_INDEX):
        self.store = store if isinstance(store, EmbeddingStore) else EmbeddingStore.open(store)
        d = index_dir(self.store, index)
        if has_index(d):
            self.index = load_store_index(self.store, index)
            self.rows_indexed = int(self.index.infos.get("rows_indexed", self.index.ntotal))
        elif index != DEFAULT_INDEX:
            raise InvalidInputError(f"store has no index named {index!r}; build it with "
                                    f"'embedsvc index build {self.store.root} --name {index}'")
        else:
            self.index = build_index(self.store.vectors(), binding=self.store.binding, kind="flat")
            self.rows_indexed = self.store.count
        self.unindexed = max(0, self.store.count - self.rows_indexed)
        self._extractor = None

    # -- queries ------------------------------------------------------------------------------
    def extractor(self):
        """The store's own encoder and settings, verified by weights hash: for an image a
        cached ONNX graph without torch when there is one (``query.py``), else a
        ``FeatureExtractor``, which also caches the graph for the next search."""
        if self._extractor is None:
            from .encoders import query_encoder

            # a projected store's queries are embedded as its source's were, then projected
            self._extractor = query_encoder(self.store.provenance)
        return self._extractor

    def search_vectors(self, queries: np.ndarray, k: int = 10,
                       where: dict[str, str] | None = None) -> list[list[Hit]]:
        where = {key: v for key, v in (where or {}).items() if v is not None}
        bad = set(where) - set(FILTER_KEYS)
        if bad:
            raise InvalidInputError(f"can filter on {', '.join(FILTER_KEYS)}; not on {sorted(bad)}")
        meta = self.store.metadata()
        for key, value in where.items():  # a filter nothing can match is a mistake, not 0 hits
            present = sorted({str(m[key]) for m in meta if m.get(key) not in (None, "")})
            if value not in present:
                plural = "es" if key.endswith("s") else "s"
                raise InvalidInputError(
                    f"store {str(self.store.root)!r} has no {key} {value!r}; "
                    + (f"its {key}{plural}: {', '.join(map(repr, present[:20]))}"
                       + (f" and {len(present) - 20} more" if len(present) > 20 else "")
                       if present else f"its rows have no {key}"))
        keep = (lambda i: all(meta[i].get(key) == v for key, v in where.items())) if where else None
        found = self.index.search_where(queries, k, keep)
        if self.unindexed:
            found = [sorted(hits + tail, key=lambda h: -h[1])[:k]
                     for hits, tail in zip(found, self._search_unindexed(queries, k, keep))]
        return [[Hit(i, score, meta[i]) for i, score in hits] for hits in found]

    def _search_unindexed(self, queries: np.ndarray, k: int, keep) -> list[list[tuple[int, float]]]:
        tail = np.asarray(self.store.vectors()[self.rows_indexed:], dtype=np.float32)
        scores = np.asarray(queries, dtype=np.float32) @ tail.T
        out = []
        for row in scores:
            hits = []
            for j in np.argsort(-row):
                i = self.rows_indexed + int(j)
                if keep is None or keep(i):
                    hits.append((i, float(row[j])))
                    if len(hits) == k:
                        break
            out.append(hits)
        return out

    def search_inputs(self, inputs: Sequence, k: int = 10,
                      where: dict[str, str] | None = None) -> list[list[Hit]]:
        """Queries of the store's modality: image sources, or texts."""
        vectors = self.extractor().embed(inputs).vectors
        if (projection := self.store.projection()) is not None:
            vectors = projection.apply(vectors)
        return self.search_vectors(vectors, k, where)

    def search_ids(self, ids: Sequence[int], k: int = 10,
                   where: dict[str, str] | None = None) -> list[list[Hit]]:
        q = np.stack([self.store.vector(int(i)) for i in ids])
        return self.search_vectors(q, k, where)
