"""A FAISS index bound to an embedding store.

    STORE/indexes/NAME/index.faiss        faiss.write_index
    STORE/indexes/NAME/index_infos.json   plan, tuned search parameter, measured recall, the
                                          store binding (backbone, weights sha256, dim, ...)
    STORE/indexes/NAME/removed.npy        ids removed from an index type that cannot drop them

Index ids are store row ids, so results map straight to the store's metadata.
"""
from __future__ import annotations

import io
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..atomic import atomic_write_bytes
from ..embeddings import check_compatible
from ..errors import IncompatibleError, InvalidInputError, NotFoundError
from ..versions import written_by
from .planner import IndexPlan, plan_index

FORMAT_VERSION = 1
SEARCH_LADDER = {
    "efSearch": (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024),
    "nprobe": (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024, 2048),
}


def _faiss():
    import faiss

    return faiss


def _as_queries(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise InvalidInputError(f"index holds {dim}-d vectors; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InvalidInputError("vectors contain NaN or infinity")
    return x


class VectorIndex:
    def __init__(self, index, plan: IndexPlan, binding: dict[str, Any], infos: dict[str, Any],
                 removed: set[int] | None = None):
        self.index = index
        self.plan = plan
        self.binding = binding
        self.infos = infos
        self.removed: set[int] = removed or set()

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - len(self.removed)

    # -- search parameters --------------------------------------------------------------------
    def set_search_param(self, value: int) -> None:
        faiss = _faiss()
        if self.plan.search_param == "efSearch":
            faiss.downcast_index(faiss.downcast_index(self.index).index).hnsw.efSearch = int(value)
        elif self.plan.search_param == "nprobe":
            faiss.extract_index_ivf(self.index).nprobe = int(value)
        self.infos["search_param_value"] = int(value)

    # -- search ---------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (nq, k); missing results have id -1 and score -inf."""
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        q = _as_queries(queries, self.dim)
        fetch = min(int(self.index.ntotal), k + len(self.removed))
        if fetch == 0:
            return (np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64))
        scores, ids = self.index.search(q, fetch)
        if self.removed:
            scores, ids = self._drop_removed(scores, ids, k)
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return scores[:, :k], ids[:, :k]

    def search_where(self, queries: np.ndarray, k: int,
                     keep: Callable[[int], bool] | None = None) -> list[list[tuple[int, float]]]:
        """Top-k (id, score) per query among ids that ``keep`` accepts: asks the index for more
        (20k, at least 200) and filters, since FAISS knows nothing of metadata."""
        fetch = k if keep is None else min(max(1, self.ntotal), max(k * 20, 200))
        scores, ids = self.search(queries, fetch)
        out = []
        for row_s, row_i in zip(scores, ids):
            hits: list[tuple[int, float]] = []
            for s, i in zip(row_s, row_i):
                if i >= 0 and (keep is None or keep(int(i))):
                    hits.append((int(i), float(s)))
                    if len(hits) == k:
                        break
            out.append(hits)
        return out

    def _drop_removed(self, scores, ids, k):
        out_s = np.full((len(ids), k), -np.inf, np.float32)
        out_i = np.full((len(ids), k), -1, np.int64)
        for r in range(len(ids)):
            keep = [j for j, i in enumerate(ids[r]) if i >= 0 and int(i) not in self.removed][:k]
            out_s[r, :len(keep)] = scores[r, keep]
            out_i[r, :len(keep)] = ids[r, keep]
        return out_s, out_i

    # -- updates --------------------------------------------------------------------------------
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x = _as_queries(vectors, self.dim)
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64))
        if ids.shape != (len(x),):
            raise InvalidInputError(f"{len(x)} vectors but {ids.shape} ids")
        self.remove(ids[np.isin(ids, self._all_ids())])  # upsert: a re-added id replaces the old
        self.index.add_with_ids(x, ids)
        self.removed.difference_update(int(i) for i in ids)

    def remove(self, ids) -> int:
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).ravel())
        if len(ids) == 0:
            return 0
        if self.plan.supports_remove:
            return int(self.index.remove_ids(ids))
        present = set(int(i) for i in ids) & set(int(i) for i in self._all_ids())
        before = len(self.removed)
        self.removed |= present
        return len(self.removed) - before

    def _all_ids(self) -> np.ndarray:
        faiss = _faiss()
        idx = faiss.downcast_index(self.index)
        if hasattr(idx, "id_map"):
            return faiss.vector_to_array(idx.id_map)
        ivf = faiss.extract_index_ivf(self.index)
        invlists = ivf.invlists
        parts = [faiss.rev_swig_ptr(invlists.get_ids(l), invlists.list_size(l)).copy()
                 for l in range(ivf.nlist) if invlists.list_size(l)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    # -- persistence ------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        faiss = _faiss()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(d / "index.faiss", faiss.serialize_index(self.index).tobytes())
        buf = io.BytesIO()
        np.save(buf, np.array(sorted(self.removed), dtype=np.int64))
        atomic_write_bytes(d / "removed.npy", buf.getvalue())
        infos = {**self.infos, "format": FORMAT_VERSION, "plan": asdict(self.plan),
                 "binding": self.binding, "ntotal": self.ntotal, "written_by": written_by(),
                 "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        # written last: a reader trusts index.faiss only when index_infos.json describes it
        atomic_write_bytes(d / "index_infos.json", json.dumps(infos, indent=2).encode())
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = True,
             expect_binding: dict[str, Any] | None = None) -> "VectorIndex":
        faiss = _faiss()
        d = Path(directory)
        if not (d / "index_infos.json").is_file():
            raise NotFoundError(f"no index at {str(d)!r} (index_infos.json missing)")
        infos = json.loads((d / "index_infos.json").read_text())
        if infos.get("format") != FORMAT_VERSION:
            raise IncompatibleError(f"index {str(d)!r} has format {infos.get('format')!r}")
        if expect_binding is not None:
            check_compatible(infos["binding"], expect_binding, f"index {str(d)!r}")
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            index = faiss.read_index(str(d / "index.faiss"), flags)
        except RuntimeError:  # not every index type can be memory-mapped
            index = faiss.read_index(str(d / "index.faiss"))
        removed = set(np.load(d / "removed.npy").tolist()) if (d / "removed.npy").is_file() else set()
        plan = IndexPlan(**infos["plan"])
        vi = cls(index, plan, infos["binding"], infos, removed)
        if infos.get("search_param_value") is not None:
            vi.set_search_param(infos["search_param_value"])
        return vi


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


def exact_neighbors(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    faiss = _faiss()
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return flat.search(np.ascontiguousarray(queries), k)[1]


def build_index(vectors: np.ndarray, ids: np.ndarray | None = None, binding: dict | None = None,
                kind: str = "auto", recall_target: float = 0.95, k: int = 10,
                memory_budget_bytes: int = 4 << 30, tuning_queries: int = 1000,
                seed: int = 0) -> VectorIndex:
    """Build, fill and tune an index over (N, D) unit vectors."""
    faiss = _faiss()
    x = _as_queries(vectors, np.asarray(vectors).shape[-1])
    ids = np.arange(len(x), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    plan = plan_index(len(x), x.shape[1], kind, memory_budget_bytes)
    t0 = time.perf_counter()
    index = faiss.index_factory(x.shape[1], plan.factory, faiss.METRIC_INNER_PRODUCT)
    train(index, plan, x, seed)
    index.add_with_ids(x, ids)
    build_s = time.perf_counter() - t0
    infos: dict[str, Any] = {"kind": plan.kind, "factory": plan.factory, "count": len(x),
                             "dim": int(x.shape[1]), "build_seconds": round(build_s, 3),
                             "recall_target": recall_target, "k": k}
    vi = VectorIndex(index, plan, binding or {}, infos)
    if plan.search_param:
        vi.infos.update(tune(vi, x, ids, recall_target, k, tuning_queries, seed))
    else:
        vi.infos.update(recall_at_k=1.0, recall_target_met=True)
    return vi


def train(index, plan: IndexPlan, x: np.ndarray, seed: int = 0) -> None:
    """Train an index that needs it (IVF) on a sample of ``x``."""
    if index.is_trained:
        return
    _training_settings(index)
    rng = np.random.default_rng(seed)
    # k-means needs ~39-256 points per list; more only costs time
    n_train = min(len(x), max((plan.nlist or 1) * 64, 10_000))
    index.train(x[np.sort(rng.choice(len(x), n_train, replace=False))])


def search_ladder(plan: IndexPlan) -> tuple[int, ...]:
    """The search parameter values tuning tries, in order (nprobe never beyond nlist)."""
    ladder = SEARCH_LADDER[plan.search_param]
    if plan.nlist:
        ladder = tuple(v for v in ladder if v <= plan.nlist) or (plan.nlist,)
    return ladder


def _training_settings(index) -> None:
    """FAISS prints a warning per k-means run when it has fewer than 39 points per centroid; the
    planner sized the lists for the data it has, so those lines are noise to the user. IVF-PQ
    also trains for polysemous search by default, which nothing here uses and which made
    training about 7x slower (4,500 x 1280-d vectors, IVF115,PQ64x6: 28.8 s vs 3.9 s)."""
    faiss = _faiss()
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.cp.min_points_per_centroid = 1
    if hasattr(ivf, "pq"):
        ivf.pq.cp.min_points_per_centroid = 1
        ivf.do_polysemous_training = False


TUNING_MARGIN = 0.01


def tune(vi: VectorIndex, x: np.ndarray, ids: np.ndarray, target: float, k: int,
         n_queries: int, seed: int) -> dict[str, Any]:
    """Smallest search parameter on the ladder whose recall@k meets the target.

    Aims ``TUNING_MARGIN`` above the target: recall measured on a few hundred queries varies
    by about a point, and the promise is about queries the tuning never saw.
    """
    queries = held_out_queries(x, n_queries, seed)
    truth = ids[exact_neighbors(x, queries, k)]
    ladder = search_ladder(vi.plan)

    def ids_found(value: int) -> np.ndarray:
        vi.set_search_param(value)
        return vi.search(queries, k)[1]

    found = pick_search_param(ladder, ids_found, truth, target)
    vi.set_search_param(found["search_param_value"])
    return {"search_param": vi.plan.search_param, **found}


def pick_search_param(ladder: tuple[int, ...], ids_found: Callable[[int], np.ndarray],
                      truth: np.ndarray, target: float) -> dict[str, Any]:
    """The first value on the ladder whose recall@k (``ids_found(value)`` against ``truth``)
    reaches the target plus the margin; the last one if none does."""
    recall = 0.0
    for value in ladder:
        recall = recall_at_k(ids_found(value), truth)
        if recall >= min(1.0, target + TUNING_MARGIN):
            break
    return {"search_param_value": int(value), "recall_at_k": round(recall, 4),
            "tuning_queries": len(truth), "recall_target_met": recall >= target}
