"""A collection's rows: every vector written since the last rebuild, in arrival order.

Rows are append-only. An overwrite appends a new row and ends the old one; a delete ends a row.
Each row records the sequence number of the write that ended it (``NEVER`` while it lives), so a
reader holding a ``View`` (rows ``< n`` as of write ``seq``) sees exactly the state after that
write, while later writes go on: rows below ``n`` never change, and a row ended by a later write
still counts as alive for a view taken before it (``ended > seq``). Readers take no lock.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidInputError

NEVER = np.iinfo(np.int64).max
MAX_ID = NEVER  # ids are non-negative int64; FAISS and the protocol use -1 for "no result"


@dataclass(frozen=True)
class View:
    n: int  # rows [0, n) exist
    seq: int  # every write up to this one is in effect
    vectors: np.ndarray  # (capacity, dim) float32
    ids: np.ndarray  # (capacity,) int64
    ended: np.ndarray  # (capacity,) int64: the write that ended the row, or NEVER
    metadata: list  # one dict per row
    ann: Any = None  # an approximate index over rows [0, indexed), labels = row numbers
    indexed: int = 0
    infos: dict = None  # kind, factory, tuned search parameter, measured recall
    epoch: int = 0  # which numbering of the rows (a rebuild numbers them again)

    def alive(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        return self.ended[lo:self.n if hi is None else hi] > self.seq


class RowTable:
    """The writer's side: applies writes and publishes a new ``View`` after each. The caller
    serialises writers (one lock); readers just read ``table.view``."""

    def __init__(self, view: View, next_id: int, row_of: dict[int, int] | None = None):
        self.view = view
        self.next_id = next_id
        if row_of is None:
            alive = view.alive()
            row_of = dict(zip(view.ids[:view.n][alive].tolist(), np.flatnonzero(alive).tolist()))
        self.row_of = row_of  # id -> its live row

    @classmethod
    def empty(cls, dim: int, infos: dict) -> "RowTable":
        return cls(View(0, 0, np.zeros((0, dim), np.float32), np.zeros(0, np.int64),
                        np.zeros(0, np.int64), [], infos=infos), 0)

    @property
    def live(self) -> int:
        return len(self.row_of)

    def present(self, ids: Sequence[int]) -> list[int]:
        return [i for i in ids if i in self.row_of]

    def upsert(self, seq: int, ids: np.ndarray, vectors: np.ndarray, metadata: list[dict]) -> None:
        v = self.view
        n, m = v.n, len(ids)
        vecs, row_ids, ended = v.vectors, v.ids, v.ended
        if n + m > min(len(vecs), len(row_ids), len(ended)):
            cap = max(n + m, n * 3 // 2, 1024)  # grow by half: appends stay amortised O(rows)
            vecs, row_ids, ended = (_grown(vecs, n, cap), _grown(row_ids, n, cap),
                                    _grown(ended, n, cap))
        vecs[n:n + m] = vectors
        row_ids[n:n + m] = ids
        ended[n:n + m] = NEVER
        v.metadata.extend(metadata)  # readers look only below their view's n
        for j, i in enumerate(ids.tolist()):
            old = self.row_of.get(i)
            if old is not None:
                ended[old] = seq
            self.row_of[i] = n + j
        self.next_id = max(self.next_id, int(ids.max()) + 1) if m else self.next_id
        self.view = replace(v, n=n + m, seq=seq, vectors=vecs, ids=row_ids, ended=ended)

    def delete(self, seq: int, ids: np.ndarray) -> int:
        ended, gone = self.view.ended, 0
        for i in ids.tolist():
            row = self.row_of.pop(i, None)
            if row is not None:
                ended[row] = seq
                gone += 1
        self.view = replace(self.view, seq=seq)
        return gone


def _grown(a: np.ndarray, n: int, cap: int) -> np.ndarray:
    out = np.empty((cap,) + a.shape[1:], a.dtype)
    out[:n] = a[:n]
    return out


def live_sample(view: View, limit: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Ids, vectors and metadata of at most ``limit`` live rows, spread evenly over the
    collection (the same rows each time for the same state)."""
    rows = np.flatnonzero(view.alive())
    if len(rows) > limit:
        rows = rows[np.linspace(0, len(rows) - 1, limit).astype(np.int64)]
    return (view.ids[rows].copy(), np.asarray(view.vectors[rows], dtype=np.float32),
            [view.metadata[r] for r in rows.tolist()])


def live_metadata(view: View, item_id: int) -> dict | None:
    """The metadata of live id ``item_id``, or None when the view does not hold it."""
    rows = np.flatnonzero(view.ids[:view.n] == item_id)
    rows = rows[view.ended[rows] > view.seq]
    return view.metadata[int(rows[-1])] if len(rows) else None


def unit_vectors(values: Sequence[Sequence[float]] | np.ndarray, dim: int,
                 names: Sequence[str] | None = None) -> np.ndarray:
    """(n, dim) float32 rows of unit length, or one InvalidInputError naming the first bad item.

    Norms are taken in float64: finite float32 values (all 3e38) overflow a float32 norm, and
    a vector that cannot be normalised has no direction to search by."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise InvalidInputError(f"the index holds {dim}-d vectors; got shape {tuple(x.shape)}")
    with np.errstate(all="ignore"):
        norms = np.linalg.norm(x, axis=1)
    bad = ~(np.isfinite(x).all(axis=1) & np.isfinite(norms) & (norms > 0))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        what = f"item {names[j]}" if names is not None else "the vector"
        problem = "is not finite" if not np.isfinite(x[j]).all() else "is zero or cannot be normalised"
        raise InvalidInputError(f"{what}: the vector {problem}; vectors must be finite and non-zero")
    return (x / norms[:, None]).astype(np.float32)


def valid_ids(ids: Sequence[int | None], distinct: bool = False) -> None:
    """Explicit ids are integers (a bool is not) in [0, MAX_ID]; ``distinct``: each at most
    once within the request."""
    given = [i for i in ids if i is not None]
    for i in given:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)) \
                or not 0 <= i <= MAX_ID:
            raise InvalidInputError(f"ids must be integers in [0, {MAX_ID}] (-1 means 'no "
                                    f"result'); got {i!r}")
    if distinct and len(set(given)) != len(given):
        dup = next(i for i in given if given.count(i) > 1)
        raise InvalidInputError(f"id {dup} appears twice in one request; send each id once")
