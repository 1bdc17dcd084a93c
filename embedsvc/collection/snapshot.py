"""A collection on disk: snapshots, the log after them, and the manifest that ties them.

    NAME/MANIFEST.json          {"snapshot": "snap-…", "seq": S}: written last, atomically
    NAME/snap-<S>/              a self-contained snapshot of every write up to S:
        vectors.npy ids.npy alive.npy   the rows (row r of each)
        metadata.jsonl                  one JSON object per row
        index.faiss                     the approximate index over rows [0, indexed), if any
        index_infos.json                kind, factory, tuned parameter, measured recall, binding
        snapshot.json                   seq, rows, indexed, next id: written last in the folder
    NAME/wal-<first seq>.log    writes after the snapshot (see index/wal.py)

A snapshot folder is written under a temporary name and renamed when whole; the manifest is
replaced only after that, and older snapshots and logs are removed only after the manifest.
A crash at any point leaves the previous manifest naming a complete snapshot and the logs it
needs. Any other process may open a snapshot folder read-only (``SnapshotReader``).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..atomic import atomic_write_bytes, fsync_dir, fsync_file
from ..errors import IncompatibleError, NotFoundError
from ..versions import written_by
from .rows import NEVER, View

MANIFEST = "MANIFEST.json"
SNAPSHOT_JSON = "snapshot.json"
INFOS_JSON = "index_infos.json"
FORMAT = 1


def wal_path(root: Path, first_seq: int) -> Path:
    return root / f"wal-{first_seq:020d}.log"


def wal_files(root: Path) -> list[tuple[int, Path]]:
    return sorted((int(p.stem[4:]), p) for p in root.glob("wal-*.log") if p.stem[4:].isdigit())


def read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        return None


def write_manifest(root: Path, snapshot: str, seq: int) -> None:
    atomic_write_bytes(root / MANIFEST, json.dumps(
        {"format": FORMAT, "snapshot": snapshot, "seq": seq, "written_by": written_by()}).encode())


def write_snapshot(root: Path, view: View, next_id: int, binding: dict[str, Any],
                   write_index: Callable[[Path], None] | None) -> str:
    """Write ``view`` (rows [0, n) as of write ``seq``) as a snapshot folder; returns its name.
    ``write_index(path)`` writes the approximate index, if there is one."""
    name = f"snap-{view.seq:020d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        n, alive = view.n, view.alive()
        _durable(tmp / "vectors.npy", lambda f: np.save(f, view.vectors[:n]))
        _durable(tmp / "ids.npy", lambda f: np.save(f, view.ids[:n]))
        _durable(tmp / "alive.npy", lambda f: np.save(f, alive))
        _durable(tmp / "metadata.jsonl", lambda f: f.writelines(
            (json.dumps(m, separators=(",", ":")) if a else "{}").encode() + b"\n"
            for m, a in zip(view.metadata[:n], alive.tolist())))
        if write_index is not None and view.indexed:
            write_index(tmp / "index.faiss")
            fsync_file(tmp / "index.faiss")
        stamp = {"format": FORMAT, "written_by": written_by(),
                 "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        infos = {**(view.infos or {}), "count": int(alive.sum()), "binding": binding, **stamp}
        atomic_write_bytes(tmp / INFOS_JSON, json.dumps(infos, indent=2).encode())
        atomic_write_bytes(tmp / SNAPSHOT_JSON, json.dumps(
            {**stamp, "seq": view.seq, "rows": n, "indexed": view.indexed if view.ann is not None
             else 0, "next_id": next_id}).encode())
        final = root / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        fsync_dir(root)
        return name
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_snapshot(path: str | os.PathLike, mmap: bool = False) -> tuple[View, int, dict[str, Any]]:
    """(view, next id, binding) of a snapshot folder. ``mmap`` maps the vectors read-only (for
    a reader in another process); otherwise they are read into memory, ready for appends."""
    import faiss

    d = Path(path)
    if not (d / SNAPSHOT_JSON).is_file():
        raise NotFoundError(f"{d.name!r} is not a collection snapshot ({SNAPSHOT_JSON} missing)")
    meta = json.loads((d / SNAPSHOT_JSON).read_text())
    if meta.get("format") != FORMAT:
        raise IncompatibleError(f"snapshot {d.name!r} has format {meta.get('format')!r}; this "
                                f"version reads format {FORMAT}")
    infos = json.loads((d / INFOS_JSON).read_text())
    seq, n = int(meta["seq"]), int(meta["rows"])
    vectors = np.load(d / "vectors.npy", mmap_mode="r" if mmap else None)
    ids = np.load(d / "ids.npy")
    alive = np.load(d / "alive.npy")
    if not len(vectors) == len(ids) == len(alive) == n:
        raise IncompatibleError(f"snapshot {d.name!r} is inconsistent: {n} rows named, "
                                f"{len(vectors)}/{len(ids)}/{len(alive)} stored")
    with open(d / "metadata.jsonl", "rb") as f:
        metadata = [json.loads(line) for line in f]
    ann = None
    if meta["indexed"]:
        ann = faiss.read_index(str(d / "index.faiss"))
    binding = infos.pop("binding")
    ended = np.where(alive, NEVER, seq).astype(np.int64)
    view = View(n, seq, vectors, ids, ended, metadata, ann, int(meta["indexed"]), infos)
    return view, int(meta["next_id"]), binding


def snapshot_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def remove_stale(root: Path, keep: str | None) -> None:
    """Temporary files and folders (a crash mid-write), and snapshots the manifest does not name."""
    for p in root.iterdir():
        stale = p.name.startswith(".") or (p.name.startswith("snap-") and p.name != keep)
        if stale:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    fsync_dir(root)


def _durable(path: Path, write: Callable) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


class SnapshotReader:
    """A snapshot folder opened read-only, e.g. by another process serving replicas: vectors
    are memory-mapped, nothing is written. ``SnapshotReader(path).search(vector, k)``."""

    def __init__(self, path: str | os.PathLike):
        self.view, _, self.binding = read_snapshot(path, mmap=True)

    @property
    def count(self) -> int:
        return int(self.view.alive().sum())

    def search(self, query, k: int = 10, where: dict[str, str] | None = None):
        from .rows import unit_vectors
        from .search import ann_candidates, exact_top

        q = unit_vectors(query, int(self.binding["dim"]))
        return exact_top(self.view, q, k, where, ann_candidates(self.view, q, k, where))
