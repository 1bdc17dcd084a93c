"""A collection on disk: snapshots, the log after them, and the manifest that ties them.

    NAME/MANIFEST.json          {"snapshot": "snap-…", "seq": S}: written last, atomically
    NAME/snap-<S>-<tag>/        every write up to S (the tag makes each name new: a folder,
                                once in place, never changes):
        seg-… dead-… ann-…              the immutable files of ``segments.py``: the rows in
                                        segments, the rows ended since, the approximate index
        ann_infos.json                  kind, factory, tuned parameter, measured recall, the
                                        provenance of the vectors
        snapshot.json                   format 2: seq, rows, next id, time, epoch, and every
                                        other file with its size and sha256: written last
    NAME/pending/               files maintenance wrote for the next publication (a rebuild's
                                segments, an index), linked into it and then removed
    NAME/leases/                which snapshot each reader replica serves (``leases.py``): kept
                                until the lease expires
    NAME/wal-<first seq>.log    writes after the snapshot (see index/wal.py)
    NAME/projection.npz         a projected collection's projection (``projection.py``): what
                                images and texts are projected with before they are stored
                                or searched

A publication writes only what changed since the previous snapshot (the rows sealed since, the
rows ended since, a new index if maintenance wrote one) and hard-links the rest, so its cost
follows the writes, not the collection. A snapshot folder is written under a temporary name
and renamed when whole; the manifest is replaced only after that, and older snapshots and logs
are removed only after the manifest. A crash at any point leaves the previous manifest naming
a complete snapshot and the logs it needs. Snapshots of format 1 (one folder holding
vectors.npy, ids.npy, alive.npy, metadata.jsonl, index.faiss) are still read; the writer's next
publication writes format 2. Other processes read snapshots with ``snapshot_read.py``.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import fsync_dir
from ..errors import NotFoundError
from ..provenance import read_artifact, write_artifact
from .rows import View
from .segments import Segment, file_entry, tag, write_npy, write_segment

MANIFEST = "MANIFEST.json"
SNAPSHOT_JSON = "snapshot.json"
INFOS_JSON = "ann_infos.json"
OLD_INFOS_JSON = "index_infos.json"  # the same file, as snapshots named it before
PENDING = "pending"
FORMAT = 2


def wal_path(root: Path, first_seq: int) -> Path:
    return root / f"wal-{first_seq:020d}.log"


def wal_files(root: Path) -> list[tuple[int, Path]]:
    return sorted((int(p.stem[4:]), p) for p in root.glob("wal-*.log") if p.stem[4:].isdigit())


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The collection's manifest, or None where there is none (not a collection, or not yet)."""
    try:
        return read_artifact(root / MANIFEST, "collection")
    except NotFoundError:
        return None


def write_manifest(root: Path, snapshot: str, seq: int) -> None:
    write_artifact(root / MANIFEST, {"format": FORMAT, "snapshot": snapshot, "seq": seq}, indent=None)


@dataclass(frozen=True)
class IndexFile:
    """An approximate index written to a file: over rows [0, indexed) of ``epoch``."""
    name: str  # ann-<epoch>-<indexed>-<tag>.faiss
    entry: dict  # size, sha256
    indexed: int
    epoch: int

    def record(self) -> dict[str, Any]:
        return {"name": self.name, **self.entry, "indexed": self.indexed}


@dataclass(frozen=True)
class Layout:
    """The files of a format-2 snapshot: what the next publication links instead of writing."""
    epoch: int
    rows: int  # the segments hold rows [0, rows)
    seq: int
    segments: tuple = ()  # Segment, in row order
    dead: tuple = ()  # {"name", "size", "sha256", "count"}
    index: IndexFile | None = None

    def files(self) -> dict[str, dict]:
        """name -> {size, sha256} of every file it lists."""
        return listed_files(self.segments, self.dead, self.index)


def listed_files(segments=(), dead=(), index: IndexFile | None = None) -> dict[str, dict]:
    """name -> {size, sha256} of segments, dead files and an index file."""
    out = {s.stem + "." + part: e for s in segments for part, e in s.files.items()}
    out.update({d["name"]: {"size": d["size"], "sha256": d["sha256"]} for d in dead})
    if index is not None:
        out[index.name] = index.entry
    return out


@dataclass(frozen=True)
class Published:
    """The snapshot a collection last published (a writer) or serves (a reader replica)."""
    name: str  # its folder
    seq: int  # it holds writes 1..seq
    saved_at: float  # unix seconds
    layout: Layout | None = field(default=None, compare=False)  # None: format 1
    written_bytes: int = 0  # what its publication wrote (the rest is links)

    def describe(self, index: str, applied_seq: int, count: int) -> dict[str, Any]:
        """As GetInfo.snapshots and the snapshot metrics report it."""
        return {"index": index, "snapshot": self.name, "seq": self.seq,
                "published_at": self.saved_at, "applied_seq": applied_seq, "count": count}


@dataclass(frozen=True)
class Base:
    """Rows a rebuild wrote as segments of its new epoch (in ``pending/``), with its index."""
    epoch: int
    rows: int
    segments: tuple
    index: IndexFile | None


@dataclass(frozen=True)
class Merge:
    """Files maintenance wrote (in ``pending/``) to replace several of a snapshot's: one
    segment for a run of consecutive small ones, one dead file for many."""
    epoch: int
    segment: Segment | None = None
    replaces: frozenset = frozenset()  # the stems of the segments it replaces
    dead: dict | None = None
    dead_replaces: frozenset = frozenset()  # the names of the dead files it replaces

    def files(self) -> dict[str, dict]:
        return listed_files((self.segment,) if self.segment else (), (self.dead,) if self.dead else ())

    def applies_to(self, layout: Layout) -> bool:
        stems, dead = {s.stem for s in layout.segments}, {d["name"] for d in layout.dead}
        return layout.epoch == self.epoch and self.replaces <= stems and self.dead_replaces <= dead

    def applied(self, layout: Layout) -> Layout:
        segments = [s for s in layout.segments if s.stem not in self.replaces]
        dead = [d for d in layout.dead if d["name"] not in self.dead_replaces]
        segments += [self.segment] if self.segment is not None else []
        dead = ([self.dead] if self.dead is not None else []) + dead
        return Layout(layout.epoch, layout.rows, layout.seq,
                      tuple(sorted(segments, key=lambda s: s.lo)), tuple(dead), layout.index)


def write_snapshot(root: Path, view: View, next_id: int, binding: dict[str, Any],
                   previous: Published | None = None, base: Base | None = None,
                   index: IndexFile | None = None, merge: Merge | None = None) -> Published:
    """Publishable folder of ``view`` (rows [0, n) as of write ``seq``), linking what
    ``previous`` (same epoch) or ``base`` (a rebuild's rows of this epoch) already wrote; the
    manifest publishes it (``write_manifest``). ``index``: the newest index file of the
    epoch, in ``previous``'s folder or in ``pending/``; ``merge``: files that replace some of
    ``previous``'s (in ``pending/``)."""
    name = f"snap-{view.seq:020d}-{tag()}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        prev = previous.layout if previous is not None else None
        written = 0
        if prev is not None and prev.epoch == view.epoch:
            kept = prev.files()
            index = index if index is not None else prev.index
            if merge is not None and merge.applies_to(prev):
                prev = merge.applied(prev)
            if prev.index is not None and index is not None and prev.index != index:
                prev = dataclasses.replace(prev, index=None)  # a newer index replaces it
            for file in prev.files():
                os.link((root / previous.name if file in kept else root / PENDING) / file,
                        tmp / file)
            segments, dead, covered, prev_seq = list(prev.segments), list(prev.dead), prev.rows, prev.seq
        elif base is not None and base.epoch == view.epoch:
            for file in listed_files(base.segments):
                os.link(root / PENDING / file, tmp / file)
            segments, dead, covered, prev_seq = list(base.segments), [], base.rows, -1
        else:  # a new collection, or the first publication after format 1: every row
            segments, dead, covered, prev_seq = [], [], 0, -1
        n = view.n
        if n > covered:
            seg = write_segment(tmp, view.epoch, covered, view.vectors[covered:n],
                                view.ids[covered:n], view.metadata[covered:n], view.alive(covered))
            segments.append(seg)
            written += sum(e["size"] for e in seg.files.values())
        ended = view.ended[:n]
        newly = np.flatnonzero((ended > prev_seq) & (ended <= view.seq)).astype(np.int64)
        if len(newly):
            dead_name = f"dead-{view.epoch}-{view.seq}-{tag()}.npy"
            entry = write_npy(tmp / dead_name, newly)
            dead.append({"name": dead_name, **entry, "count": len(newly)})
            written += entry["size"]
        if index is not None and index.epoch == view.epoch and index.indexed <= n:
            if not (tmp / index.name).exists():  # not linked with the previous snapshot's files
                os.link(root / PENDING / index.name, tmp / index.name)
        else:
            index = None
        layout = Layout(view.epoch, n, view.seq, tuple(segments), tuple(dead), index)
        saved_at = time.time()
        stamp = {"format": FORMAT, "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(saved_at))}
        count = int(view.alive().sum())
        write_artifact(tmp / INFOS_JSON, {**(view.infos or {}), "count": count, **stamp}, binding)
        write_artifact(tmp / SNAPSHOT_JSON, {
            **stamp, "saved_at": saved_at, "seq": view.seq, "rows": n, "next_id": next_id,
            "epoch": view.epoch, "indexed": index.indexed if index is not None else 0,
            "segments": [s.record() for s in segments], "dead": dead,
            "index": index.record() if index is not None else None,
            "infos_file": {"name": INFOS_JSON, **file_entry(tmp / INFOS_JSON)}},
            indent=None)
        fsync_dir(tmp)
        os.replace(tmp, root / name)
        fsync_dir(root)
        written += (root / name / INFOS_JSON).stat().st_size + (root / name / SNAPSHOT_JSON).stat().st_size
        return Published(name, view.seq, saved_at, layout, written)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_pending_segments(root: Path, view: View) -> tuple:
    """A rebuild's rows (``view``, a new epoch) as segments in ``pending/``, before the rebuild
    is swapped in: the first publication after it links them instead of writing them."""
    folder = root / PENDING
    folder.mkdir(exist_ok=True)
    seg = write_segment(folder, view.epoch, 0, view.vectors[:view.n], view.ids[:view.n],
                        view.metadata[:view.n], view.alive())
    fsync_dir(folder)
    return (seg,)


def write_pending_index(root: Path, ann, epoch: int, indexed: int) -> IndexFile:
    """The approximate index (over rows [0, indexed) of ``epoch``) as a file in ``pending/``."""
    from .ann import write_index
    from .segments import file_entry

    folder = root / PENDING
    folder.mkdir(exist_ok=True)
    name = f"ann-{epoch}-{indexed}-{tag()}.faiss"
    write_index(ann, folder / name)
    with open(folder / name, "rb") as f:
        os.fsync(f.fileno())
    fsync_dir(folder)
    return IndexFile(name, file_entry(folder / name), indexed, epoch)


def unlink_pending(root: Path, linked) -> None:
    """Files of ``pending/`` that a published snapshot links (``linked``: its file names):
    they live on in it."""
    folder = root / PENDING
    if folder.is_dir():
        for p in list(folder.iterdir()):
            if p.name in linked:
                p.unlink()


def clear_pending(root: Path) -> None:
    """What a crash left in ``pending/``: written for a publication that never came."""
    shutil.rmtree(root / PENDING, ignore_errors=True)


def snapshot_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def remove_stale(root: Path, keep: str) -> None:
    """Temporary files and folders (a crash mid-write), and snapshots that neither the manifest
    (``keep``) nor an unexpired reader lease (``leases.py``) names. Files a removed snapshot
    shares with a kept one live on through their other link."""
    from .leases import leased_snapshots

    kept = {keep} | leased_snapshots(root)
    for p in root.iterdir():
        stale = p.name.startswith(".") or (p.name.startswith("snap-") and p.name not in kept)
        if stale:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    fsync_dir(root)


def collection_projection(root: Path, binding: dict[str, Any]):
    """The projection a projected collection's vectors were made with (``projection.npz`` in
    its folder, from the store it was imported from), or None."""
    if not binding.get("projection"):
        return None
    from ..projection import load_projection

    return load_projection(root, binding["projection"])
