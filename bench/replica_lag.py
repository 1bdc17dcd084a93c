"""How long after an acknowledged Upsert a reader replica serves it, as the collection grows.

A writer and a reader server (tiny backbone, 256-d; one process, two gRPC servers on localhost)
on one data dir with the default intervals (publish_interval_s 1.0, follow_interval_s 0.5). The
collection is first filled to each size; then --writes Upserts of 64 vectors, each at a random
moment, and for each the time from its acknowledgement until a reader's search finds it. A
publication rewrites the collection, so the lag grows with its size (README: Replicas).

    .venv/bin/python bench/replica_lag.py [--sizes 1000,100000] [--writes 20]
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import TINY  # noqa: E402

from embedsvc.client import Client  # noqa: E402
from embedsvc.service.config import ServeConfig  # noqa: E402
from embedsvc.service.grpc_server import Server  # noqa: E402

DIM, BATCH = 256, 64


def measure(size: int, writes: int, rng) -> tuple[list[float], float]:
    data = tempfile.mkdtemp(prefix="replica-lag-")
    # the reader only follows what is published, so its own flat_below does not matter
    writer = Server(ServeConfig(port=0, data_dir=data, default_backbone=TINY, role="writer",
                                max_images_per_request=4096)).start()
    reader = Server(ServeConfig(port=0, data_dir=data, default_backbone=TINY,
                                role="reader")).start()
    try:
        with Client(f"127.0.0.1:{writer.port}") as w, Client(f"127.0.0.1:{reader.port}") as r:
            for lo in range(0, size, 4096):
                n = min(4096, size - lo)
                w.upsert("lag", [{"vector": v} for v in rng.standard_normal((n, DIM))], timeout=120)
            published = time.monotonic()
            while not [s for s in r.info().snapshots if s.count == size]:
                time.sleep(0.05)
            first = time.monotonic() - published
            lags = []
            for _ in tqdm(range(writes), desc=f"{size:,} vectors", unit="write"):
                time.sleep(rng.uniform(0, 1.5))  # writes at any moment of the publish cycle
                x = rng.standard_normal((BATCH, DIM)).astype(np.float32)
                w.upsert("lag", [{"vector": v} for v in x], timeout=60)
                acked = time.monotonic()
                while r.search("lag", vector=x[-1], k=1, timeout=60)[0]["score"] < 0.999:
                    time.sleep(0.01)
                lags.append(time.monotonic() - acked)
            return lags, first
    finally:
        reader.stop(grace=5)
        writer.stop(grace=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,100000")
    ap.add_argument("--writes", type=int, default=20)
    args = ap.parse_args()
    logging.disable(logging.INFO)
    rng = np.random.default_rng(0)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        lags, first = measure(size, args.writes, rng)
        rows.append((size, np.median(lags), np.percentile(lags, 90), max(lags), first))
    print(f"\n{'vectors':>10}  {'lag p50':>8}  {'lag p90':>8}  {'lag max':>8}  first publication "
          f"served after")
    for size, p50, p90, worst, first in rows:
        print(f"{size:>10,}  {p50:>7.2f}s  {p90:>7.2f}s  {worst:>7.2f}s  {first:.2f} s")


if __name__ == "__main__":
    main()
