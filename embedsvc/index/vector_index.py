"""A FAISS index bound to an embedding store.

    STORE/indexes/NAME/index.faiss        faiss.write_index
    STORE/indexes/NAME/index_infos.json   plan, tuned search parameter, measured recall, the
                                          store's provenance (embedsvc.provenance)
    STORE/indexes/NAME/removed.npy        ids removed from an index type that cannot drop them

Index ids are store row ids, so results map straight to the store's metadata.
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..atomic import atomic_write_bytes
from ..provenance import PROVENANCE, check_compatible, read_artifact, write_artifact
from ..errors import InvalidInputError
from .chatter import faiss_chatter_silenced
from .planner import IndexPlan, plan_index
from .refine import Refiner, scaled_shortlist, shortlist, train_sq
from .sign_codes import SignCodes
from .tuning import exact_neighbors, held_out_queries, recall_at_k, tune

FORMAT_VERSION = 1
INFOS_JSON = "index_infos.json"


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
                 removed: set[int] | None = None, refiner: Refiner | None = None):
        self.index = index
        self.plan = plan
        self.binding = binding
        self.infos = infos
        self.removed: set[int] = removed or set()
        self.refiner = refiner

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
        self.infos["search_param_value"] = int(value)  # "shortlist": read by _candidates

    def _candidates(self, k: int) -> int:
        """How many results to fetch for ``k`` when a shortlist is re-ranked: a code index's
        tuned shortlist, scaled from the k it was tuned at; an ivfpq one's fixed rule."""
        if self.plan.search_param == "shortlist" and self.infos.get("search_param_value"):
            return scaled_shortlist(k, int(self.infos["search_param_value"]),
                                    int(self.infos.get("k") or 10))
        return shortlist(k)

    # -- search ---------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (nq, k); missing results have id -1 and score -inf."""
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        q = _as_queries(queries, self.dim)
        want = k if self.refiner is None else self._candidates(k)
        fetch = min(int(self.index.ntotal), want + len(self.removed))
        if fetch == 0:
            return (np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64))
        scores, ids = self.index.search(q, fetch)
        if self.removed:
            scores, ids = self._drop_removed(scores, ids, want)
        if self.refiner is not None:
            scores, ids = self.refiner.rerank(q, ids, k)
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
        if self.infos.get("lists"):
            raise InvalidInputError("an index with inverted lists on disk grows by a merge "
                                    "(embedsvc index update), not in place")
        if self.refiner is not None or self.plan.positional:
            self._add_in_order(x, ids)
            return
        self.remove(ids[np.isin(ids, self._all_ids())])  # upsert: a re-added id replaces the old
        self.index.add_with_ids(x, ids)
        self.removed.difference_update(int(i) for i in ids)

    def _add_in_order(self, x: np.ndarray, ids: np.ndarray) -> None:
        """Refinement reads row i for id i, and code kinds keep no ids, so such an index only
        grows by the next rows."""
        n = int(self.index.ntotal)
        if not np.array_equal(ids, np.arange(n, n + len(ids))):
            raise InvalidInputError(f"a refined or {self.plan.kind} index takes the next rows "
                                    f"in order ({n}, {n + 1}, ...); it cannot replace or skip ids")
        if self.refiner is not None:
            self.refiner = self.refiner.extended(x)
        _add(self.index, self.plan, x, ids)

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
        if self.plan.positional:
            return np.arange(int(self.index.ntotal), dtype=np.int64)
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
        """Files that belong to one build carry its generation (``lists-N.ivfdata``,
        ``refine-N.*``); the info file, written last, names them, and files of other
        generations are removed after it. A reader that opened the old ones keeps them."""
        faiss = _faiss()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        generation = int(self.infos.get("generation", 0))  # the on-disk builder counts them
        refine_files = self.refiner.save(d, generation) if self.refiner is not None else {}
        data = self.index.serialize() if isinstance(self.index, SignCodes) else faiss.serialize_index(self.index)
        atomic_write_bytes(d / "index.faiss", data.tobytes())
        buf = io.BytesIO()
        np.save(buf, np.array(sorted(self.removed), dtype=np.int64))
        atomic_write_bytes(d / "removed.npy", buf.getvalue())
        infos = {**self.infos, "format": FORMAT_VERSION, "plan": asdict(self.plan),
                 "ntotal": self.ntotal, "generation": generation, "refine_files": refine_files,
                 "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        # written last: a reader trusts index.faiss only when index_infos.json describes it
        self.infos = write_artifact(d / INFOS_JSON, infos, self.binding or None)
        remove_unnamed_generations(d)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = True,
             expect_binding: dict[str, Any] | None = None,
             rows: Callable[[np.ndarray], np.ndarray] | None = None) -> "VectorIndex":
        """``rows(ids)``: the exact vectors of an index refined with them (its store's)."""
        d = Path(directory)
        for attempt in range(3):  # a writer may swap the generation while this reads
            infos = _read_infos(d)
            try:
                vi = cls._load(d, infos, mmap, expect_binding, rows)
            except (RuntimeError, FileNotFoundError):
                if attempt == 2 or _read_infos(d) == infos:
                    raise
                continue
            if _read_infos(d) == infos:
                return vi
        return vi

    @classmethod
    def _load(cls, d: Path, infos: dict, mmap: bool, expect_binding, rows) -> "VectorIndex":
        faiss = _faiss()
        if expect_binding is not None:
            check_compatible(infos.get(PROVENANCE) or {}, expect_binding, f"index {str(d)!r}")
        if infos.get("lists"):
            # inverted lists on disk, memory-mapped by OnDiskInvertedLists itself, beside
            # index.faiss wherever the store moved (IO_FLAG_MMAP on top of it crashes FAISS 1.15)
            with faiss_chatter_silenced():
                index = faiss.read_index(str(d / "index.faiss"),
                                         faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
        elif infos["plan"]["kind"] == "binary":
            index = SignCodes.read(str(d / "index.faiss"))
        else:
            try:
                index = faiss.read_index(str(d / "index.faiss"),
                                         faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0)
            except RuntimeError:  # not every index type can be memory-mapped
                index = faiss.read_index(str(d / "index.faiss"))
        removed = set(np.load(d / "removed.npy").tolist()) if (d / "removed.npy").is_file() else set()
        plan = IndexPlan(**infos["plan"])
        vi = cls(index, plan, infos.get(PROVENANCE) or {}, infos, removed, Refiner.load(d, infos, rows))
        if infos.get("search_param_value") is not None:
            vi.set_search_param(infos["search_param_value"])
        return vi


def remove_unnamed_generations(d: Path) -> None:
    """Generation files the info file does not name: replaced ones, or a failed build's."""
    infos = _read_infos(d) if has_index(d) else {}
    keep = {infos.get("lists"), *infos.get("refine_files", {}).values()}
    for old in [*d.glob("lists-*.ivfdata"), *d.glob("refine-*.*")]:
        if old.name not in keep:
            old.unlink(missing_ok=True)


def has_index(d: str | os.PathLike) -> bool:
    """Whether ``d`` holds a saved index (its info file is written last)."""
    return (Path(d) / INFOS_JSON).is_file()


def _read_infos(d: Path) -> dict[str, Any]:
    return read_artifact(d / INFOS_JSON, "index", FORMAT_VERSION)


def build_index(vectors: np.ndarray, ids: np.ndarray | None = None, binding: dict | None = None,
                kind: str = "auto", recall_target: float = 0.95, k: int = 10,
                memory_budget_bytes: int = 4 << 30, tuning_queries: int = 1000,
                seed: int = 0, refine: str = "auto",
                rows: Callable[[np.ndarray], np.ndarray] | None = None) -> VectorIndex:
    """Build, fill and tune an index over (N, D) unit vectors, in memory. ``rows``: where an
    ``exact`` refinement reads vectors (default: ``vectors`` itself, kept in memory)."""
    faiss = _faiss()
    x = _as_queries(vectors, np.asarray(vectors).shape[-1])
    ids = np.arange(len(x), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    plan = plan_index(len(x), x.shape[1], kind, memory_budget_bytes, refine=refine)
    if (plan.refine or plan.positional) and not np.array_equal(ids, np.arange(len(x))):
        raise InvalidInputError(f"a refined or {plan.kind} index reads row i for id i; its ids "
                                f"must be 0..n-1")
    t0 = time.perf_counter()
    index = (SignCodes.new(x.shape[1]) if plan.kind == "binary" else
             faiss.index_factory(x.shape[1], plan.factory, faiss.METRIC_INNER_PRODUCT))
    sample = train(index, plan, x, seed)
    _add(index, plan, x, ids)
    refiner = None
    if plan.refine == "exact":
        refiner = Refiner("exact", rows) if rows is not None else Refiner.from_vectors(x)
    elif plan.refine:
        sq = train_sq(plan.refine, sample)
        refiner = Refiner.from_codes(plan.refine, sq, sq.sa_encode(x))
    build_s = time.perf_counter() - t0
    infos: dict[str, Any] = {"kind": plan.kind, "factory": plan.factory, "count": len(x),
                             "dim": int(x.shape[1]), "build_seconds": round(build_s, 3),
                             "recall_target": recall_target, "k": k}
    vi = VectorIndex(index, plan, binding or {}, infos, refiner=refiner)
    if plan.search_param or plan.positional:
        queries = held_out_queries(x, tuning_queries, seed)
        truth = ids[exact_neighbors(x, queries, k)]
        if plan.search_param:
            vi.infos.update(tune(vi, queries, truth, recall_target))
        else:  # codes searched alone: nothing to tune, the recall they give is measured
            recall = recall_at_k(vi.search(queries, k)[1], truth)
            vi.infos.update(recall_at_k=round(recall, 4), tuning_queries=len(queries),
                            recall_target_met=recall >= recall_target)
    else:
        vi.infos.update(recall_at_k=1.0, recall_target_met=True)
    return vi


def _add(index, plan: IndexPlan, x: np.ndarray, ids: np.ndarray) -> None:
    """Code kinds keep no ids (row i is id i); the rest map ids."""
    if plan.positional:
        index.add(x)
    else:
        index.add_with_ids(x, ids)


def training_rows(count: int, plan: IndexPlan, seed: int = 0) -> np.ndarray:
    """Which rows train an IVF index: k-means needs ~39-256 points per list; more only costs
    time."""
    n_train = min(count, max((plan.nlist or 1) * 64, 10_000))
    return np.sort(np.random.default_rng(seed).choice(count, n_train, replace=False))


def train(index, plan: IndexPlan, x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Train an index that needs it (IVF) on a sample of ``x``; returns the sample."""
    sample = x[training_rows(len(x), plan, seed)]
    if not index.is_trained:
        if plan.nlist:
            _training_settings(index)
        index.train(sample)  # IVF: k-means; int8: each dimension's range
    return sample


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
