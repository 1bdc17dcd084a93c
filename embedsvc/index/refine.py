"""Re-ranking an IVF-PQ shortlist ("refine", as autofaiss and FAISS's IndexRefine call it).

PQ codes of 64 bytes rank 1280-d vectors too coarsely for recall@10 (0.72 at the widest
search on 1M Fashion-MNIST embeddings), but the true neighbours are almost always among the
first couple of hundred candidates. Those candidates are scored again with better vectors:

- ``sq8``: scalar-quantised copies, d bytes per vector, kept in ``refine-N.npy`` beside the
  index and memory-mapped;
- ``exact``: the store's own float vectors, read from its memory-mapped shards, so nothing
  more is held in memory and only the pages of the candidates are read.

Ids are row numbers (a store index's ids are its row ids), so row ``i`` of the codes is id ``i``.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import IncompatibleError

SHORTLIST_PER_RESULT = 20  # candidates fetched from the PQ codes per neighbour asked for
MIN_SHORTLIST = 100
QUERY_CHUNK = 128  # queries re-ranked at once: at most 128 x 200 distinct rows, 131 MB at 1280-d


def sq_qtype(refine: str):
    import faiss

    return {"sq8": faiss.ScalarQuantizer.QT_8bit}[refine]


def train_sq(refine: str, sample: np.ndarray):
    """An empty scalar quantiser trained on ``sample``: per-dimension ranges."""
    import faiss

    sq = faiss.IndexScalarQuantizer(sample.shape[1], sq_qtype(refine), faiss.METRIC_INNER_PRODUCT)
    sq.train(np.ascontiguousarray(sample, dtype=np.float32))
    return sq


def shortlist(k: int) -> int:
    return max(MIN_SHORTLIST, SHORTLIST_PER_RESULT * k)


def scaled_shortlist(k: int, tuned: int, tuned_k: int) -> int:
    """Candidates to fetch for ``k`` results from a code index whose shortlist was tuned to
    ``tuned`` at ``tuned_k`` results: the same share of candidates per result."""
    return max(k, -(-tuned * k // tuned_k))


class Refiner:
    """Scores candidates with ``rows(ids) -> float32 (len(ids), dim)``. ``codes`` (row i: id i)
    are what it holds itself: sq8 codes that ``sq`` (a trained IndexScalarQuantizer) decodes,
    or vectors in memory; None when it reads a store."""

    def __init__(self, kind: str, rows: Callable[[np.ndarray], np.ndarray], sq=None,
                 codes: np.ndarray | None = None):
        self.kind, self.rows, self.sq, self.codes = kind, rows, sq, codes

    @classmethod
    def from_codes(cls, kind: str, sq, codes: np.ndarray) -> "Refiner":
        return cls(kind, lambda ids: sq.sa_decode(np.ascontiguousarray(codes[ids])), sq, codes)

    @classmethod
    def from_vectors(cls, vectors: np.ndarray) -> "Refiner":
        """``exact`` over vectors held in memory (an index built without a store)."""
        return cls("exact", lambda ids: vectors[ids], None, vectors)

    def extended(self, x: np.ndarray) -> "Refiner":
        """This refinement with rows ``x`` appended; one that reads a store reads its new rows."""
        if self.codes is None:
            return self
        if self.sq is None:
            return Refiner.from_vectors(np.concatenate([self.codes, x]))
        return Refiner.from_codes(self.kind, self.sq, np.concatenate([self.codes, self.sq.sa_encode(x)]))

    # -- files beside the index: refine-N.faiss (the quantiser) and refine-N.npy (the codes) --
    def save(self, directory: Path, generation: int) -> dict[str, str]:
        """Writes what is not on disk yet; returns the file names for the info file."""
        if self.sq is None:  # exact: the store's vectors are the refinement (or, without a store,
            return {}       # the vectors in memory, which a saved index cannot keep)
        import faiss

        files = {"quantizer": f"refine-{generation}.faiss", "codes": f"refine-{generation}.npy"}
        atomic_write_bytes(directory / files["quantizer"], faiss.serialize_index(self.sq).tobytes())
        mapped = isinstance(self.codes, np.memmap) and Path(self.codes.filename) == (
            directory / files["codes"]).resolve()
        if not mapped:
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(self.codes))
            atomic_write_bytes(directory / files["codes"], buf.getvalue())
        return files

    @classmethod
    def load(cls, directory: Path, infos: dict[str, Any],
             rows: Callable[[np.ndarray], np.ndarray] | None) -> "Refiner | None":
        kind = infos["plan"].get("refine")
        if kind is None:
            return None
        if kind == "exact":
            if rows is None:
                raise IncompatibleError(f"index {str(directory)!r} re-ranks with its store's "
                                        f"vectors; open it through the store")
            return cls(kind, rows)
        import faiss

        files = infos["refine_files"]
        sq = faiss.deserialize_index(np.fromfile(directory / files["quantizer"], np.uint8))
        return cls.from_codes(kind, sq, np.load(directory / files["codes"], mmap_mode="r"))

    def rerank(self, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of each row's candidates ``ids`` (-1: none) by inner product."""
        out_s = np.full((len(ids), k), -np.inf, np.float32)
        out_i = np.full((len(ids), k), -1, np.int64)
        for lo in range(0, len(ids), QUERY_CHUNK):
            cand = ids[lo:lo + QUERY_CHUNK]
            valid = cand >= 0
            # each distinct row is read once, in id order (sequential pages of a shard), and
            # scored against the whole chunk in one matrix product
            if not valid.any():
                continue
            unique, where = np.unique(np.where(valid, cand, cand.max()), return_inverse=True)
            table = self.rows(unique) @ queries[lo:lo + QUERY_CHUNK].T
            scores = table[where.reshape(cand.shape), np.arange(len(cand))[:, None]]
            scores[~valid] = -np.inf
            top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            got = np.take_along_axis(scores, top, 1)
            out_s[lo:lo + len(cand), :top.shape[1]] = got
            out_i[lo:lo + len(cand), :top.shape[1]] = np.where(
                np.isfinite(got), np.take_along_axis(cand, top, 1), -1)
        return out_s, out_i
