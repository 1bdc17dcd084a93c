"""A writer and a reader replica on one data dir, each a server process of its own (tiny backbone):
the reader serves what the writer published within 5 s of its publication, refuses writes,
reports the snapshot it serves in GetInfo and in its metrics; a reader restarted while the writer
is half-way through publishing serves the old snapshot whole, then the new one whole."""
from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from conftest import TINY
from embedsvc.client import Client
from served import ServerProcess

DIM = 256  # the tiny backbone's
BATCH = 4000
WRITER = """role = "writer"
publish_interval_s = 0.5
max_images_per_request = 4096
[collections]
flat_below = 1000000
"""
READER = 'role = "reader"\nfollow_interval_s = 0.2\nmetrics_port = 0\n'
INDEX = "kv"


def batch(b: int, n: int = BATCH) -> np.ndarray:
    """Batch b: ids b*BATCH .. b*BATCH+n-1, metadata {"batch": b}, vectors from seed b."""
    x = np.random.default_rng(b).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def upsert(c: Client, b: int, n: int = BATCH) -> None:
    c.upsert(INDEX, [{"id": b * BATCH + j, "vector": v, "metadata": {"batch": str(b)}}
                     for j, v in enumerate(batch(b, n))], timeout=60)


def snapshot(c: Client) -> dict:
    s = [s for s in c.info(timeout=30).snapshots if s.index == INDEX]
    return {"name": s[0].snapshot, "seq": s[0].seq, "applied": s[0].applied_seq,
            "count": s[0].count} if s else {"seq": -1}


def serves_exactly(c: Client, sizes: list[int]) -> bool:
    """Does the reader serve batches 0..len(sizes)-1 (batch b = write b+1) and nothing else?
    The count, the first and last vector of each batch, and the first of the next one."""
    s = snapshot(c)
    if s["seq"] != len(sizes) or s["count"] != sum(sizes):
        return False
    for b, n in enumerate(sizes + [1]):
        for j in {0, n - 1}:
            top = c.search(INDEX, vector=batch(b, n)[j], k=1, timeout=30)[0]
            if (top["id"] == b * BATCH + j and top["score"] > 0.999) != (b < len(sizes)):
                return False
            if b < len(sizes) and top["metadata"] != {"batch": str(b)}:
                return False
    return snapshot(c)["name"] == s["name"]  # one snapshot answered all of the above


def wait_for(check, timeout: float, what: str, pause: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(pause)
    return found


@pytest.fixture()
def servers(tmp_path):
    data = tmp_path / "data"
    started = [ServerProcess(data, tmp_path, WRITER), ServerProcess(data, tmp_path, READER)]
    yield data, tmp_path, started
    for srv in started:
        if srv.proc.is_alive():
            srv.send(signal.SIGCONT)
            srv.kill()


def test_a_reader_replica_serves_the_writers_snapshots_whole(servers):
    data, tmp, (writer, reader) = servers
    folder = data / "indexes" / INDEX
    sizes: list[int] = []
    with Client(writer.target) as w, Client(reader.target) as r:
        # an acknowledged Upsert: published within publish_interval_s, served within 5 s of that
        upsert(w, 0)
        sizes.append(BATCH)
        assert snapshot(w)["applied"] == 1
        wait_for(lambda: snapshot(w)["seq"] == 1, 30, "the writer never published write 1")
        published = time.monotonic()
        wait_for(lambda: serves_exactly(r, sizes), 5, "not served within 5 s of publication")
        assert time.monotonic() - published < 5
        info = r.info(timeout=30)
        assert info.role == "reader" and info.snapshots[0].snapshot == snapshot(w)["name"]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{reader.metrics_port}/metrics",
                                         timeout=30).read().decode()
        assert f'embedsvc_snapshot_seq{{index="{INDEX}"}} 1.0' in metrics
        for write in (lambda: r.upsert(INDEX, [{"vector": batch(9, 1)[0]}], timeout=30),
                      lambda: r.delete(INDEX, [0], timeout=30)):
            with pytest.raises(grpc.RpcError) as refused:
                write()
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "read-only replica" in refused.value.details()
        for b in range(1, 6):  # 24k vectors: a snapshot takes a while to write
            upsert(w, b)
            sizes.append(BATCH)
        wait_for(lambda: snapshot(w)["seq"] == len(sizes), 30, "not published")

        # the writer stopped half-way through publishing: a snapshot folder is being written
        for attempt in range(20):
            old = snapshot(w)
            upsert(w, len(sizes), 10)
            sizes.append(10)
            writing = wait_for(lambda: list(folder.glob(".snap-*")), 30, "no publication began",
                               pause=0.0005)
            writer.send(signal.SIGSTOP)
            if [p for p in writing if p.exists()] and \
                    (folder / "MANIFEST.json").read_text().count(old["name"]):
                break
            writer.send(signal.SIGCONT)  # it finished before it stopped: again
            wait_for(lambda: snapshot(w)["seq"] == len(sizes), 30, "not published")
        else:
            pytest.fail("never caught the writer while it published")
    reader.kill()
    reader = ServerProcess(data, tmp, READER)
    servers[2].append(reader)
    with Client(reader.target) as r:
        assert serves_exactly(r, sizes[:-1])  # the old snapshot, whole
        writer.send(signal.SIGCONT)
        wait_for(lambda: str(old["name"]) not in (folder / "MANIFEST.json").read_text(), 30,
                 "the writer never finished publishing")
        published = time.monotonic()
        wait_for(lambda: serves_exactly(r, sizes), 5, "the new snapshot not served within 5 s")
        assert time.monotonic() - published < 5
    writer.stop()
    reader.stop()
    assert not writer.errors() and not reader.errors(), writer.errors() + reader.errors()


def test_a_served_snapshot_outlives_its_folder(tmp_path):
    """A reader keeps serving the snapshot it opened after the writer removed the folder."""
    import shutil

    from embedsvc.collection import Collection, CollectionSettings, SnapshotReader
    from embedsvc.collection.snapshot import read_manifest

    c = Collection.create(tmp_path / "c", {"dim": 8, "backbone": "test"}, CollectionSettings())
    x = np.eye(8, dtype=np.float32)
    c.upsert(x, list(range(8)), [{"n": str(i)} for i in range(8)])
    c.publisher.publish()
    folder = Path(tmp_path / "c" / read_manifest(tmp_path / "c")["snapshot"])
    served = SnapshotReader(folder)
    c.close()
    shutil.rmtree(folder)
    assert served.count == 8 and served.published.seq == 1
    assert served.search(x[5], 1)[0][:1] == (5,) and served.search(x[5], 1)[0][2] == {"n": "5"}


def test_a_second_writer_of_a_data_dir_is_refused_and_a_reader_is_not(tmp_path):
    from embedsvc.errors import StoreLockedError
    from embedsvc.service.config import ServeConfig
    from embedsvc.service.core import EmbeddingCore

    def core(role: str) -> EmbeddingCore:
        return EmbeddingCore(ServeConfig(data_dir=str(tmp_path), default_backbone=TINY, role=role))

    writer = core("writer")
    try:
        for role in ("single", "writer"):
            with pytest.raises(StoreLockedError, match="--role reader"):
                core(role)
        core("reader").close()
    finally:
        writer.close()
    core("single").close()  # closing the writer let go of the data dir
