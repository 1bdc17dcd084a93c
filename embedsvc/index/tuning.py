"""Tuning an index's search parameter to a recall target: held-out queries, the exact truth
(streamed over a store's shards when it is large), the ladder of values tried."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .planner import IndexPlan

SEARCH_LADDER = {
    "efSearch": (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024),
    "nprobe": (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024, 2048),
    # candidates a code index re-ranks with exact vectors, for the k it was tuned at
    "shortlist": (10, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960, 1280, 2560, 5120),
}


def held_out_queries(vectors: np.ndarray, n: int, seed: int = 0, noise: float = 0.3) -> np.ndarray:
    """Queries for tuning: stored vectors moved by noise of norm ~``noise`` and renormalised,
    so the tuning does not reward finding a query's own copy."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), size=min(n, len(vectors)), replace=False)
    q = np.asarray(vectors[rows], dtype=np.float32)
    q = q + rng.standard_normal(q.shape).astype(np.float32) * (noise / np.sqrt(q.shape[1]))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(len(set(f[:k].tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.size


def exact_neighbors(vectors, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of each query's ``k`` best inner products. ``vectors``: one array, or the
    consecutive parts of one (a store's memory-mapped shards), so that the truth over a
    million vectors never needs them in memory at once."""
    import faiss

    parts = [vectors] if isinstance(vectors, np.ndarray) else vectors
    q = np.ascontiguousarray(queries, dtype=np.float32)
    heap, start = faiss.ResultHeap(len(q), k, keep_max=True), 0
    for part in parts:
        flat = faiss.IndexFlatIP(q.shape[1])
        flat.add(np.ascontiguousarray(part, dtype=np.float32))
        scores, ids = flat.search(q, min(k, len(part)))
        heap.add_result(scores, np.where(ids >= 0, ids + start, -1))
        start += len(part)
    heap.finalize()
    return heap.I


def search_ladder(plan: IndexPlan) -> tuple[int, ...]:
    """The search parameter values tuning tries, in order (nprobe never beyond nlist)."""
    ladder = SEARCH_LADDER[plan.search_param]
    if plan.nlist:
        ladder = tuple(v for v in ladder if v <= plan.nlist) or (plan.nlist,)
    return ladder


TUNING_MARGIN = 0.01


def tune(vi, queries: np.ndarray, truth: np.ndarray, target: float) -> dict[str, Any]:
    """Smallest search parameter on the ladder whose recall@k (k: ``truth``'s width) meets the
    target on ``queries``; ``vi`` a VectorIndex.

    Aims ``TUNING_MARGIN`` above the target (half-way to 1 when that is nearer): recall measured
    on a few hundred queries varies by about a point, and the promise is about queries the
    tuning never saw; a target of 0.99 aiming at 1.0 would take the widest search there is.
    """
    def ids_found(value: int) -> np.ndarray:
        vi.set_search_param(value)
        return vi.search(queries, truth.shape[1])[1]

    found = pick_search_param(search_ladder(vi.plan), ids_found, truth, target)
    vi.set_search_param(found["search_param_value"])
    return {"search_param": vi.plan.search_param, **found}


def pick_search_param(ladder: tuple[int, ...], ids_found: Callable[[int], np.ndarray],
                      truth: np.ndarray, target: float) -> dict[str, Any]:
    """The first value on the ladder whose recall@k (``ids_found(value)`` against ``truth``)
    reaches the target plus the margin; the last one if none does."""
    recall = 0.0
    for value in ladder:
        recall = recall_at_k(ids_found(value), truth)
        if recall >= target + min(TUNING_MARGIN, (1.0 - target) / 2):
            break
    return {"search_param_value": int(value), "recall_at_k": round(recall, 4),
            "tuning_queries": len(truth), "recall_target_met": recall >= target}
