"""A served collection's write and search costs as it grows: 10k, 100k and 1M vectors, in one run.

Through ``Collection`` (the object behind Upsert / Delete / Search), on this machine's disk:

- upsert: 10 vectors per call, fsync included (the write-ahead log), p50 / p99 over --calls
  calls, with the background indexer running as it would;
- search: one query per call, k=10, p50 / p99, and recall@10 against an exact scan of every
  live vector (numpy), over --calls held-out queries.

Vectors: synthetic unit vectors with the low intrinsic dimension of real embeddings (a 32-d
Gaussian latent mapped linearly to D, plus isotropic noise). Uniformly random vectors have no
neighbours worth the name (every point is nearly equidistant), which no index is built for.
Queries: stored vectors moved by noise of norm 0.3, renormalised. 10k and 100k at 1280-d (the
effnet-lite0 dimension); 1M at 384-d, because filling an HNSW graph with 1M 1280-d vectors
takes well over 15 minutes on 2 cores; a 10k point at 384-d gives the 1M point its baseline.

    .venv/bin/python bench/collections.py [--sizes 10000,100000,1000000] [--calls 200]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embedsvc.collection.collection import Collection
from embedsvc.collection.settings import CollectionSettings

LATENT = 32
GROW_BATCH = 5000


def vectors(n: int, dim: int, rng: np.random.Generator, mix: np.ndarray) -> np.ndarray:
    x = rng.standard_normal((n, LATENT)).astype(np.float32) @ mix
    x += rng.standard_normal(x.shape).astype(np.float32) * 0.3
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def grow(c: Collection, upto: int, dim: int, rng, mix, held: list[np.ndarray]) -> None:
    with tqdm(total=upto, initial=c.count, unit="vec", desc=f"fill {dim}-d", leave=False) as bar:
        while c.count < upto:
            x = vectors(min(GROW_BATCH, upto - c.count), dim, rng, mix)
            c.upsert(x, [None] * len(x), [{}] * len(x))
            held.append(x)
            bar.update(len(x))
    t0 = time.perf_counter()
    c.wait_idle()  # indexing, rebuilds, tuning and snapshots caught up
    print(f"  {dim}-d, {upto:,} vectors: background indexing finished "
          f"{time.perf_counter() - t0:.0f} s after the last write; kind {c.kind}", flush=True)


def measure(c: Collection, dim: int, calls: int, rng, mix, held: list[np.ndarray]) -> dict:
    upserts = []
    for _ in range(calls):
        x = vectors(10, dim, rng, mix)
        t0 = time.perf_counter()
        c.upsert(x, [None] * 10, [{}] * 10)
        upserts.append(time.perf_counter() - t0)
        held.append(x)
    c.wait_idle()
    stored = np.concatenate(held)
    base = stored[rng.choice(len(stored), calls, replace=False)]
    queries = base + rng.standard_normal(base.shape).astype(np.float32) * (0.3 / np.sqrt(dim))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    searches, found = [], []
    for q in queries:
        t0 = time.perf_counter()
        hits = c.search(q, 10)
        searches.append(time.perf_counter() - t0)
        found.append([h[0] for h in hits])
    truth = np.concatenate([np.argpartition(-(chunk @ stored.T), 10, axis=1)[:, :10]
                            for chunk in np.array_split(queries, max(1, calls // 20))])
    # (ids are row numbers of ``stored``: the collection assigned them in this order)
    recall = np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth)])
    ms = lambda a, p: 1000 * float(np.percentile(a, p))  # noqa: E731
    return {"upsert_p50": ms(upserts, 50), "upsert_p99": ms(upserts, 99),
            "search_p50": ms(searches, 50), "search_p99": ms(searches, 99), "recall": recall,
            "kind": c.kind, "param": c.table.view.infos.get("search_param_value")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--dir", help="where to write the collections (default: a temp dir)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    plan = [(1280, s) for s in sizes if s < 1_000_000]
    if any(s >= 1_000_000 for s in sizes):
        plan += [(384, min(sizes))] + [(384, s) for s in sizes if s >= 1_000_000]
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-collections-"))
    rows, collections = [], {}
    try:
        for dim, size in plan:
            rng = np.random.default_rng(dim)
            if dim not in collections:
                mix = rng.standard_normal((LATENT, dim)).astype(np.float32) / np.sqrt(LATENT)
                c = Collection.create(root / f"d{dim}", {"dim": dim, "backbone": "synthetic"},
                                      CollectionSettings())
                collections[dim] = (c, mix, [])
            c, mix, held = collections[dim]
            grow(c, size, dim, rng, mix, held)
            r = measure(c, dim, args.calls, rng, mix, held)
            rows.append((dim, size, r))
            print(f"  {dim}-d {size:>9,}: upsert p50 {r['upsert_p50']:.1f} ms, search p50 "
                  f"{r['search_p50']:.1f} ms, recall@10 {r['recall']:.3f}", flush=True)
    finally:
        for c, _, _ in collections.values():
            c.close()
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{'dim':>5} {'vectors':>10} {'kind':>6} {'param':>6} {'upsert p50':>11} "
          f"{'upsert p99':>11} {'search p50':>11} {'search p99':>11} {'recall@10':>10}")
    for dim, size, r in rows:
        print(f"{dim:>5} {size:>10,} {r['kind']:>6} {str(r['param'] or '-'):>6} "
              f"{r['upsert_p50']:>8.1f} ms {r['upsert_p99']:>8.1f} ms {r['search_p50']:>8.1f} ms "
              f"{r['search_p99']:>8.1f} ms {r['recall']:>10.3f}")
    by = {(d, s): r for d, s, r in rows}
    for dim in sorted({d for d, _, _ in rows}):
        sized = sorted(s for d, s, _ in rows if d == dim)
        if len(sized) > 1:
            lo, hi = by[(dim, sized[0])], by[(dim, sized[-1])]
            print(f"{dim}-d: upsert p50 at {sized[-1]:,} / at {sized[0]:,} = "
                  f"{hi['upsert_p50'] / lo['upsert_p50']:.2f}x")


if __name__ == "__main__":
    main()
