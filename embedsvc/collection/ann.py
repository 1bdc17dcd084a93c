"""The approximate index of a large collection: HNSW or IVF over row numbers, chosen by the
planner from the live count, tuned to the recall target on the collection's own vectors; or,
with ``codes`` set, int8 / binary codes of every row, scanned whole, whose shortlist (tuned to
the target the same way) the rows re-score.

Labels are row numbers (the index is filled in row order), so no id map is needed; rows a
reader must not see (deleted, overwritten, or after its view) are excluded with an
``IDSelectorBitmap`` during the search, and every candidate is re-scored exactly from the rows.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import numpy as np

from ..index.planner import CODE_KINDS, IndexPlan, plan_index
from ..index.refine import Refiner, scaled_shortlist
from ..index.sign_codes import SignCodes
from ..index.tuning import exact_neighbors, held_out_queries, pick_search_param, search_ladder
from ..index.vector_index import train
from .settings import CollectionSettings

K = 10  # recall@10 is what the tuning promises
TUNING_QUERIES = 300
FLAT_INFOS = {"kind": "flat", "factory": "Flat", "recall_at_k": 1.0, "recall_target_met": True}


def choose(live: int, dim: int, s: CollectionSettings, current: str) -> IndexPlan:
    """The plan for ``live`` vectors. Going back to exact waits until the count halves, so a
    collection near the threshold does not rebuild back and forth."""
    if current != "flat" and live >= s.flat_below // 2:
        plan = plan_index(max(live, s.flat_below), dim, "auto", s.memory_budget_bytes, s.flat_below)
    else:
        plan = plan_index(max(live, 1), dim, "auto", s.memory_budget_bytes, s.flat_below)
    if plan.kind == "flat" or s.codes == "none":
        return plan
    codes = "int8" if s.codes == "binary" and dim % 8 else s.codes  # bits pack 8 to a byte
    return plan_index(max(live, 1), dim, codes)


def build(vectors: np.ndarray, plan: IndexPlan, s: CollectionSettings, seed: int = 0):
    """(index over ``vectors`` labelled 0..n-1, infos with the tuned parameter)."""
    import faiss

    t0 = time.perf_counter()
    factory = plan.factory.removeprefix("IDMap2,")  # labels are row numbers: no id map
    index = (SignCodes.new(vectors.shape[1]) if plan.kind == "binary" else
             faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT))
    train(index, plan, vectors, seed)
    index.add(vectors)
    infos = {"kind": plan.kind, "factory": factory, "built_count": len(vectors),
             "build_seconds": round(time.perf_counter() - t0, 2)}
    infos.update(tune(index, plan, vectors, s.recall_target, seed))
    return index, infos


def tune(index, plan: IndexPlan, vectors: np.ndarray, target: float, seed: int = 0) -> dict:
    """Smallest search parameter whose recall@10 on held-out queries meets the target."""
    queries = held_out_queries(vectors, TUNING_QUERIES, seed)
    truth = exact_neighbors(vectors, queries, K)

    def ids_found(value: int) -> np.ndarray:
        if plan.kind in CODE_KINDS:  # the shortlist's best K by the rows themselves
            shortlisted = index.search(queries, min(value, len(vectors)))[1]
            return Refiner.from_vectors(vectors).rerank(queries, shortlisted, K)[1]
        return index.search(queries, K, params=search_params(plan.search_param, value, None))[1]

    found = pick_search_param(search_ladder(plan), ids_found, truth, target)
    return {"search_param": plan.search_param, **found, "tuned_count": len(vectors)}


def write_index(index, path) -> None:
    """``index.faiss`` of a snapshot: FAISS's format, or a binary kind's (``sign_codes``)."""
    import faiss

    if isinstance(index, SignCodes):
        with open(path, "wb") as f:
            f.write(index.serialize().tobytes())
    else:
        faiss.write_index(index, str(path))


def read_index(f, kind: str):
    """An index written by ``write_index``, streamed from the open file ``f``."""
    import faiss

    if kind == "binary":
        return SignCodes.read(f)
    # streamed: no second copy of the index in memory while it loads
    return faiss.read_index(faiss.PyCallbackIOReader(f.read))


def search_params(param: str, value: int, selector):
    import faiss

    if param == "efSearch":
        return faiss.SearchParametersHNSW(sel=selector, efSearch=int(value))
    return faiss.SearchParametersIVF(sel=selector, nprobe=int(value))


def search(index, infos: dict, query: np.ndarray, fetch: int, alive: np.ndarray) -> np.ndarray:
    """Candidate rows (< len(alive)) among those ``alive`` marks, best first."""
    import faiss

    if infos["kind"] in CODE_KINDS:
        # a scan of every code; ended rows (at most rebuild_dead_fraction of them) are dropped
        # after it, so the shortlist grows by their share
        fetch = scaled_shortlist(fetch, int(infos["search_param_value"]), K)
        fetch = min(index.ntotal, -(-fetch * len(alive) // max(1, int(alive.sum()))))
        rows = index.search(query, fetch)[1][0]
        rows = rows[(rows >= 0) & (rows < len(alive))]
        return rows[alive[rows]]
    selector = bitmap = None
    if not alive.all():
        bitmap = np.packbits(alive, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
    params = search_params(infos["search_param"], infos["search_param_value"], selector)
    rows = index.search(query, fetch, params=params)[1][0]
    del bitmap  # kept alive until the search is over: faiss holds only a pointer
    return rows[(rows >= 0) & (rows < len(alive))]


class ReadWriteLock:
    """Many searches at once, or one writer (adding rows to the index, swapping it). Readers
    never wait for a waiting writer: a search waits for at most one batch of index additions."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextmanager
    def reading(self):
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def writing(self):
        with self._cond:
            while self._writing or self._readers:
                self._cond.wait()
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()

