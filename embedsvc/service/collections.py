"""Named, writable vector collections served by the service (``DATA_DIR/indexes/NAME``).

    index.faiss / index_infos.json / removed.npy    a VectorIndex (exact inner product; ids are
                                                   the clients' int64 ids)
    metadata.json                                  id → string metadata

Every Upsert and Delete is persisted (atomically) before it is acknowledged, so an
acknowledged write survives a restart. Rewriting the whole index per write is O(N): fine for
the collections this is for; a write-ahead log is the next step for large ones.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_bytes
from ..embeddings import check_compatible
from ..errors import NotFoundError
from ..index.planner import IndexPlan
from ..index.vector_index import VectorIndex
from .datadir import valid_name


class Collection:
    def __init__(self, root: Path, index: VectorIndex, metadata: dict[int, dict[str, str]]):
        self.root = root
        self.index = index
        self.metadata = metadata
        self.lock = threading.RLock()  # faiss indexes are not safe for concurrent add + search

    @property
    def binding(self) -> dict[str, Any]:
        return self.index.binding

    @classmethod
    def create(cls, root: Path, binding: dict[str, Any]) -> "Collection":
        import faiss

        dim = int(binding["dim"])
        plan = IndexPlan("flat", "IDMap2,Flat", None)  # exact, and removes ids natively
        index = faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
        infos = {"kind": plan.kind, "factory": plan.factory, "dim": dim}
        return cls(root, VectorIndex(index, plan, binding, infos), {})

    @classmethod
    def load(cls, root: Path) -> "Collection":
        index = VectorIndex.load(root, mmap=False)
        meta_path = root / "metadata.json"
        meta = {int(k): v for k, v in json.loads(meta_path.read_text()).items()} if meta_path.is_file() else {}
        return cls(root, index, meta)

    def _persist(self) -> None:
        atomic_write_bytes(self.root / "metadata.json",
                           json.dumps({str(k): v for k, v in self.metadata.items()}).encode())
        self.index.save(self.root)  # index_infos.json is written last

    def check(self, provenance: dict[str, Any]) -> None:
        check_compatible(self.binding, provenance, f"index {self.root.name!r}")

    def upsert(self, ids: np.ndarray, vectors: np.ndarray, metadata: list[dict[str, str]]) -> int:
        with self.lock:
            self.index.add(vectors, ids)
            for i, m in zip(ids.tolist(), metadata):
                self.metadata[int(i)] = dict(m)
            self._persist()
            return len(ids)

    def delete(self, ids: np.ndarray) -> int:
        with self.lock:
            present = [int(i) for i in ids.tolist() if int(i) in self.metadata]
            if present:
                self.index.remove(np.array(present, dtype=np.int64))
                for i in present:
                    del self.metadata[i]
                self._persist()
            return len(present)

    def search(self, query: np.ndarray, k: int, where: dict[str, str]) -> list[tuple[int, float, dict]]:
        with self.lock:
            meta = self.metadata
            keep = (lambda i: all(meta.get(i, {}).get(key) == v for key, v in where.items())
                    ) if where else None
            hits = self.index.search_where(query, k, keep)[0]
            return [(i, score, meta.get(i, {})) for i, score in hits]

    @property
    def count(self) -> int:
        return len(self.metadata)


class Collections:
    """All collections under one folder, loaded at start, created on first Upsert."""

    def __init__(self, root: Path):
        self.root = root
        self._lock = threading.Lock()
        self._items: dict[str, Collection] = {}
        if root.is_dir():
            for infos in sorted(root.glob("*/index_infos.json")):
                self._items[infos.parent.name] = Collection.load(infos.parent)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._items)

    def get(self, name: str) -> Collection:
        with self._lock:
            if name not in self._items:
                raise NotFoundError(f"no index named {name!r}; available: "
                                    f"{', '.join(sorted(self._items)) or 'none (Upsert creates one)'}")
            return self._items[name]

    def find(self, name: str) -> Collection | None:
        with self._lock:
            return self._items.get(name)

    def get_or_create(self, name: str, binding: dict[str, Any]) -> Collection:
        valid_name(name, "index name")
        with self._lock:
            if name not in self._items:
                self._items[name] = Collection.create(self.root / name, binding)
            return self._items[name]
