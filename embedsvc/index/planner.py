"""Choosing an index the way autofaiss does: from the vector count and a memory budget.

- up to ``flat_below`` vectors: exact search (``IDMap2,Flat``); a brute-force scan is fast and
  recall is 1;
- while the vectors plus the HNSW graph fit the budget: ``HNSW32``, efSearch tuned to the recall
  target;
- beyond: ``IVF{nlist},PQ{m}`` with nprobe tuned, about ``m`` bytes per vector, its shortlist
  re-ranked ("refined") with the best vectors that still fit: 8-bit scalar-quantised codes
  held in memory, else the store's exact vectors read from disk.

The memory a plan needs is ``count * bytes_per_vector + fixed_bytes`` (``index_memory``); the
README's plan for 100M vectors is this formula.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InvalidInputError

KINDS = ("auto", "flat", "hnsw", "ivf", "ivfpq", "int8", "binary")
CODE_KINDS = ("int8", "binary")  # compact codes of every vector, scanned whole; ids are positions
REFINES = ("auto", "none", "sq8", "exact")
# fewer bits are too coarse: with 6, recall@10 stopped at 0.93 at the widest search on 1M
# Fashion-MNIST embeddings (bench/index_search.py --on-disk), where exact vectors reach 0.957
SQ_BITS = {"sq8": 8}
HNSW_M = 32
ID_BYTES = 8  # an int64 label beside each code in an inverted list


@dataclass(frozen=True)
class IndexPlan:
    kind: str  # flat | hnsw | ivf | ivfpq | int8 | binary
    factory: str  # faiss index_factory string (binary: BFlat, a binary index)
    search_param: str | None  # "efSearch" | "nprobe" | "shortlist" | None
    nlist: int | None = None
    refine: str | None = None  # sq8 | exact: what re-ranks an ivfpq, int8 or binary shortlist

    @property
    def supports_remove(self) -> bool:
        # HNSW graphs cannot drop nodes, and code kinds keep no ids: removed ids are filtered
        # at search time instead
        return self.kind not in ("hnsw", *CODE_KINDS)

    @property
    def positional(self) -> bool:
        """Ids are positions (0..n-1, added in order): no id map, the codes are all it holds."""
        return self.kind in CODE_KINDS


def _nlist(count: int) -> int:
    # ~4*sqrt(N) lists, at least 39 training points per list (faiss' own minimum), at most 65536
    return int(max(1, min(65536, 4 * math.sqrt(count), count // 39)))


def _pq_m(dim: int) -> int:
    """Largest sub-quantizer count ≤ dim/4 (and ≤ 64) that divides dim."""
    for m in range(min(64, max(1, dim // 4)), 0, -1):
        if dim % m == 0:
            return m
    return 1


def bytes_per_vector(kind: str, dim: int, refine: str | None = None) -> int:
    """Memory each vector costs in a plan of this kind (the part that grows with the count)."""
    if kind == "flat":
        return 4 * dim + 2 * ID_BYTES  # the vector, its id and the id map's reverse entry
    if kind == "hnsw":
        return 4 * dim + HNSW_M * 2 * 4 + 2 * ID_BYTES  # plus 2M neighbour links on level 0
    if kind == "int8":
        return dim  # exact refinement reads the store: nothing more in memory
    if kind == "binary":
        return (dim + 7) // 8
    if kind == "ivf":
        return 4 * dim + ID_BYTES
    pq = _pq_m(dim) + ID_BYTES
    # exact refinement reads the store's own vectors from disk: nothing more in memory
    return pq + (dim * SQ_BITS[refine] + 7) // 8 if refine in SQ_BITS else pq


def fixed_bytes(kind: str, dim: int, count: int) -> int:
    """Memory that does not grow with the count: the coarse centroids and PQ codebooks."""
    if kind not in ("ivf", "ivfpq"):
        return 0
    return 4 * dim * (_nlist(count) + (256 if kind == "ivfpq" else 0))


def index_memory(plan: IndexPlan, dim: int, count: int) -> int:
    return count * bytes_per_vector(plan.kind, dim, plan.refine) + fixed_bytes(plan.kind, dim, count)


def plan_index(count: int, dim: int, kind: str = "auto", memory_budget_bytes: int = 4 << 30,
               flat_below: int = 20_000, refine: str = "auto") -> IndexPlan:
    if kind not in KINDS:
        raise InvalidInputError(f"index kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if refine not in REFINES:
        raise InvalidInputError(f"refine must be one of {', '.join(REFINES)}; got {refine!r}")
    if refine not in ("auto", "none") and kind not in ("auto", "ivfpq", *CODE_KINDS):
        raise InvalidInputError(f"refine {refine} re-ranks an ivfpq, int8 or binary shortlist; "
                                f"kind {kind} needs none (it keeps the vectors themselves)")
    if kind in CODE_KINDS and refine == "sq8":
        raise InvalidInputError(f"kind {kind} re-ranks with the exact vectors (refine exact) "
                                f"or not at all (refine none); sq8 is for ivfpq")
    if count < 1:
        raise InvalidInputError("cannot build an index over an empty store")

    def fits(k: str, r: str | None = None) -> bool:
        return count * bytes_per_vector(k, dim, r) + fixed_bytes(k, dim, count) <= memory_budget_bytes

    if kind == "auto":
        if count < flat_below and refine in ("auto", "none"):
            kind = "flat"
        elif fits("hnsw") and refine in ("auto", "none"):
            kind = "hnsw"
        else:
            kind = "ivfpq"
    if kind == "flat":
        return IndexPlan("flat", "IDMap2,Flat", None)
    if kind in CODE_KINDS:
        # int8: per-dimension ranges calibrated on the vectors (faiss' SQ8); binary: sign bits
        exact = refine in ("auto", "exact")
        return IndexPlan(kind, "SQ8" if kind == "int8" else "BFlat",
                         "shortlist" if exact else None, None, "exact" if exact else None)
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
    if refine == "auto":  # codes that fit in memory, else the exact vectors on disk
        refine = "sq8" if fits("ivfpq", "sq8") else "exact"
    return IndexPlan("ivfpq", f"IVF{nlist},PQ{_pq_m(dim)}x{nbits}", "nprobe", nlist,
                     None if refine == "none" else refine)
