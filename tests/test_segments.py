"""Collections published as immutable segments: a publication writes what changed, small
segments are merged, a copy cut short is refused, and reader leases pin what readers serve."""
from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from embedsvc.collection.collection import Collection
from embedsvc.collection.segments import MAX_SEGMENTS
from embedsvc.collection.settings import CollectionSettings
from embedsvc.collection.snapshot import MANIFEST, read_manifest
from embedsvc.collection.snapshot_read import SnapshotReader, verify_snapshot
from embedsvc.errors import IncompatibleError
from embedsvc.service.replicas import FollowedCollections

DIM = 64
EXACT = CollectionSettings(flat_below=1_000_000)  # no index: the rows alone


def unit(rng, n):
    x = rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def fill(c: Collection, rng, n: int) -> np.ndarray:
    x = unit(rng, n)
    c.upsert(x, [None] * n, [{"n": str(i)} for i in range(n)])
    return x


def test_a_publication_writes_what_changed_whatever_the_size(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    for size in (2_000, 20_000):
        c = Collection.create(tmp_path / str(size), {"dim": DIM, "backbone": "test"}, EXACT)
        fill(c, rng, size)
        c.publisher.publish()
        fill(c, rng, 100)
        c.delete([3, 5, 8])
        c.publisher.publish()
        written[size] = c.published.written_bytes
        c.close()
    # the 100 rows (vectors, ids, metadata), 3 dead rows and two small JSON files, at both sizes
    assert 100 * DIM * 4 < written[2_000] < 100 * DIM * 4 * 2, written
    assert written[20_000] <= 1.05 * written[2_000], written


def test_small_segments_are_merged_and_every_state_reopens_whole(tmp_path):
    rng = np.random.default_rng(1)
    c = Collection.create(tmp_path / "c", {"dim": DIM, "backbone": "test"}, EXACT)
    model = {}
    for step in range(30):  # 30 publications, each sealing one small segment
        x = unit(rng, 20)
        ids = c.upsert(x, [None] * 20, [{"step": str(step)}] * 20)
        model.update(zip(ids, x))
        gone = [int(i) for i in rng.choice(list(model), 2, replace=False)]
        c.delete(gone)
        for i in gone:
            del model[i]
        c.publisher.publish()
        assert c.wait_idle(60)
    layout = c.published.layout
    assert len(layout.segments) <= MAX_SEGMENTS + 1 and len(layout.dead) <= MAX_SEGMENTS + 1, layout
    assert [s.lo for s in layout.segments][0] == 0 and all(
        a.hi == b.lo for a, b in zip(layout.segments, layout.segments[1:]))
    assert verify_snapshot(tmp_path / "c")["rows"] == 600
    c.close()
    entries = {p.name.split("-")[0] for p in (tmp_path / "c").iterdir()}
    assert entries <= {"MANIFEST.json", "snap", "wal", "pending"}, entries
    assert len(list((tmp_path / "c").glob("snap-*"))) == 1
    for opened in (Collection.open(tmp_path / "c", EXACT),
                   SnapshotReader(tmp_path / "c" / read_manifest(tmp_path / "c")["snapshot"])):
        assert opened.count == len(model)
        for i in list(model)[::25]:
            assert opened.search(model[i], 1)[0][0] == i
        if isinstance(opened, Collection):
            opened.close()


def test_a_copy_cut_short_is_refused_and_the_last_whole_one_is_served(tmp_path, cli):
    rng = np.random.default_rng(2)
    src = tmp_path / "writer" / "c"
    c = Collection.create(src, {"dim": DIM, "backbone": "test"}, EXACT)
    x = fill(c, rng, 500)
    c.publisher.publish()
    shutil.copytree(src.parent, tmp_path / "copy")  # a reader's machine, synced once
    reader = FollowedCollections(tmp_path / "copy", follow_interval_s=3600)
    try:
        first = reader.get("c").published.name
        y = fill(c, rng, 50)
        c.publisher.publish()
        # the next sync is cut short: every file, one of them truncated, then the manifest
        new = c.published.name
        shutil.copytree(src / new, tmp_path / "copy" / "c" / new)
        seg = next(p for p in sorted((tmp_path / "copy" / "c" / new).glob("seg-*vectors.npy"))
                   if "-500-550-" in p.name)
        with open(seg, "r+b") as f:
            f.truncate(seg.stat().st_size - 100)
        shutil.copy(src / MANIFEST, tmp_path / "copy" / "c" / MANIFEST)
        r = cli("snapshot", "verify", tmp_path / "copy" / "c")
        assert r.returncode == 1 and seg.name in r.stderr and len(r.stderr.splitlines()) == 1
        reader.refresh()
        assert reader.get("c").published.name == first and seg.name in reader.unavailable["c"]
        assert reader.get("c").search(x[7], 1)[0][0] == 7
        shutil.copy(src / new / seg.name, seg)  # the sync completes
        assert cli("snapshot", "verify", tmp_path / "copy" / "c").returncode == 0
        reader.refresh()
        assert reader.get("c").published.name == new and reader.get("c").count == 550
        assert reader.get("c").search(y[3], 1)[0][0] == 503
    finally:
        reader.close()
        c.close()


def test_leases_keep_a_readers_snapshot_until_they_expire(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "indexes"
    settings = CollectionSettings(flat_below=1_000_000, rebuild_dead_fraction=0.2)
    c = Collection.create(root / "c", {"dim": DIM, "backbone": "test"}, settings)
    x = fill(c, rng, 400)
    c.publisher.publish()
    reader = FollowedCollections(root, follow_interval_s=3600, lease_s=1.5)  # it never moves on
    served = reader.get("c").published.name
    assert (root / "c" / "leases" / f"{reader.reader_id}.json").is_file()
    c.delete(list(range(200)))  # half the rows: a rebuild numbers the rest again
    assert c.wait_idle(60) and c.published.layout.epoch == 1
    c.publisher.publish()
    # the writer has moved two epochs on; the reader's snapshot is kept whole for it
    assert c.published.name != served and verify_snapshot(root / "c" / served)["rows"] == 400
    time.sleep(1.6)  # the reader stops renewing (as if killed): its lease expires
    fill(c, rng, 5)
    c.publisher.publish()
    assert not (root / "c" / served).exists()
    assert not list((root / "c" / "leases").iterdir())  # the expired lease is removed
    # what the reader has open still reads (its files stay mapped)
    assert reader.get("c").search(x[7], 1)[0][0] == 7
    reader.close()
    c.close()
    with pytest.raises(IncompatibleError, match="format"):
        (root / "c" / "old").mkdir()
        (root / "c" / "old" / "snapshot.json").write_text('{"format": 1}')
        verify_snapshot(root / "c" / "old")
