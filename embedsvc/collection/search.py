"""Searching one ``View`` of a collection: the approximate index for the rows it covers, an
exact scan for the rows after them, every candidate re-scored exactly from the rows.

A filter (``where``: metadata key/values that must all match) asks the approximate index for
20x the candidates (at least 200), so a very selective filter may return fewer than ``k``;
the exact part is filtered completely.
"""
from __future__ import annotations

import numpy as np

from . import ann
from .rows import View
from .segments import row_scores


def _fetch(k: int, where: dict | None) -> int:
    return max(k * 20, 200) if where else k


def ann_candidates(v: View, q: np.ndarray, k: int, where: dict | None) -> np.ndarray:
    """Candidate rows from the approximate index (call it holding the index's read lock)."""
    indexed = v.indexed if v.ann is not None else 0
    if not indexed:
        return np.zeros(0, np.int64)
    return ann.search(v.ann, v.infos, q, min(_fetch(k, where), indexed), v.alive(0, indexed))


def exact_top(v: View, q: np.ndarray, k: int, where: dict | None,
              found: np.ndarray) -> list[tuple[int, float, dict]]:
    """The best ``k`` (id, score, metadata) among ``found`` and the rows no index covers."""
    indexed = v.indexed if v.ann is not None else 0
    fetch = _fetch(k, where)
    tail = row_scores(v.vectors, indexed, v.n, q[0])
    tail[~v.alive(indexed)] = -np.inf
    if where or len(tail) <= fetch:
        best = np.argsort(-tail, kind="stable")
    else:
        best = np.argpartition(-tail, fetch)[:fetch]
    rows = np.concatenate([found, indexed + best[np.isfinite(tail[best])]])
    scores = v.vectors[rows] @ q[0]
    hits = []
    for j in np.argsort(-scores, kind="stable"):
        m = v.metadata[rows[j]]
        if not where or all(m.get(key) == value for key, value in where.items()):
            hits.append((int(v.ids[rows[j]]), float(scores[j]), m))
            if len(hits) == k:
                break
    return hits
