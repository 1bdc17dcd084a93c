"""Indexes that live inside a store (``STORE/indexes/NAME``) and follow its rows."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InvalidInputError, NotFoundError
from ..store import EmbeddingStore, StoreLock
from .vector_index import VectorIndex, build_index

DEFAULT_INDEX = "default"


def index_dir(store: EmbeddingStore, name: str = DEFAULT_INDEX) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise InvalidInputError(f"index name must be a plain name, got {name!r}")
    return store.root / "indexes" / name


def build_store_index(store: EmbeddingStore, name: str = DEFAULT_INDEX, kind: str = "auto",
                      recall_target: float = 0.95, memory_budget_bytes: int = 4 << 30) -> VectorIndex:
    """(Re)build the index over every row of the store and save it atomically."""
    if not 0.0 < recall_target <= 1.0:
        raise InvalidInputError(f"recall target must be in (0, 1], got {recall_target}")
    with StoreLock(store.root / ".lock"):
        vi = build_index(store.vectors(), binding=store.binding, kind=kind,
                         recall_target=recall_target, memory_budget_bytes=memory_budget_bytes)
        vi.infos["rows_indexed"] = store.count
        vi.save(index_dir(store, name))
    return vi


def update_store_index(store: EmbeddingStore, name: str = DEFAULT_INDEX) -> tuple[VectorIndex, int]:
    """Add the rows appended to the store since the index was built, without a rebuild."""
    d = index_dir(store, name)
    if not (d / "index_infos.json").is_file():
        raise NotFoundError(f"store has no index {name!r}; run 'embedsvc index build' first")
    with StoreLock(store.root / ".lock"):
        vi = VectorIndex.load(d, mmap=False, expect_binding=store.binding)
        start = int(vi.infos.get("rows_indexed", 0))
        if start < store.count:
            x = store.vectors()[start:]
            vi.add(x, np.arange(start, store.count, dtype=np.int64))
            vi.infos["rows_indexed"] = store.count
            vi.save(d)
    return vi, store.count - start
