"""gRPC and HTTP served side by side by one server: what the HTTP path adds per image.

One `embedsvc serve --http-port` process (effnet-lite0, its own process as in production).
Clients (threads of this process) send single-image requests back to back, a JPEG photo
each: gRPC `Embed` (grpcio), or HTTP (http.client, keep-alive)
`POST /v1/embeddings` in OpenAI's shape (a typed base64 image input, `encoding_format` base64 as OpenAI
clients ask, or float).

1. Side by side: 16 HTTP + 16 gRPC clients at once. Every request must succeed; per transport,
   the mean and p50 / p99 latency under the same queue.
2. The same load on each path alone: 32 clients of one transport, phases in the order gRPC,
   HTTP, HTTP, gRPC (a drift of the machine's speed falls on both alike). Per image: wall time
   (1 / rate) and the server's CPU time (from /proc).
Prints the ratios HTTP / gRPC; the target is at most 1.15 per image.

    .venv/bin/python bench/http_vs_grpc.py [--seconds 15] [--encoding base64|float]
"""
from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpc_load import _cpu_seconds  # noqa: E402 - the benches share their /proc reader


def photo() -> bytes:
    import skimage.data
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(skimage.data.rocket()).save(out, format="JPEG", quality=90)
    return out.getvalue()


class Load:
    """Client threads of both transports; every request's latency, and every failure."""

    def __init__(self, grpc_target: str, http_base: str, data: bytes, encoding: str):
        self.grpc_target, self.http_base, self.data = grpc_target, http_base, data
        self.body = {"model": "", "input": [{"image": base64.b64encode(data).decode()}],
                     "encoding_format": encoding}

    def _grpc(self, stop: float, out: list, errors: list) -> None:
        from embedsvc.client import Client

        with Client(self.grpc_target) as c:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    c.embed([self.data], timeout=60)
                    out.append(time.perf_counter() - t0)
                except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                    errors.append(repr(exc))

    def _http(self, stop: float, out: list, errors: list) -> None:
        # the standard library's keep-alive connection: a client about as lean in Python as
        # grpcio's C core, so the load generator's own CPU (the machine's too) is not what
        # the ratio measures
        url = urlsplit(self.http_base)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        body = json.dumps(self.body).encode()
        headers = {"Content-Type": "application/json"}
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                conn.request("POST", "/v1/embeddings", body, headers)
                r = conn.getresponse()
                answer = r.read()
                if r.status == 200 and len(json.loads(answer)["data"]) == 1:
                    out.append(time.perf_counter() - t0)
                else:
                    errors.append(f"{r.status} {answer[:200]!r}")
        finally:
            conn.close()

    def run(self, seconds: float, grpc_clients: int, http_clients: int, server_pid: int):
        stop = time.perf_counter() + seconds
        lat = {"grpc": [], "http": []}
        errors: list[str] = []
        threads = [threading.Thread(target=self._grpc, args=(stop, lat["grpc"], errors))
                   for _ in range(grpc_clients)]
        threads += [threading.Thread(target=self._http, args=(stop, lat["http"], errors))
                    for _ in range(http_clients)]
        cpu0, t0, own0 = _cpu_seconds(server_pid), time.perf_counter(), time.process_time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall, cpu = time.perf_counter() - t0, _cpu_seconds(server_pid) - cpu0
        self.client_cpu = time.process_time() - own0
        return {k: np.array(v) * 1000 for k, v in lat.items()}, errors, wall, cpu


def start_server(data_dir: str) -> tuple[subprocess.Popen, str, str]:
    toml = Path(data_dir) / "serve.toml"
    toml.write_text("decode_workers = 32\n[batching]\nmax_batch_size = 16\n"
                    "max_queue_delay_ms = 10\n")
    server = subprocess.Popen([sys.executable, "-m", "embedsvc", "serve", "--port", "0",
                               "--http-port", "0", "--data-dir", data_dir, "--config", str(toml)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=dict(os.environ))
    line = server.stdout.readline()  # "embedsvc serving on HOST:PORT (... HTTP API and page on :P)"
    target = line.split(" on ")[1].split()[0]
    http_port = line.rsplit(":", 1)[1].rstrip(")\n")
    return server, target, f"http://127.0.0.1:{http_port}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0, help="per phase")
    ap.add_argument("--encoding", choices=("base64", "float"), default="base64")
    args = ap.parse_args()
    data = photo()
    with tempfile.TemporaryDirectory() as data_dir:
        server, target, base = start_server(data_dir)
        try:
            load = Load(target, base, data, args.encoding)
            load.run(3, 4, 4, server.pid)  # warm both paths
            mixed, errors, _, _ = load.run(args.seconds, 16, 16, server.pid)
            alone = {"grpc": [], "http": []}
            for kind in ("grpc", "http", "http", "grpc"):
                n = (32, 0) if kind == "grpc" else (0, 32)
                lat, errs, wall, cpu = load.run(args.seconds / 2, *n, server.pid)
                errors += errs
                alone[kind].append((len(lat[kind]), wall, cpu, load.client_cpu))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)

    print(f"effnet-lite0, 1 JPEG ({len(data)} bytes) per request, HTTP encoding_format "
          f"{args.encoding}, {args.seconds:g} s per phase")
    print(f"side by side, 16 HTTP + 16 gRPC clients: {len(errors)} failed requests")
    for kind in ("grpc", "http"):
        lat = mixed[kind]
        print(f"  {kind:4s}: {len(lat):5d} requests, latency mean {lat.mean():6.1f} ms, "
              f"p50 {np.percentile(lat, 50):6.1f}, p99 {np.percentile(lat, 99):6.1f}")
    print(f"HTTP / gRPC mean latency per image, side by side = "
          f"{mixed['http'].mean() / mixed['grpc'].mean():.3f}")
    per = {}
    for kind, runs in alone.items():
        n = sum(r[0] for r in runs)
        per[kind] = [sum(r[i] for r in runs) / n for i in (1, 2, 3)]
        print(f"alone, 32 {kind} clients: {n / sum(r[1] for r in runs):6.1f} img/s; per image "
              f"{1000 * per[kind][0]:.2f} ms wall, {1000 * per[kind][1]:.2f} ms server CPU, "
              f"{1000 * per[kind][2]:.2f} ms load-generator CPU")
    print(f"HTTP / gRPC wall time per image, same load   = {per['http'][0] / per['grpc'][0]:.3f}")
    print(f"HTTP / gRPC server CPU per image, same load  = {per['http'][1] / per['grpc'][1]:.3f}")
    for e in sorted(set(errors))[:5]:
        print("  error:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
