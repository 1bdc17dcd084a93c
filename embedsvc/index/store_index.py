"""Indexes that live inside a store (``STORE/indexes/NAME``) and follow its rows."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError, NotFoundError
from ..store import EmbeddingStore, StoreLock
from .ondisk import build_ondisk, remove_build_leftovers, update_ondisk
from .planner import index_memory, plan_index
from .vector_index import VectorIndex, build_index, has_index

DEFAULT_INDEX = "default"


def index_dir(store: EmbeddingStore, name: str = DEFAULT_INDEX) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise InvalidInputError(f"index name must be a plain name, got {name!r}")
    return store.root / "indexes" / name


def build_store_index(store: EmbeddingStore, name: str = DEFAULT_INDEX, kind: str = "auto",
                      recall_target: float = 0.95, memory_budget_bytes: int = 4 << 30,
                      refine: str = "auto", workers: int | None = None, engine: str = "local",
                      address: str | None = None, progress: bool = False) -> VectorIndex:
    """(Re)build the index over every row of the store and save it atomically. IVF kinds are
    built block by block into inverted lists on disk (``ondisk``); flat and HNSW in memory."""
    if not 0.0 < recall_target <= 1.0:
        raise InvalidInputError(f"recall target must be in (0, 1], got {recall_target}")
    plan = plan_index(store.count, store.dim, kind, memory_budget_bytes, refine=refine)
    d = index_dir(store, name)
    with StoreLock(store.root / ".lock"), _no_trace_on_failure(d):
        if plan.nlist:
            vi = build_ondisk(store, plan, d, recall_target, workers=workers, engine=engine,
                              address=address, progress=progress)
        else:
            vi = build_index(store.vectors(), binding=store.binding, kind=plan.kind,
                             recall_target=recall_target, memory_budget_bytes=memory_budget_bytes,
                             refine=plan.refine or "none", rows=store.take)
        vi.infos.update(rows_indexed=store.count, memory_bytes=index_memory(plan, store.dim, store.count),
                        flat_memory_bytes=index_memory(plan_index(store.count, store.dim, "flat"),
                                                       store.dim, store.count))
        vi.save(d)
        # what the files take (for an exact refinement, the store's shards are read as well)
        vi.infos["disk_bytes"] = sum(p.stat().st_size for p in d.iterdir() if p.is_file())
    return vi


def load_store_index(store: EmbeddingStore, name: str = DEFAULT_INDEX) -> VectorIndex:
    """The index, bound to this store; an exact refinement reads the store's own vectors."""
    return VectorIndex.load(index_dir(store, name), expect_binding=store.binding, rows=store.take)


def update_store_index(store: EmbeddingStore, name: str = DEFAULT_INDEX, workers: int | None = None,
                       engine: str = "local", address: str | None = None,
                       progress: bool = False) -> tuple[VectorIndex, int]:
    """Add the rows appended to the store since the index was built, without a rebuild."""
    d = index_dir(store, name)
    if not has_index(d):
        raise NotFoundError(f"store has no index {name!r}; run 'embedsvc index build' first")
    with StoreLock(store.root / ".lock"), _no_trace_on_failure(d):
        vi = VectorIndex.load(d, mmap=False, expect_binding=store.binding, rows=store.take)
        start = int(vi.infos.get("rows_indexed", 0))
        if start < store.count:
            if vi.infos.get("lists"):
                update_ondisk(store, vi, d, workers, engine, address, progress)
            else:
                vi.add(store.vectors()[start:], np.arange(start, store.count, dtype=np.int64))
            vi.infos["rows_indexed"] = store.count
            vi.save(d)
    return vi, store.count - start


@contextlib.contextmanager
def _no_trace_on_failure(d: Path):
    """A build or update that fails (or was killed before) leaves no files behind; the index
    the info file names stays as it was."""
    remove_build_leftovers(d)
    try:
        yield
    except BaseException:
        remove_build_leftovers(d)
        raise
