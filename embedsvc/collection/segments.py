"""The immutable files a collection's snapshots are made of, and reading rows across them.

A snapshot (``snapshot.py``) lists, each with its size and sha256:

    seg-<epoch>-<lo>-<hi>-<tag>.vectors.npy / .ids.npy / .metadata.jsonl
                    rows [lo, hi) of the epoch: written once, when sealed, never changed
    dead-<epoch>-<seq>-<tag>.npy
                    rows (int64) of the epoch that writes up to ``seq`` ended (deleted or
                    overwritten) and that no earlier dead file of the snapshot lists
    ann-<epoch>-<indexed>-<tag>.faiss
                    the approximate index over rows [0, indexed)

An epoch is one numbering of the rows: a rebuild drops ended rows and numbers the live ones
again, so it starts a new epoch and its rows are written as new segments. A publication
writes only the rows sealed since the previous one and the rows ended since; the files that
did not change are hard links to the previous snapshot's (same file system), never copies.
Once no snapshot folder links a file, the file system frees it.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import IncompatibleError

SEGMENT_PARTS = ("vectors.npy", "ids.npy", "metadata.jsonl")
HASH_CHUNK = 1 << 20


def tag() -> str:
    return secrets.token_hex(4)


class _Hashing:
    """A binary file being written, hashed as it goes (no second read of what was written)."""

    def __init__(self, f):
        self.f, self.h, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.h.update(view)
        self.size += len(view)
        return self.f.write(view)

    def entry(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.h.hexdigest()}


def write_file(path: Path, write) -> dict[str, Any]:
    """``write(f)`` into a new file at ``path``, fsynced; its size and sha256."""
    with open(path, "xb") as raw:
        f = _Hashing(raw)
        write(f)
        raw.flush()
        os.fsync(raw.fileno())
    return f.entry()


def write_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    return write_file(path, lambda f: np.lib.format.write_array(f, np.ascontiguousarray(array),
                                                                allow_pickle=False))


def file_entry(path: Path) -> dict[str, Any]:
    """Size and sha256 of a file already written (an index FAISS wrote by path)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}


@dataclass(frozen=True)
class Segment:
    lo: int
    hi: int
    stem: str  # seg-<epoch>-<lo>-<hi>-<tag>
    files: dict  # part -> {"size", "sha256"}

    def path(self, folder: Path, part: str) -> Path:
        return folder / f"{self.stem}.{part}"

    def record(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "stem": self.stem, "files": self.files}

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> "Segment":
        return cls(int(r["lo"]), int(r["hi"]), str(r["stem"]), dict(r["files"]))


def write_segment(folder: Path, epoch: int, lo: int, vectors: np.ndarray, ids: np.ndarray,
                  metadata: Sequence[dict], alive: np.ndarray) -> Segment:
    """Rows [lo, lo + len(ids)) as a sealed segment; a row already ended keeps no metadata."""
    hi = lo + len(ids)
    seg = Segment(lo, hi, f"seg-{epoch}-{lo}-{hi}-{tag()}", {})
    lines = ((json.dumps(m, separators=(",", ":")) if a else "{}").encode() + b"\n"
             for m, a in zip(metadata, alive.tolist()))
    files = {"vectors.npy": write_npy(seg.path(folder, "vectors.npy"), vectors),
             "ids.npy": write_npy(seg.path(folder, "ids.npy"), ids),
             "metadata.jsonl": write_file(seg.path(folder, "metadata.jsonl"),
                                          lambda f: [f.write(line) for line in lines])}
    return Segment(lo, hi, seg.stem, files)


class SegmentedVectors:
    """Row vectors held as several arrays (memory-mapped segments) read as one: the exact
    scans and gathers a search needs, without concatenating them."""

    def __init__(self, parts: Sequence[np.ndarray], dim: int):
        self.parts = [p for p in parts if len(p)]
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.starts[-1]), dim)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def scores(self, lo: int, hi: int, q: np.ndarray) -> np.ndarray:
        """``vectors[lo:hi] @ q`` segment by segment."""
        out = np.empty(max(0, hi - lo), np.float32)
        for p, start in zip(self.parts, self.starts):
            a, b = max(lo, start), min(hi, start + len(p))
            if a < b:
                out[a - lo:b - lo] = p[a - start:b - start] @ q
        return out

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if rows.ndim == 0:
            return self[rows[None]][0]
        out = np.empty((len(rows), self.shape[1]), np.float32)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        for s in np.unique(which).tolist():
            mask = which == s
            out[mask] = self.parts[s][rows[mask] - self.starts[s]]
        return out


def row_scores(vectors, lo: int, hi: int, q: np.ndarray) -> np.ndarray:
    """``vectors[lo:hi] @ q`` for one array or a ``SegmentedVectors``."""
    if isinstance(vectors, SegmentedVectors):
        return vectors.scores(lo, hi, q)
    return vectors[lo:hi] @ q


def check_files(folder: Path, entries: dict[str, dict], verified: dict | None = None) -> None:
    """Every listed file is there with its size, and (where ``verified`` does not already
    know its inode) its sha256: a copy cut short or altered is refused, naming the file."""
    for name, want in entries.items():
        path = folder / name
        try:
            st = path.stat()
        except FileNotFoundError:
            raise IncompatibleError(f"{folder.name}: {name} is missing") from None
        if st.st_size != want["size"]:
            raise IncompatibleError(f"{folder.name}: {name} has {st.st_size} bytes, "
                                    f"{want['size']} expected (an incomplete copy?)")
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if verified is not None and verified.get(key) == want["sha256"]:
            continue
        got = file_entry(path)["sha256"]
        if got != want["sha256"]:
            raise IncompatibleError(f"{folder.name}: {name} does not match its sha256 (altered "
                                    f"or damaged)")
        if verified is not None:
            verified[key] = got


MAX_SEGMENTS = 8  # a snapshot with more gets a run of them merged
MAX_DEAD_FILES = 8


def merge_run(segments: Sequence[Segment]) -> list[Segment]:
    """Consecutive segments to merge into one, or none: once there are more than
    ``MAX_SEGMENTS``, the longest run at the end no larger in all than the segment before it
    (at least the last two). Sizes then grow geometrically from the end, as in a log-structured
    merge, so a row is written again O(log rows) times."""
    if len(segments) <= MAX_SEGMENTS:
        return []
    rows = [s.hi - s.lo for s in segments]
    best = len(segments) - 2
    for j in range(len(segments) - 2, 0, -1):
        if sum(rows[j:]) <= rows[j - 1]:
            best = j
    return list(segments[best:])
