"""What a publication costs and how soon a reader replica serves a write, as a collection grows.

A writer's collection (384-d vectors, the default settings: exact below 20,000 vectors, HNSW
above, or IVF-PQ where --memory-budget-mb leaves no room for HNSW) and a reader following its
data dir in the same process, as a `role = "reader"` server does (``FollowedCollections``,
``follow_interval_s`` 0.25 s); the writer publishes at most ``publish_every`` 0.5 s after a write.
For each size:

1. bytes written and seconds per publication after each of ``--rounds`` batches of 100 upserts
   (and 10 deletes), published on demand;
2. acknowledgement -> served lag of ``--writes`` upserts of 64 vectors at random moments: from
   the upsert's return until the reader's search finds its last vector;
3. the same during a rebuild (a quarter of the rows deleted: the rows are numbered again and the
   index built anew while writes go on).

    .venv/bin/python bench/replica_lag.py [--sizes 10000,100000,1000000] [--writes 40]

Targets (issue 33): bytes of one publication at 1M <= 2x those at 10k; lag p99 <= 2 s at 1M,
also during a rebuild.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embedsvc.collection.collection import Collection
from embedsvc.collection.settings import CollectionSettings
from embedsvc.service.replicas import FollowedCollections

DIM, BATCH = 384, 64


def unit(rng, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def lags(c: Collection, reader: FollowedCollections, rng, writes: int, desc: str,
         during=None) -> list[float]:
    out = []
    for _ in tqdm(range(writes), desc=desc, unit="write"):
        if during is not None and not during():
            break
        time.sleep(rng.uniform(0, 1.5))  # writes at any moment of the publish cycle
        x = unit(rng, BATCH)
        c.upsert(x, [None] * BATCH, [{}] * BATCH)
        acked = time.monotonic()
        while True:
            served = reader.find("lag")
            if served is not None and served.search(x[-1], 1)[0][1] > 0.999:
                break
            time.sleep(0.005)
        out.append(time.monotonic() - acked)
    return out


def measure(size: int, args, rng) -> dict:
    data = Path(tempfile.mkdtemp(prefix="replica-lag-"))
    settings = CollectionSettings(memory_budget_bytes=args.memory_budget_mb << 20)
    c = Collection.create(data / "lag", {"dim": DIM, "backbone": "bench"}, settings)
    try:
        t0 = time.perf_counter()
        for lo in tqdm(range(0, size, 50_000), desc=f"fill {size:,}", unit="batch"):
            n = min(50_000, size - lo)
            c.upsert(unit(rng, n), [None] * n, [{"i": str(lo + j)} for j in range(n)])
        c.wait_idle()
        c.publisher.publish()
        c.wait_idle()
        filled = time.perf_counter() - t0
        written, seconds = [], []
        for r in range(args.rounds):
            c.upsert(unit(rng, 100), [None] * 100, [{"round": str(r)}] * 100)
            c.delete([int(i) for i in rng.choice(size, 10, replace=False)])
            t = time.perf_counter()
            c.publisher.publish()
            seconds.append(time.perf_counter() - t)
            written.append(c.published.written_bytes)
        c.publish_every = 0.5  # a writer with readers from here on (publish_interval_s)
        reader = FollowedCollections(data, follow_interval_s=0.25)
        try:
            steady = lags(c, reader, rng, args.writes, f"lag at {size:,}")
            epoch = c.table.view.epoch
            live = np.flatnonzero(c.table.view.alive())
            c.delete(c.table.view.ids[live[: len(live) // 4]].tolist())  # a rebuild starts
            during = lags(c, reader, rng, args.writes, f"lag in a rebuild at {size:,}",
                          lambda: c.table.view.epoch == epoch)
            rebuilt = c.table.view.epoch != epoch
            c.wait_idle()
        finally:
            reader.close()
        return {"size": size, "kind": c.kind, "filled_s": filled, "bytes": np.median(written),
                "publish_s": np.median(seconds), "steady": steady, "during": during,
                "rebuilt": rebuilt}
    finally:
        c.close()
        shutil.rmtree(data, ignore_errors=True)


def summary(lag: list[float]) -> str:
    if not lag:
        return "      -        -        -"
    return f"{np.median(lag):6.2f}s  {np.percentile(lag, 99):6.2f}s  {max(lag):6.2f}s ({len(lag)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--writes", type=int, default=40)
    ap.add_argument("--memory-budget-mb", type=int, default=4096)
    args = ap.parse_args()
    logging.disable(logging.INFO)
    rng = np.random.default_rng(0)
    rows = [measure(int(s), args, rng) for s in args.sizes.split(",")]
    print(f"\n{'vectors':>10} {'index':>7} {'publication':>12} {'seconds':>8}   lag p50 / p99 / max "
          f"(writes), steady and during a rebuild")
    for r in rows:
        print(f"{r['size']:>10,} {r['kind']:>7} {r['bytes'] / 1024:9.1f} KiB {r['publish_s']:7.3f}s   "
              f"{summary(r['steady'])}   |   {summary(r['during'])}"
              + ("  (the rebuild ended during these writes)" if r["rebuilt"]
                 else "  (the rebuild still ran after the last of them)"))
    base, top = rows[0], rows[-1]
    checks = [(f"publication bytes at {top['size']:,} <= 2x those at {base['size']:,}",
               top["bytes"] <= 2 * base["bytes"]),
              (f"lag p99 <= 2 s at {top['size']:,}", np.percentile(top["steady"], 99) <= 2.0),
              (f"lag p99 <= 2 s at {top['size']:,} during a rebuild",
               bool(top["during"]) and np.percentile(top["during"], 99) <= 2.0)]
    for what, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
