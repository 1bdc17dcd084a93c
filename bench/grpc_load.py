"""Load on a local embedsvc server: N concurrent clients, each sending single-image Embed
requests back to back, for a fixed time. Prints served images/s, p50 / p99 latency, the mean
batch size the dynamic batcher formed, and the ratio of served images/s to the in-process
batched rate of the same model (what the service costs on top of the model).

    .venv/bin/python bench/grpc_load.py [--clients 16] [--seconds 20] [--max-batch-size 16]
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def in_process_rates(data: bytes, batch: int, seconds: float) -> tuple[float, float]:
    """(model only on decoded batches, decode + model) images/s in this process."""
    import torch

    from embedsvc.backbones import create_backbone
    from embedsvc.extract import ExtractConfig, FeatureExtractor
    from embedsvc.images import load_image

    fe = FeatureExtractor(create_backbone("effnet-lite0"), ExtractConfig(batch_size=batch))
    x = torch.stack([fe.transform(load_image(data))] * batch)
    fe.embed_tensor(x)
    rates = []
    for step in (lambda: fe.embed_tensor(x), lambda: fe.embed([data] * batch)):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            step()
            n += batch
        rates.append(n / (time.perf_counter() - t0))
    return rates[0], rates[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--max-queue-delay-ms", type=float, default=10.0)
    args = ap.parse_args()

    import io

    import skimage.data
    from PIL import Image

    from embedsvc.client import Client

    buf = io.BytesIO()
    Image.fromarray(skimage.data.rocket()).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    with tempfile.TemporaryDirectory() as data_dir:
        # the server runs in its own process, as in production: the load generator's threads
        # must not share its interpreter lock
        toml = Path(data_dir) / "serve.toml"
        toml.write_text(f"decode_workers = {max(8, args.clients)}\n[batching]\n"
                        f"max_batch_size = {args.max_batch_size}\n"
                        f"max_queue_delay_ms = {args.max_queue_delay_ms}\n")
        server = subprocess.Popen([sys.executable, "-m", "embedsvc", "serve", "--port", "0",
                                   "--data-dir", data_dir, "--config", str(toml)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            target = server.stdout.readline().split(" on ")[1].split()[0]
            with Client(target) as warm:
                for _ in range(3):
                    warm.embed([data], timeout=60)
                before = warm.info(timeout=30).batching
            latencies: list[list[float]] = [[] for _ in range(args.clients)]
            stop = time.perf_counter() + args.seconds

            def client(i: int) -> None:
                with Client(target) as c:
                    while time.perf_counter() < stop:
                        t0 = time.perf_counter()
                        c.embed([data], ids=[f"{i}"], timeout=60)
                        latencies[i].append(time.perf_counter() - t0)

            threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            with Client(target) as c:
                after = c.info(timeout=30).batching
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)

    lat = np.array([x for per in latencies for x in per]) * 1000
    served = len(lat) / wall
    batches = after.batches - before.batches
    mean_batch = (after.images - before.images) / max(1, batches)
    model_rate, pipeline_rate = in_process_rates(data, args.max_batch_size, min(10.0, args.seconds))
    print(f"{args.clients} concurrent clients, 1 image per Embed request, {args.seconds:.0f} s, "
          f"max_batch_size={args.max_batch_size}, max_queue_delay_ms={args.max_queue_delay_ms:g}")
    print(f"  served              : {served:7.1f} img/s ({len(lat)} requests)")
    print(f"  latency p50 / p99   : {np.percentile(lat, 50):7.1f} / {np.percentile(lat, 99):.1f} ms")
    print(f"  mean batch size     : {mean_batch:7.2f} (largest {after.largest_batch})")
    print(f"  in-process, batch {args.max_batch_size}: {model_rate:7.1f} img/s model only, "
          f"{pipeline_rate:.1f} img/s with JPEG decoding")
    print(f"served / in-process model only    = {served / model_rate:.2f}")
    print(f"served / in-process with decoding = {served / pipeline_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
