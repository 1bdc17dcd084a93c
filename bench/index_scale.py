"""``index_search.py --on-disk``: a store index at scale, built by sharded add and merge into
inverted lists on disk, its shortlist re-ranked each way; memory from the planner's formula
(``index_memory``) beside the files and the process's own resident memory."""
from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import numpy as np

REFINES = ("none", "sq8", "exact")


def rss() -> dict[str, int]:
    """This process's resident memory, anonymous and file-backed (memory-mapped files)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) << 10
    return out


def cold_latency(load, queries: np.ndarray, k: int) -> None:
    """One query at a time right after the page cache is dropped and the index is loaded
    afresh (``load()``): the probed lists and the shortlist's rows come from disk."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        print(f"cold cache: not measured ({exc.strerror}; needs root)")
        return
    index = load()
    took = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q[None], k)
        took.append(time.perf_counter() - t0)
    ms = np.array(took) * 1000
    print(f"exact, page cache dropped first: {len(ms)} queries one by one, p50 {np.median(ms):.1f} ms, "
          f"p99 {np.percentile(ms, 99):.1f} ms, mean {ms.mean():.1f} ms")


def gib(n: float) -> str:
    return f"{n / (1 << 30):.2f}"


def write_store(src, n: int, work: Path):
    """The source store's vectors topped up to ``n`` with noisy copies, as a store in ``work``."""
    from index_search import with_noisy_copies

    from embedsvc.store import EmbeddingStore

    if (work / "manifest.json").is_file() and EmbeddingStore.open(work).count == n:
        return EmbeddingStore.open(work)
    x = with_noisy_copies(src.vectors(), n)
    store = EmbeddingStore.open_or_create(work, src.provenance)
    meta = src.metadata()
    for lo in range(0, n, 100_000):
        rows = [{"path": meta[i % src.count]["path"], "label": meta[i % src.count].get("label"),
                 "copy": i >= src.count} for i in range(lo, min(n, lo + 100_000))]
        store.append(x[lo:lo + 100_000], rows, [])
    return store


def on_disk(args) -> int:
    from index_search import qps

    from embedsvc.index.planner import bytes_per_vector, fixed_bytes, index_memory, plan_index
    from embedsvc.index.refine import Refiner, train_sq
    from embedsvc.index.store_index import build_store_index, load_store_index
    from embedsvc.index.tuning import exact_neighbors, held_out_queries, recall_at_k, tune
    from embedsvc.store import EmbeddingStore

    work = Path(args.on_disk)
    t0 = time.perf_counter()
    store = write_store(EmbeddingStore.open(args.store), args.n, work / "store")
    n, d = store.count, store.dim
    print(f"store of {n} vectors ({d}-d) in {work / 'store'}: {time.perf_counter() - t0:.0f} s")
    queries = held_out_queries(store.take(np.arange(0, n, max(1, n // 20_000))), args.queries,
                               seed=12345)
    t0 = time.perf_counter()
    truth = exact_neighbors(store.iter_vectors(), queries, args.k)
    flat_s = time.perf_counter() - t0
    print(f"exact truth for {len(queries)} queries, streamed over the shards: {flat_s:.1f} s "
          f"({len(queries) / flat_s:.1f} q/s batched, the flat scan)")

    t0 = time.perf_counter()
    if args.reuse and (store.root / "indexes" / "bench" / "index_infos.json").is_file():
        print("index: the one built by an earlier run")
    else:
        i = build_store_index(store, "bench", "ivfpq", 0.95, refine="exact", workers=args.workers,
                              progress=True).infos
        print(f"built {i['factory']} in {i['build_seconds']:.0f} s ({i['blocks']} blocks, "
              f"train + add + merge) and tuned in {i['tuning_seconds']:.0f} s; files "
              f"{gib(i['disk_bytes'])} GiB; wall {time.perf_counter() - t0:.0f} s")
    index = load_store_index(store, "bench")
    sample = store.take(np.sort(np.random.default_rng(0).choice(n, min(n, 65_536), replace=False)))
    flat_bytes = index_memory(plan_index(n, d, "flat"), d, n)
    print(f"\nflat would hold {gib(flat_bytes)} GiB ({bytes_per_vector('flat', d)} B/vector)")
    print(f"{'refine':<7} {'nprobe':>6} {'recall@10':>9} {'q/s 1-by-1':>11} {'q/s batch':>10} "
          f"{'memory GiB':>10} {'x flat':>7}")
    tuning = held_out_queries(sample, 1000, seed=1)
    tuning_truth = exact_neighbors(store.iter_vectors(), tuning, args.k)
    measured = {}
    for refine in REFINES:
        if refine == "exact":  # the one the build made, loaded as a server would
            del index
            before = rss()
            index = load_store_index(store, "bench")
        elif refine == "none":
            index.refiner = None
        else:
            sq = train_sq(refine, sample)
            index.refiner = Refiner.from_codes(refine, sq, np.concatenate(
                [sq.sa_encode(np.asarray(v, np.float32)) for v in store.iter_vectors()]))
        tuned = tune(index, tuning, tuning_truth, 0.95)
        recall = recall_at_k(index.search(queries, args.k)[1], truth)
        single, batch = qps(index, queries[:300], args.k)
        if refine == "exact":
            measured = {key: value - before[key] for key, value in rss().items()}
        mem = index_memory(plan_index(n, d, "ivfpq", refine=refine), d, n)
        print(f"{refine:<7} {tuned['search_param_value']:>6} {recall:9.3f} {single:11.0f} "
              f"{batch:10.0f} {gib(mem):>10} {mem / flat_bytes:7.3f}", flush=True)
    print(f"\nexact, loaded and searched: this process grew by {gib(measured['RssAnon'])} GiB of "
          f"its own memory and {gib(measured['RssFile'])} GiB of mapped files")
    # no process may still map the pages dropped: the page cache keeps mapped ones
    del index, store, sample
    gc.collect()
    cold_latency(lambda: load_store_index(EmbeddingStore.open(work / "store"), "bench"),
                 queries[300:600], args.k)
    print(f"memory per vector: {bytes_per_vector('ivfpq', d, 'sq8')} B (sq8), "
          f"{bytes_per_vector('ivfpq', d, 'exact')} B (exact), plus "
          f"{gib(fixed_bytes('ivfpq', d, n))} GiB of centroids and codebooks")
    return 0
