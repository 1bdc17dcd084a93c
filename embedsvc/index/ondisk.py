"""Store indexes built the way autofaiss builds large ones, so that neither the build nor the
search needs the vectors in memory:

    train   the IVF and PQ quantisers (and the refinement's scalar quantiser) once, on a
            sample of the store's rows;
    add     each block of rows into its own copy of the trained index, in parallel: worker
            processes here, Ray tasks on a cluster; a block reads only its rows from the
            memory-mapped shards;
    merge   the blocks' inverted lists into one file, ``lists-N.ivfdata``, which a search
            memory-maps (FAISS ``OnDiskInvertedLists``): only the lists it probes are read;
    tune    nprobe on held-out queries against an exact scan streamed shard by shard.

``index update`` adds the rows appended since: one more block, merged with the current lists
into generation N+1; the info file names the new generation last, then the old one goes.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import fsync_file
from ..errors import InvalidInputError
from ..store import EmbeddingStore
from .chatter import faiss_chatter_silenced
from .planner import SQ_BITS, IndexPlan
from .refine import Refiner, train_sq
from .tuning import exact_neighbors, held_out_queries, tune
from .vector_index import VectorIndex, remove_unnamed_generations, train, training_rows

BLOCK_ROWS = 100_000  # rows per add task: 512 MB of 1280-d float32 read by one worker
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class BlockJob:
    """One add task; only paths and numbers, so it pickles to a process or a Ray worker."""
    trained: str
    store: str
    start: int
    stop: int
    out: str
    quantizer: str | None
    threads: int


def add_block(job: BlockJob) -> str:
    import faiss

    faiss.omp_set_num_threads(job.threads)
    x = EmbeddingStore.open(job.store).take(np.arange(job.start, job.stop))
    index = faiss.read_index(job.trained)
    index.add_with_ids(x, np.arange(job.start, job.stop, dtype=np.int64))
    faiss.write_index(index, job.out)
    if job.quantizer:
        np.save(job.out + ".codes.npy", faiss.read_index(job.quantizer).sa_encode(x))
    return job.out


def build_ondisk(store: EmbeddingStore, plan: IndexPlan, directory: Path, recall_target: float,
                 k: int = 10, workers: int | None = None, engine: str = "local",
                 address: str | None = None, progress: bool = False, seed: int = 0,
                 tuning_queries: int = 1000) -> VectorIndex:
    """Train, add in blocks, merge on disk and tune; the caller saves (under the store lock)."""
    import faiss

    t0 = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    generation = _next_generation(directory)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=directory) as work:
        sample = store.take(training_rows(store.count, plan, seed))
        index = faiss.index_factory(store.dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
        train(index, plan, sample, seed)
        faiss.write_index(index, f"{work}/trained.faiss")
        sq = train_sq(plan.refine, sample) if plan.refine in SQ_BITS else None
        if sq is not None:
            faiss.write_index(sq, f"{work}/quantizer.faiss")
        blocks = _add_blocks(store, work, 0, sq is not None, workers, engine, address, progress)
        merged = merge_lists(f"{work}/trained.faiss", blocks, directory / f"lists-{generation}.ivfdata")
        codes = _gather_codes(blocks, directory / f"refine-{generation}.npy", None) if sq else None
    refiner = (Refiner.from_codes(plan.refine, sq, codes) if sq is not None
               else Refiner("exact", store.take) if plan.refine == "exact" else None)
    infos = {"kind": plan.kind, "factory": plan.factory, "count": store.count, "dim": store.dim,
             "build_seconds": round(time.perf_counter() - t0, 3), "recall_target": recall_target,
             "k": k, "lists": f"lists-{generation}.ivfdata", "generation": generation,
             "blocks": len(blocks), "engine": engine, "rows_indexed": store.count}
    vi = VectorIndex(merged, plan, store.binding, infos, refiner=refiner)
    queries = held_out_queries(sample, tuning_queries, seed)
    vi.infos.update(tune(vi, queries, exact_neighbors(store.iter_vectors(), queries, k), recall_target))
    vi.infos["tuning_seconds"] = round(time.perf_counter() - t0 - infos["build_seconds"], 3)
    return vi


def update_ondisk(store: EmbeddingStore, vi: VectorIndex, directory: Path,
                  workers: int | None = None, engine: str = "local", address: str | None = None,
                  progress: bool = False) -> int:
    """Add rows ``rows_indexed..count`` as a new generation of ``vi``'s files; returns how
    many. The caller saves."""
    import faiss

    start = int(vi.infos["rows_indexed"])
    if start >= store.count:
        return 0
    generation = _next_generation(directory)
    with tempfile.TemporaryDirectory(prefix=".update-", dir=directory) as work:
        # the trained quantisers without the lists: the blocks start from an empty copy
        empty = faiss.read_index(str(directory / "index.faiss"), faiss.IO_FLAG_SKIP_IVF_DATA)
        ivf = faiss.extract_index_ivf(empty)
        lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
        ivf.replace_invlists(lists, True)
        lists.this.disown()  # the index owns it now
        ivf.ntotal = empty.ntotal = 0
        faiss.write_index(empty, f"{work}/trained.faiss")
        sq = vi.refiner.sq if vi.refiner is not None else None
        if sq is not None:
            faiss.write_index(sq, f"{work}/quantizer.faiss")
        blocks = _add_blocks(store, work, start, sq is not None, workers, engine, address, progress)
        merged = merge_lists(f"{work}/trained.faiss", [str(directory / "index.faiss"), *blocks],
                             directory / f"lists-{generation}.ivfdata")
        if sq is not None:
            codes = _gather_codes(blocks, directory / f"refine-{generation}.npy", vi.refiner.codes)
            vi.refiner = Refiner.from_codes(vi.refiner.kind, sq, codes)
    vi.index = merged
    vi.set_search_param(vi.infos["search_param_value"])
    vi.infos.update(lists=f"lists-{generation}.ivfdata", generation=generation,
                    rows_indexed=store.count, count=store.count)
    return store.count - start


def merge_lists(trained: str, sources: list[str], lists_path: Path):
    """The trained index at ``trained`` with every source's inverted lists merged into
    ``lists_path``, in the order given (ids are kept, so the order only decides ties)."""
    import faiss

    with faiss_chatter_silenced():
        opened = [faiss.read_index(s, faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
                  for s in sources]
        index = faiss.read_index(trained)
        ivf = faiss.extract_index_ivf(index)
        lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(lists_path))
        parts = faiss.InvertedListsPtrVector()
        for src in opened:  # the sources stay open (and own their lists) until the merge is done
            parts.push_back(faiss.extract_index_ivf(src).invlists)
        ntotal = lists.merge_from_multiple(parts.data(), parts.size(), False)
        ivf.replace_invlists(lists, True)
        lists.this.disown()  # the index owns it now
        index.ntotal = ivf.ntotal = ntotal
    fsync_file(lists_path)  # written through a memory map: durable before the info file names it
    return index


def _add_blocks(store: EmbeddingStore, work: str, start: int, codes: bool, workers: int | None,
                engine: str, address: str | None, progress: bool) -> list[str]:
    cpus = os.cpu_count() or 1
    stops = list(range(start + BLOCK_ROWS, store.count, BLOCK_ROWS)) + [store.count]
    spans = list(zip([start] + stops[:-1], stops))
    if engine == "local":  # the cores are shared out among the processes that have a block
        workers = max(1, min(workers or cpus, cpus, len(spans)))
    threads = max(1, cpus // workers) if workers else 1  # Ray without --workers: 1 CPU a task
    jobs = [BlockJob(f"{work}/trained.faiss", str(store.root), lo, hi, f"{work}/block-{i:05d}.faiss",
                     f"{work}/quantizer.faiss" if codes else None, threads)
            for i, (lo, hi) in enumerate(spans)]
    bar = _bar(store.count - start, progress)
    try:
        for job in _run(jobs, engine, workers, address):
            if bar is not None:
                bar.update(job.stop - job.start)
    finally:
        if bar is not None:
            bar.close()
    return [j.out for j in jobs]


def _run(jobs: list[BlockJob], engine: str, workers: int | None, address: str | None):
    """Yields each job once its block is written."""
    if engine not in ENGINES:
        raise InvalidInputError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if engine == "ray":
        from ..store.ray_engine import ray_session

        with ray_session(address) as ray:
            task = ray.remote(add_block)
            pending = {task.options(num_cpus=j.threads).remote(j): j for j in jobs}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ray.get(done[0])  # raises the task's error here
                yield pending.pop(done[0])
    elif workers > 1:
        # spawn: a forked child would inherit FAISS's OpenMP thread pool in an unusable state
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            yield from (j for j, _ in zip(jobs, pool.map(add_block, jobs)))
    else:
        for j in jobs:
            add_block(j)
            yield j


def _gather_codes(blocks: list[str], path: Path, before: np.ndarray | None) -> np.ndarray:
    """The refinement codes of ``before`` and then of every block, written into ``path``."""
    parts = ([before] if before is not None else []) + [
        np.load(b + ".codes.npy", mmap_mode="r") for b in blocks]
    n = sum(len(p) for p in parts)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, parts[-1].shape[1]))
    at = 0
    for p in parts:
        for lo in range(0, len(p), BLOCK_ROWS):  # bounded memory for any size
            chunk = p[lo:lo + BLOCK_ROWS]
            out[at:at + len(chunk)] = chunk
            at += len(chunk)
    out.flush()
    del out
    fsync_file(path)
    return np.load(path, mmap_mode="r")


def _next_generation(directory: Path) -> int:
    """One past any generation on disk (a crashed build's leftovers included)."""
    seen = [int(p.name.split("-")[1].split(".")[0]) for pattern in ("lists-*.ivfdata", "refine-*.*")
            for p in directory.glob(pattern) if p.name.split("-")[1].split(".")[0].isdigit()]
    return max(seen, default=0) + 1


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="index add", unit="vec", unit_scale=True, smoothing=0.1,
                dynamic_ncols=True)


def remove_build_leftovers(directory: Path) -> None:
    """What a failed or killed build left: work folders, and generation files the info file
    does not name. Call with the store's lock held."""
    for d in [*directory.glob(".build-*"), *directory.glob(".update-*")]:
        shutil.rmtree(d, ignore_errors=True)
    remove_unnamed_generations(directory)
