"""A collection on disk: snapshots, the log after them, and the manifest that ties them.

    NAME/MANIFEST.json          {"snapshot": "snap-…", "seq": S}: written last, atomically
    NAME/snap-<S>-<tag>/        a self-contained snapshot of every write up to S (the tag makes
                                each name new: a folder, once in place, never changes):
        vectors.npy ids.npy alive.npy   the rows (row r of each)
        metadata.jsonl                  one JSON object per row
        index.faiss                     the approximate index over rows [0, indexed), if any
        ann_infos.json                  kind, factory, tuned parameter, measured recall, the
                                        provenance of the vectors (index_infos.json until
                                        text encoders came: still read)
        snapshot.json                   seq, rows, indexed, next id, time: written last
    NAME/wal-<first seq>.log    writes after the snapshot (see index/wal.py)
    NAME/projection.npz         a projected collection's projection (``projection.py``): what
                                images and texts are projected with before they are stored
                                or searched

A snapshot folder is written under a temporary name and renamed when whole; the manifest is
replaced only after that, and older snapshots and logs are removed only after the manifest.
A crash at any point leaves the previous manifest naming a complete snapshot and the logs it
needs. Any other process may open a snapshot folder read-only (``SnapshotReader``): it opens
every file of the folder first, so the writer may remove the folder while it is being read.
Reader replicas serve such snapshots (``embedsvc/service/replicas.py``).
"""
from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from ..atomic import fsync_dir, fsync_file
from ..errors import IncompatibleError, NotFoundError
from ..provenance import PROVENANCE, parse_artifact, read_artifact, write_artifact
from .rows import NEVER, View

MANIFEST = "MANIFEST.json"
SNAPSHOT_JSON = "snapshot.json"
INFOS_JSON = "ann_infos.json"
OLD_INFOS_JSON = "index_infos.json"  # the same file, as snapshots named it before
FORMAT = 1


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


def write_snapshot(root: Path, view: View, next_id: int, binding: dict[str, Any],
                   write_index: Callable[[Path], None] | None) -> Published:
    """Write ``view`` (rows [0, n) as of write ``seq``) as a snapshot folder; the manifest
    publishes it (``write_manifest``).
    ``write_index(path)`` writes the approximate index, if there is one."""
    name = f"snap-{view.seq:020d}-{secrets.token_hex(4)}"
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
        saved_at = time.time()
        stamp = {"format": FORMAT, "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(saved_at))}
        write_artifact(tmp / INFOS_JSON, {**(view.infos or {}), "count": int(alive.sum()), **stamp},
                       binding)
        write_artifact(tmp / SNAPSHOT_JSON, {
            **stamp, "saved_at": saved_at, "seq": view.seq, "rows": n,
            "indexed": view.indexed if view.ann is not None else 0, "next_id": next_id}, indent=None)
        os.replace(tmp, root / name)
        fsync_dir(root)
        return Published(name, view.seq, saved_at)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class Loaded(NamedTuple):
    view: View
    next_id: int
    binding: dict[str, Any]
    saved_at: float  # unix seconds (0 for snapshots written before it was recorded)


def read_snapshot(path: str | os.PathLike, mmap: bool = False) -> Loaded:
    """A snapshot folder's rows, next id, binding and time. ``mmap`` maps the vectors read-only (for
    a reader in another process); otherwise they are read into memory, ready for appends."""
    d = Path(path)
    try:
        files = {name: open(d / name, "rb") for name in _opened_first(d)}
    except FileNotFoundError:
        raise NotFoundError(f"{d.name!r} is not a collection snapshot (or was just "
                            f"replaced)") from None
    try:
        return _read_opened(d.name, files, mmap)
    finally:
        for f in files.values():
            f.close()


def _opened_first(d: Path) -> list[str]:
    """The files of a snapshot, snapshot.json first: it is written last, so a folder that has it
    is whole; once all are open, removing the folder changes nothing that is read."""
    infos = INFOS_JSON if (d / INFOS_JSON).is_file() or not (d / OLD_INFOS_JSON).is_file() \
        else OLD_INFOS_JSON
    names = [SNAPSHOT_JSON, infos, "vectors.npy", "ids.npy", "alive.npy", "metadata.jsonl"]
    return names + ["index.faiss"] if (d / "index.faiss").is_file() else names


def _read_opened(name: str, files: dict, mmap: bool) -> Loaded:
    from .ann import read_index

    meta = parse_artifact(files[SNAPSHOT_JSON].read(), f"snapshot {name!r}", FORMAT)
    infos = parse_artifact(files.get(INFOS_JSON, files.get(OLD_INFOS_JSON)).read(),
                           f"snapshot {name!r}'s index infos")
    seq, n = int(meta["seq"]), int(meta["rows"])
    vectors = _mapped(files["vectors.npy"]) if mmap else np.load(files["vectors.npy"])
    ids = np.load(files["ids.npy"])
    alive = np.load(files["alive.npy"])
    if not len(vectors) == len(ids) == len(alive) == n:
        raise IncompatibleError(f"snapshot {name!r} is inconsistent: {n} rows named, "
                                f"{len(vectors)}/{len(ids)}/{len(alive)} stored")
    metadata = [json.loads(line) for line in files["metadata.jsonl"]]
    ann = None
    if meta["indexed"]:
        if "index.faiss" not in files:
            raise IncompatibleError(f"snapshot {name!r} names an index but has no index.faiss")
        ann = read_index(files["index.faiss"], infos["kind"])
    binding = infos.pop(PROVENANCE, None) or {}
    ended = np.where(alive, NEVER, seq).astype(np.int64)
    view = View(n, seq, vectors, ids, ended, metadata, ann, int(meta["indexed"]), infos)
    return Loaded(view, int(meta["next_id"]), binding, float(meta.get("saved_at", 0.0)))


def _mapped(f) -> np.ndarray:
    """An .npy file already open, memory-mapped read-only (np.load maps only by path)."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, fortran, dtype = header(f)
    if not np.prod(shape):
        return np.zeros(shape, dtype)  # an empty file cannot be mapped
    return np.memmap(f, dtype=dtype, mode="r", offset=f.tell(), shape=shape,
                     order="F" if fortran else "C")


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


def collection_projection(root: Path, binding: dict[str, Any]):
    """The projection a projected collection's vectors were made with (``projection.npz`` in
    its folder, from the store it was imported from), or None."""
    if not binding.get("projection"):
        return None
    from ..projection import load_projection

    return load_projection(root, binding["projection"])


@dataclass(frozen=True)
class Published:
    """The snapshot a collection last published (a writer) or serves (a reader replica)."""
    name: str  # its folder
    seq: int  # it holds writes 1..seq
    saved_at: float  # unix seconds

    def describe(self, index: str, applied_seq: int, count: int) -> dict[str, Any]:
        """As GetInfo.snapshots and the snapshot metrics report it."""
        return {"index": index, "snapshot": self.name, "seq": self.seq,
                "published_at": self.saved_at, "applied_seq": applied_seq, "count": count}


class SnapshotReader:
    """A snapshot folder opened read-only, e.g. by another process serving replicas: vectors
    are memory-mapped, nothing is written. ``SnapshotReader(path).search(vector, k)``."""

    def __init__(self, path: str | os.PathLike):
        self.view, _, self.binding, saved_at = read_snapshot(path, mmap=True)
        self.published = Published(Path(path).name, self.view.seq, saved_at)
        self.count = int(self.view.alive().sum())  # the folder never changes
        self.root = Path(path).parent  # the collection's folder

    @functools.cached_property
    def projection(self):
        return collection_projection(self.root, self.binding)

    @property
    def kind(self) -> str:
        return self.view.infos["kind"]

    def search(self, query, k: int = 10, where: dict[str, str] | None = None):
        from .rows import unit_vectors
        from .search import ann_candidates, exact_top

        q = unit_vectors(query, int(self.binding["dim"]))
        return exact_top(self.view, q, k, where, ann_candidates(self.view, q, k, where))
