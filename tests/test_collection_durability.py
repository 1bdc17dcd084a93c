"""A served collection under SIGKILL and a full disk: every acknowledged write is in effect after a
restart, no acknowledged delete comes back, a refused write leaves no trace, no temp file stays.

A real server process (tiny backbone) with small collection thresholds, so the kills land in
every phase: log appends, publications (every few writes), merges of their small segments,
exact -> HNSW rebuilds, background indexing. After each kill the published snapshot, what a
reader would serve, is whole (every file's size and sha256) and readable.
"""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from served import ServerProcess
from embedsvc.client import Client
from embedsvc.collection.snapshot import MANIFEST, read_manifest
from embedsvc.collection.snapshot_read import SnapshotReader, verify_snapshot

pytestmark = pytest.mark.slow
DIM = 256  # the tiny backbone's
CONFIG = """
[collections]
flat_below = 100
compact_log_bytes = 8192
index_batch = 32
"""


def temp_files(data: Path) -> set[Path]:
    return {p for p in (data / "indexes").rglob(".*")} if (data / "indexes").is_dir() else set()


def count(c: Client, name: str) -> int:
    return {i.name: i.count for i in c.indexes(timeout=30)}.get(name, 0)


def holds(c: Client, name: str, model: dict, written: dict) -> bool:
    """Does the served collection hold exactly ``model`` (id -> (vector, metadata))? Every
    id ever written and not in the model must not be found by its last vector."""
    if count(c, name) != len(model):
        return False
    for i, vec in written.items():
        top = c.search(name, vector=vec if i not in model else model[i][0], k=1, timeout=30)[0]
        if i in model and (top["id"] != i or top["metadata"] != model[i][1]):
            return False
        if i not in model and top["id"] == i and top["score"] > 0.999:
            return False
    return True


def test_sigkill_twenty_times_during_upserts_and_deletes(tmp_path):
    """Two servers on their own data dirs, killed 10 times each, side by side (the restarts,
    mostly importing torch, take most of the time)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(kill_and_restart, tmp_path / f"server{n}", 10, n) for n in range(2)]
        for run in runs:
            run.result()


def kill_and_restart(tmp_path: Path, rounds: int, seed: int) -> None:
    tmp_path.mkdir()
    rng = np.random.default_rng(seed)
    data = tmp_path / "data"
    model: dict[int, tuple] = {}  # what the acknowledged writes say the collection holds
    written: dict[int, np.ndarray] = {}  # every id ever sent, with its last vector
    op, stale, candidates = 0, set(), []
    for round_ in range(rounds):
        restarted = time.time()  # a temp file older than the new process is a leftover
        srv = ServerProcess(data, tmp_path, CONFIG)
        if round_:
            leftovers = {p for p in stale if p.exists() and p.stat().st_mtime < restarted}
            assert not leftovers, leftovers
            with Client(srv.target) as c:
                model = next((m for m in candidates if holds(c, "kv", m, written)), None)
            assert model is not None, f"round {round_}: the restarted server holds neither " \
                                      f"the state before nor the one after the write in flight"
        threading.Timer(rng.uniform(0.2, 0.8), srv.send, (signal.SIGKILL,)).start()
        pending = None
        with Client(srv.target) as c:
            while True:
                op += 1
                if rng.random() < 0.7 or not model:
                    ids = [int(i) for i in rng.choice(150, int(rng.integers(1, 9)), replace=False)]
                    x = rng.standard_normal((len(ids), DIM)).astype(np.float32)
                    x /= np.linalg.norm(x, axis=1, keepdims=True)
                    meta = {"op": str(op)}
                    after = {**model, **{i: (v, meta) for i, v in zip(ids, x)}}
                    written.update(zip(ids, x))
                    call = (lambda: c.upsert("kv", [{"id": i, "vector": v, "metadata": meta}
                                                    for i, v in zip(ids, x)], timeout=30))
                else:
                    ids = [int(i) for i in rng.choice(list(model), min(len(model), 3), replace=False)]
                    after = {i: m for i, m in model.items() if i not in ids}
                    call = lambda: c.delete("kv", ids + [999], timeout=30)  # noqa: E731
                pending = after
                try:
                    call()
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, (exc, "".join(srv.lines()[-40:]))
                    break
                model, pending = after, None
        assert srv.wait(30) == -signal.SIGKILL
        assert not srv.errors(), srv.errors()
        published = data / "indexes" / "kv"
        if (published / MANIFEST).is_file():  # a reader would serve exactly this, whole
            verify_snapshot(published)
            SnapshotReader(published / read_manifest(published)["snapshot"])
        candidates = [model] + ([pending] if pending is not None else [])
        stale = temp_files(data)
    srv = ServerProcess(data, tmp_path, CONFIG)
    with Client(srv.target) as c:
        assert any(holds(c, "kv", m, written) for m in candidates)
    srv.stop()
    assert not temp_files(data) and not srv.errors(), srv.errors()


def test_a_full_disk_refuses_the_write_and_changes_nothing(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: the server ignores SIGXFSZ, the write fails with
    EFBIG, the client gets RESOURCE_EXHAUSTED, and memory and disk are as before the write."""
    rng = np.random.default_rng(1)
    data = tmp_path / "data"

    def batch(n):
        x = rng.standard_normal((n, DIM)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    srv = ServerProcess(data, tmp_path, CONFIG, fsize_limit=48 << 10)
    kept: dict[int, np.ndarray] = {}
    with Client(srv.target) as c:
        first = batch(64)  # 64 KiB of vectors: more than one file may hold
        with pytest.raises(grpc.RpcError) as exc:
            c.upsert("fresh", [{"vector": v} for v in first], timeout=30)
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "full" in exc.value.details()
        assert c.indexes(timeout=30) == [] and not (data / "indexes" / "fresh").exists()
        for _ in range(20):
            x = batch(8)
            try:
                r = c.upsert("kv", [{"vector": v, "metadata": {"n": "1"}} for v in x], timeout=30)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                refused = x
                break
            kept.update(zip(r.ids, x))
        else:
            pytest.fail("the file size limit was never reached")
        assert count(c, "kv") == len(kept)
        assert c.search("kv", vector=refused[0], k=1, timeout=30)[0]["score"] < 0.99
        assert srv.proc.is_alive()  # SIGXFSZ did not kill it
    srv.kill()
    srv = ServerProcess(data, tmp_path, CONFIG)  # the disk has room again
    with Client(srv.target) as c:
        assert count(c, "kv") == len(kept)
        for i, v in kept.items():
            assert c.search("kv", vector=v, k=1, timeout=30)[0]["id"] == i
        assert c.search("kv", vector=refused[0], k=1, timeout=30)[0]["score"] < 0.99
        r = c.upsert("kv", [{"vector": v} for v in refused], timeout=30)
        assert list(r.ids) == list(range(len(kept), len(kept) + len(refused)))  # no id was used up
    srv.stop()
