"""What one oversized request costs the server, measured against a real server process: a DELETE
of 8,000,000 copies of one id (16 MB of JSON; once 89.6 s for {"deleted": 0}), an 8 MB upsert of
1,000,000 tiny items (once 15.1 s and +1.29 GB before its 400), and the same DELETE over gRPC;
each with the seconds to its answer, the server's peak RSS growth, and the slowest /healthz
answered meanwhile. A second server with max_items_per_request and max_message_bytes raised
lets the 8M-id DELETE through, to show its cost is in the unique ids.

    .venv/bin/python bench/request_cost.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx


def peak_since_reset(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))


def reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


class Served:
    def __init__(self, data: Path, extra: str = ""):
        toml = data / "serve.toml"
        toml.write_text(extra)
        self.proc = subprocess.Popen([sys.executable, "-m", "embedsvc", "serve", "--port", "0",
                                      "--http-port", "0", "--backbone", "tiny-random",
                                      "--data-dir", str(data / "d"), "--config", str(toml)],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        self.grpc = line.split(" on ")[1].split()[0]
        self.http = f"http://127.0.0.1:{line.rsplit('page on :', 1)[1].split(')')[0]}"

    def measure(self, what: str, send) -> None:
        slowest, stop = [0.0], threading.Event()

        def probe():
            while not stop.is_set():
                t0 = time.perf_counter()
                httpx.get(f"{self.http}/healthz", timeout=30)
                slowest[0] = max(slowest[0], time.perf_counter() - t0)
                time.sleep(0.05)

        reset_peak(self.proc.pid)
        before = peak_since_reset(self.proc.pid)
        t = threading.Thread(target=probe)
        t.start()
        t0 = time.perf_counter()
        answer = send()
        seconds = time.perf_counter() - t0
        stop.set()
        t.join()
        grew = peak_since_reset(self.proc.pid) - before
        print(f"  {what:<46} {seconds:7.2f} s  RSS +{grew >> 20:4d} MiB  healthz max "
              f"{1000 * slowest[0]:6.1f} ms  -> {answer}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 20, 200)).save(out, "PNG")
    return out.getvalue()


def main() -> int:
    from embedsvc.client import Client

    ids = b'{"ids": [' + b",".join([b"7"] * 8_000_000) + b"]}"
    items = b'{"items": [' + b",".join([b'{"x":1}'] * 1_000_000) + b"]}"
    json = {"Content-Type": "application/json"}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("default limits", ""),
                            ("max_items_per_request = 10000000, max_message_bytes = 64 MiB",
                             "max_items_per_request = 10000000\nmax_message_bytes = 67108864\n")):
            os.makedirs(Path(tmp) / name, exist_ok=True)
            s = Served(Path(tmp) / name, extra)
            try:
                with Client(s.grpc) as c:
                    dim = c.info(timeout=60).batching.max_batch_size and len(c.embed(
                        [_png()], timeout=60)[0][0])
                    c.upsert("bench", [{"id": 7, "vector": [1.0] * dim}], timeout=60)
                print(f"{name}:")

                def http(method, path, body):
                    def send():
                        r = httpx.request(method, f"{s.http}{path}", content=body, headers=json,
                                          timeout=600)
                        return f"{r.status_code} {r.text[:70]}"
                    return send

                s.measure(f"DELETE 8M copies of one id ({len(ids) >> 20} MB)",
                          http("DELETE", "/v1/indexes/bench/items", ids))
                s.measure(f"upsert of 1M items ({len(items) >> 20} MB)",
                          http("POST", "/v1/indexes/bench/upsert", items))

                def grpc_delete():
                    try:
                        with Client(s.grpc) as c:
                            r = c.delete("bench", [7] * 8_000_000, timeout=600)
                            return f"deleted {r.deleted}"
                    except Exception as exc:  # noqa: BLE001 - the answer is what is measured
                        return f"{exc.code().name} {exc.details()[:60]}"

                s.measure("gRPC Delete of 8M copies of one id", grpc_delete)
            finally:
                s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
