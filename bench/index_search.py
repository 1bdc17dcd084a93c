"""Recall@10 and queries/s of each index kind against exact flat search, in one run.

Vectors: a real effnet-lite0 store (e.g. all 70,000 Fashion-MNIST images) topped up to --n with
noisy copies of its own vectors (noise of norm 0.3, renormalised). Queries: held-out noisy
vectors, never the tuning ones. Queries/s are measured one query per call (as a service
answers them) and as one batch.

    .venv/bin/python bench/index_search.py STORE [--n 100000] [--queries 1000]

``--on-disk WORK``: the scale-out build instead. The --n vectors are written as a store in
WORK; an ivfpq store index is built from it by sharded add and merge into inverted lists on
disk; its shortlist is then re-ranked each way (none, sq8, exact), each tuned to recall@10
0.95 and measured on held-out queries, with the memory each needs against flat's; the exact
refinement once more with the page cache dropped (as root), reading the store from disk:

    .venv/bin/python bench/index_search.py STORE --n 1000000 --on-disk bench-out/1m
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def with_noisy_copies(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    if len(x) >= n:
        return x[:n]
    rng = np.random.default_rng(seed)
    extra = x[rng.integers(0, len(x), n - len(x))]
    extra = extra + rng.standard_normal(extra.shape).astype(np.float32) * (0.3 / np.sqrt(x.shape[1]))
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    return np.concatenate([x, extra.astype(np.float32)])


def qps(vi, queries: np.ndarray, k: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    for i in range(len(queries)):
        vi.search(queries[i:i + 1], k)
    single = len(queries) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    vi.search(queries, k)
    batch = len(queries) / (time.perf_counter() - t0)
    return single, batch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--kinds", default="flat,hnsw,ivf,ivfpq,auto")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--on-disk", metavar="WORK", help="the sharded on-disk build, in WORK")
    ap.add_argument("--workers", type=int, default=None, help="--on-disk: add processes")
    ap.add_argument("--reuse", action="store_true", help="--on-disk: the index an earlier run built")
    args = ap.parse_args()
    if args.on_disk:
        from index_scale import on_disk

        return on_disk(args)

    from embedsvc.index import build_index
    from embedsvc.index.tuning import exact_neighbors, held_out_queries, recall_at_k
    from embedsvc.store import EmbeddingStore

    store = EmbeddingStore.open(args.store)
    x = with_noisy_copies(store.vectors(), args.n)
    queries = held_out_queries(x, args.queries, seed=12345)
    t0 = time.perf_counter()
    truth = exact_neighbors(x, queries, args.k)
    print(f"{len(x)} vectors ({store.count} real from {args.store}), dim {x.shape[1]}, "
          f"{len(queries)} held-out queries; exact ground truth in {time.perf_counter() - t0:.1f} s")
    print(f"{'kind':<6} {'factory':<22} {'build s':>8} {'param':>14} {'recall@10':>9} "
          f"{'q/s 1-by-1':>11} {'q/s batch':>10} {'x flat (1-by-1)':>16}")
    flat_qps = None
    for kind in args.kinds.split(","):
        # PQ codes alone here; --on-disk measures the refinements
        vi = build_index(x, kind=kind, recall_target=0.95, k=args.k, refine="none")
        recall = recall_at_k(vi.search(queries, args.k)[1], truth)
        single, batch = qps(vi, queries, args.k)
        if kind == "flat":
            flat_qps = single
        param = (f"{vi.infos['search_param']}={vi.infos['search_param_value']}"
                 if vi.infos.get("search_param") else "-")
        ratio = f"{single / flat_qps:.1f}x" if flat_qps else "-"
        print(f"{kind:<6} {vi.infos['factory']:<22} {vi.infos['build_seconds']:8.1f} {param:>14} "
              f"{recall:9.3f} {single:11.0f} {batch:10.0f} {ratio:>16}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
