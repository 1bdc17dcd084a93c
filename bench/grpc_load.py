"""Load on a local embedsvc server: N concurrent clients, each sending single-image Embed
requests back to back, for a fixed time. Prints served images/s, p50 / p99 latency, how busy
the server and the load generator kept the CPU, the mean batch size the dynamic batcher formed,
and the served rate against the in-process batched rate of the same model.

The in-process rate that the service is held to is the same work in one process, batched:
JPEG bytes → decode → preprocess → effnet-lite0, max_batch_size images per call (the service
cannot skip decoding, its requests are bytes). The model-only rate on already decoded batches is
printed beside it. Both are measured half before and half after the load.

    .venv/bin/python bench/grpc_load.py [--clients 16] [--seconds 20] [--max-batch-size 16]
        [--runtime torch|onnx|openvino|onnx-int8|openvino-int8]
        [--server-env NAME=VALUE ...]   (e.g. OMP_WAIT_POLICY=PASSIVE, EMBEDSVC_MALLOC_TUNING=0)
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


class InProcess:
    """The same model in this process, fed whole batches: the rate the service is held to."""

    def __init__(self, data: bytes, batch: int, runtime: str):
        import torch

        from embedsvc.backbones import create_backbone
        from embedsvc.extract import ExtractConfig, FeatureExtractor
        from embedsvc.images import load_image

        self.fe = FeatureExtractor(create_backbone("effnet-lite0"),
                                   ExtractConfig(batch_size=batch, runtime=runtime))
        self.data, self.batch = data, batch
        self.x = torch.stack([self.fe.transform(load_image(data))] * batch)
        self.fe.embed_tensor(self.x)
        self.counts = {"model": [0, 0.0], "pipeline": [0, 0.0]}

    def measure(self, seconds: float) -> None:
        """Add `seconds` of each: model only on decoded batches, and bytes → decode → model."""
        steps = {"model": lambda: self.fe.embed_tensor(self.x),
                 "pipeline": lambda: self.fe.embed([self.data] * self.batch)}
        for name, step in steps.items():
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                step()
                n += self.batch
            self.counts[name][0] += n
            self.counts[name][1] += time.perf_counter() - t0

    def rate(self, name: str) -> float:
        n, seconds = self.counts[name]
        return n / seconds


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (Linux)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ensure_calibrated(runtime: str) -> None:
    from embedsvc.backbones import create_backbone
    from embedsvc.datasets import scan_source
    from embedsvc.datasets.fetch import fetch_dataset
    from embedsvc.errors import InvalidInputError
    from embedsvc.runtimes.calibrate import calibrate
    from embedsvc.runtimes.gate import check_gate

    backbone = create_backbone("effnet-lite0")
    try:
        check_gate(backbone, "pre_logits", runtime)
    except InvalidInputError:
        with tempfile.TemporaryDirectory() as d:
            fetch_dataset("photos", d, limit=128)
            calibrate(backbone, [r.path for r in scan_source(d)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--max-queue-delay-ms", type=float, default=10.0)
    ap.add_argument("--server-env", nargs="*", default=[], metavar="NAME=VALUE")
    ap.add_argument("--runtime", default="torch",
                    help="the server's and the in-process runtime (an int8 one is calibrated on "
                         "the sample photos first when it has no calibration)")
    args = ap.parse_args()
    if args.runtime.endswith("-int8"):
        ensure_calibrated(args.runtime)

    import io

    import skimage.data
    from PIL import Image

    from embedsvc.client import Client

    buf = io.BytesIO()
    Image.fromarray(skimage.data.rocket()).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    # the in-process rates are measured half before and half after the load, so a drift of the
    # machine's speed during the run affects both sides of the ratio alike
    in_process = InProcess(data, args.max_batch_size, args.runtime)
    in_process.measure(min(5.0, args.seconds / 4))
    with tempfile.TemporaryDirectory() as data_dir:
        # the server runs in its own process, as in production: the load generator's threads
        # must not share its interpreter lock
        toml = Path(data_dir) / "serve.toml"
        toml.write_text(f"decode_workers = {max(8, args.clients)}\nruntime = \"{args.runtime}\"\n"
                        f"[batching]\n"
                        f"max_batch_size = {args.max_batch_size}\n"
                        f"max_queue_delay_ms = {args.max_queue_delay_ms}\n")
        server = subprocess.Popen([sys.executable, "-m", "embedsvc", "serve", "--port", "0",
                                   "--data-dir", data_dir, "--config", str(toml)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  env={**os.environ, **dict(e.split("=", 1) for e in args.server_env)})
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
            cpu0, scpu0 = time.process_time(), _cpu_seconds(server.pid)
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            client_cpu, server_cpu = time.process_time() - cpu0, _cpu_seconds(server.pid) - scpu0
            with Client(target) as c:
                after = c.info(timeout=30).batching
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)

    lat = np.array([x for per in latencies for x in per]) * 1000
    served = len(lat) / wall
    batches = after.batches - before.batches
    mean_batch = (after.images - before.images) / max(1, batches)
    in_process.measure(min(5.0, args.seconds / 4))
    model_rate, pipeline_rate = in_process.rate("model"), in_process.rate("pipeline")
    print(f"runtime {args.runtime}; {args.clients} concurrent clients, 1 image per Embed request, "
          f"{args.seconds:.0f} s, "
          f"max_batch_size={args.max_batch_size}, max_queue_delay_ms={args.max_queue_delay_ms:g}")
    print(f"  served              : {served:7.1f} img/s ({len(lat)} requests)")
    print(f"  latency p50 / p99   : {np.percentile(lat, 50):7.1f} / {np.percentile(lat, 99):.1f} ms")
    print(f"  CPU cores busy      : server {server_cpu / wall:.2f}, load generator {client_cpu / wall:.2f}")
    print(f"  mean batch size     : {mean_batch:7.2f} (largest {after.largest_batch})")
    print(f"  in-process, batch {args.max_batch_size}: {model_rate:7.1f} img/s model only, "
          f"{pipeline_rate:.1f} img/s with JPEG decoding")
    print(f"served / in-process model only    = {served / model_rate:.2f}")
    print(f"served / in-process with decoding = {served / pipeline_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
