"""Reading a snapshot folder (``snapshot.py`` writes them): by the writer when it opens the
collection (rows into memory, ready for appends) and by any other process, read-only
(``SnapshotReader``: vectors memory-mapped).

Every file is opened before anything is read, snapshot.json first (written last, so a folder
that has it is whole): the writer may remove the folder meanwhile. A format-2 snapshot lists
each file's size and sha256; a file missing, of another size or another checksum (an
incomplete or damaged copy) refuses the whole snapshot, naming it. A reader that follows a
collection keeps a ``SegmentCache``: segments are immutable and their names unique, so each is
checked, mapped and parsed once, however many snapshots list it.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import IncompatibleError, NotFoundError
from ..provenance import PROVENANCE, parse_artifact
from .rows import NEVER, View
from .segments import Segment, SegmentedVectors, check_files
from .snapshot import (INFOS_JSON, MANIFEST, OLD_INFOS_JSON, SNAPSHOT_JSON, IndexFile, Layout,
                       Published, collection_projection, read_manifest)


class Loaded(NamedTuple):
    view: View
    next_id: int
    binding: dict[str, Any]
    saved_at: float  # unix seconds (0 for snapshots written before it was recorded)
    layout: Layout | None  # None: format 1


@dataclass
class SegmentCache:
    """What a reader already checked and read of a collection's immutable files."""
    segments: dict = field(default_factory=dict)  # stem -> (vectors, ids, metadata)
    dead: dict = field(default_factory=dict)  # name -> rows
    index: tuple | None = None  # (file name, the index read from it): read again only when new
    verified: dict = field(default_factory=dict)  # (dev, inode, size, mtime) -> sha256


def read_snapshot(path: str | os.PathLike, mmap: bool = False,
                  cache: SegmentCache | None = None) -> Loaded:
    """A snapshot folder's rows, next id, binding, time and files. ``mmap`` maps the vectors
    read-only (for a reader in another process); otherwise they are read into memory."""
    d = Path(path)
    try:
        with open(d / SNAPSHOT_JSON, "rb") as f:
            meta = parse_artifact(f.read(), f"snapshot {d.name!r}")
    except FileNotFoundError:
        raise NotFoundError(f"{d.name!r} is not a collection snapshot (or was just "
                            f"replaced)") from None
    if meta.get("format") == 2:
        try:
            return _read_v2(d, meta, mmap, cache if cache is not None else SegmentCache())
        except FileNotFoundError:
            raise NotFoundError(f"snapshot {d.name!r} was replaced while it was read") from None
    if meta.get("format") != 1:
        raise IncompatibleError(f"snapshot {d.name!r} has format {meta.get('format')!r}; this "
                                f"embedsvc reads formats 1 and 2")
    try:
        files = {name: open(d / name, "rb") for name in _v1_files(d)}
    except FileNotFoundError:
        raise NotFoundError(f"{d.name!r} is not a collection snapshot (or was just "
                            f"replaced)") from None
    try:
        return _read_v1(d.name, meta, files, mmap)
    finally:
        for f in files.values():
            f.close()


def verify_snapshot(path: str | os.PathLike) -> dict[str, Any]:
    """Check a copy: every file the snapshot lists (a collection folder: the one its manifest
    names) is there with its size and sha256, read in full. Raises naming the first problem;
    returns what was checked."""
    d = Path(path)
    if (d / MANIFEST).is_file():
        manifest = read_manifest(d)
        d = d / manifest["snapshot"]
        if not d.is_dir():
            raise NotFoundError(f"{MANIFEST} names {d.name}, which is missing")
    try:
        meta = parse_artifact((d / SNAPSHOT_JSON).read_bytes(), f"snapshot {d.name!r}")
    except FileNotFoundError:
        raise NotFoundError(f"{str(d)!r} is neither a collection nor a snapshot folder (no "
                            f"{SNAPSHOT_JSON})") from None
    if meta.get("format") != 2:
        raise IncompatibleError(f"snapshot {d.name!r} has format {meta.get('format')!r}, which "
                                f"lists no checksums; the writer's next publication writes "
                                f"format 2")
    layout = layout_of(meta)
    files = layout.files()
    check_files(d, {**files, INFOS_JSON: meta["infos_file"]})
    return {"snapshot": d.name, "seq": layout.seq, "rows": layout.rows, "files": len(files) + 2,
            "bytes": sum(e["size"] for e in files.values())}


def layout_of(meta: dict[str, Any]) -> Layout:
    index = meta.get("index")
    return Layout(int(meta["epoch"]), int(meta["rows"]), int(meta["seq"]),
                  tuple(Segment.from_record(r) for r in meta["segments"]), tuple(meta["dead"]),
                  IndexFile(index["name"], {"size": index["size"], "sha256": index["sha256"]},
                            int(index["indexed"]), int(meta["epoch"])) if index else None)


def _read_v2(d: Path, meta: dict, mmap: bool, cache: SegmentCache) -> Loaded:
    from .ann import read_index

    layout = layout_of(meta)
    check_files(d, {**layout.files(), INFOS_JSON: meta["infos_file"]}, cache.verified)
    with open(d / INFOS_JSON, "rb") as f:
        infos = parse_artifact(f.read(), f"snapshot {d.name!r}'s index infos")
    binding = infos.pop(PROVENANCE, None) or {}
    parts = [_segment(d, s, mmap, cache) for s in layout.segments]
    dim = int(binding.get("dim") or 0)
    if mmap:
        vectors = SegmentedVectors([p[0] for p in parts], dim)
    else:
        vectors = (np.concatenate([p[0] for p in parts]) if parts
                   else np.zeros((0, dim), np.float32))
    ids = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    metadata = [m for p in parts for m in p[2]]
    seq, n = layout.seq, layout.rows
    if not len(vectors) == len(ids) == len(metadata) == n:
        raise IncompatibleError(f"snapshot {d.name!r} is inconsistent: {n} rows named, "
                                f"{len(vectors)}/{len(ids)}/{len(metadata)} stored")
    ended = np.full(n, NEVER, np.int64)
    for entry in layout.dead:
        rows = cache.dead.get(entry["name"])
        if rows is None:
            rows = cache.dead[entry["name"]] = np.load(d / entry["name"])
        ended[rows] = seq
    ann = None
    if layout.index is not None:
        if mmap and cache.index is not None and cache.index[0] == layout.index.name:
            ann = cache.index[1]  # searches only read it: shared with the snapshot before
        else:
            with open(d / layout.index.name, "rb") as f:
                ann = read_index(f, infos["kind"])
        if mmap:
            cache.index = (layout.index.name, ann)
    view = View(n, seq, vectors, ids, ended, metadata, ann,
                layout.index.indexed if ann is not None else 0, infos, layout.epoch)
    if mmap:  # what the next snapshot no longer lists is not kept for it
        listed = {s.stem for s in layout.segments}
        cache.segments = {k: v for k, v in cache.segments.items() if k in listed}
        cache.dead = {k: v for k, v in cache.dead.items() if k in {e["name"] for e in layout.dead}}
    return Loaded(view, int(meta["next_id"]), binding, float(meta["saved_at"]), layout)


def _segment(d: Path, seg: Segment, mmap: bool, cache: SegmentCache):
    if mmap and seg.stem in cache.segments:
        return cache.segments[seg.stem]
    with open(seg.path(d, "vectors.npy"), "rb") as f:
        vectors = _mapped(f) if mmap else np.load(f)
    ids = np.load(seg.path(d, "ids.npy"))
    with open(seg.path(d, "metadata.jsonl"), "rb") as f:
        metadata = [json.loads(line) for line in f]
    if not len(vectors) == len(ids) == len(metadata) == seg.hi - seg.lo:
        raise IncompatibleError(f"{d.name}: segment {seg.stem} holds {len(vectors)}/{len(ids)}/"
                                f"{len(metadata)} rows, {seg.hi - seg.lo} named")
    if mmap:
        cache.segments[seg.stem] = (vectors, ids, metadata)
    return vectors, ids, metadata


def _v1_files(d: Path) -> list[str]:
    """The files of a format-1 snapshot; once all are open, removing the folder changes
    nothing that is read."""
    infos = INFOS_JSON if (d / INFOS_JSON).is_file() or not (d / OLD_INFOS_JSON).is_file() \
        else OLD_INFOS_JSON
    names = [infos, "vectors.npy", "ids.npy", "alive.npy", "metadata.jsonl"]
    return names + ["index.faiss"] if (d / "index.faiss").is_file() else names


def _read_v1(name: str, meta: dict, files: dict, mmap: bool) -> Loaded:
    from .ann import read_index

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
    return Loaded(view, int(meta["next_id"]), binding, float(meta.get("saved_at", 0.0)), None)


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


class SnapshotReader:
    """A snapshot folder opened read-only, e.g. by another process serving replicas: vectors
    are memory-mapped, nothing is written. ``SnapshotReader(path).search(vector, k)``;
    ``cache``: the one of the snapshot served before (``SegmentCache``)."""

    def __init__(self, path: str | os.PathLike, cache: SegmentCache | None = None):
        self.cache = cache if cache is not None else SegmentCache()
        self.view, _, self.binding, saved_at, layout = read_snapshot(path, True, self.cache)
        self.published = Published(Path(path).name, self.view.seq, saved_at, layout)
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
