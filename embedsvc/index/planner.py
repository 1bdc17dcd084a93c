"""Choosing an index the way autofaiss does: from the vector count and a memory budget.

- up to ``flat_below`` vectors: exact search (``IDMap2,Flat``); a brute-force scan is fast and
  recall is 1;
- while the vectors plus the HNSW graph fit the budget: ``HNSW32``, efSearch tuned to the recall
  target;
- beyond: ``IVF{nlist},PQ{m}`` with nprobe tuned, about ``m`` bytes per vector.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InvalidInputError

KINDS = ("auto", "flat", "hnsw", "ivf", "ivfpq")
HNSW_M = 32


@dataclass(frozen=True)
class IndexPlan:
    kind: str  # flat | hnsw | ivf | ivfpq
    factory: str  # faiss index_factory string
    search_param: str | None  # "efSearch" | "nprobe" | None
    nlist: int | None = None

    @property
    def supports_remove(self) -> bool:
        # HNSW graphs cannot drop nodes; removed ids are filtered at search time instead
        return self.kind != "hnsw"


def _nlist(count: int) -> int:
    # ~4*sqrt(N) lists, at least 39 training points per list (faiss' own minimum), at most 65536
    return int(max(1, min(65536, 4 * math.sqrt(count), count // 39)))


def _pq_m(dim: int) -> int:
    """Largest sub-quantizer count ≤ dim/4 (and ≤ 64) that divides dim."""
    for m in range(min(64, max(1, dim // 4)), 0, -1):
        if dim % m == 0:
            return m
    return 1


def plan_index(count: int, dim: int, kind: str = "auto",
               memory_budget_bytes: int = 4 << 30, flat_below: int = 20_000) -> IndexPlan:
    if kind not in KINDS:
        raise InvalidInputError(f"index kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if count < 1:
        raise InvalidInputError("cannot build an index over an empty store")
    if kind == "auto":
        hnsw_bytes = count * (dim * 4 + HNSW_M * 2 * 4 + 16)
        if count < flat_below:
            kind = "flat"
        elif hnsw_bytes <= memory_budget_bytes:
            kind = "hnsw"
        else:
            kind = "ivfpq"
    if kind == "flat":
        return IndexPlan("flat", "IDMap2,Flat", None)
    if kind == "hnsw":
        return IndexPlan("hnsw", f"IDMap2,HNSW{HNSW_M},Flat", "efSearch")
    nlist = _nlist(count)
    if kind == "ivf":
        return IndexPlan("ivf", f"IVF{nlist},Flat", "nprobe", nlist)
    # 8-bit codes need 256 * 39 training points per sub-quantizer; small stores get fewer bits
    nbits = max(4, min(8, int(math.log2(max(2, count // 39)))))
    if count < 2 ** nbits:  # k-means cannot make more centroids than it has points
        raise InvalidInputError(f"an ivfpq index needs at least {2 ** nbits} vectors, got {count}; "
                                f"use kind flat (exact) or auto")
    return IndexPlan("ivfpq", f"IVF{nlist},PQ{_pq_m(dim)}x{nbits}", "nprobe", nlist)
