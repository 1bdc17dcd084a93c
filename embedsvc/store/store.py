"""An embedding store on disk.

    STORE/manifest.json            provenance (backbone, weights sha256, preprocessing, dim, tap,
                                   normalized), dtype, count, the list of committed shards, and
                                   for text how many rows were cut to the encoder's token limit
    STORE/shards/NNNNN.npy         (n, D) float32 or float16 vectors, memory-mappable
    STORE/shards/NNNNN.jsonl       one row per vector: id, path, label, split, domain, sha256,
                                   and width, height (images) or text, truncated (texts)
    STORE/shards/NNNNN.skipped.jsonl   inputs of that shard that were not stored, with the reason
    STORE/errors.jsonl             all skipped inputs of all runs (rewritten after each run)

A write is committed by rewriting ``manifest.json`` atomically after its files are on disk. The
last shard grows in place over several commits until it holds ``shard_size`` inputs
(``shard_files``); the manifest says how many rows and lines of each shard are committed, readers
take only those, and a writer cuts what lies beyond them (a killed run's tail) when it opens the
store. So a store is always the state of one commit, never in between.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..atomic import fsync_dir
from ..provenance import (BINDING_KEYS, check_compatible, normalized_provenance, read_artifact,
                          write_artifact)
from ..errors import IncompatibleError, InvalidInputError, NotFoundError, StoreLockedError
from . import shard_files

FORMAT_VERSION = 1
MANIFEST_JSON = "manifest.json"
DTYPES = ("float32", "float16")
MAX_MAPS = 512


@dataclass(frozen=True)
class ShardInfo:
    name: str
    count: int  # vectors stored
    first_id: int
    inputs: int  # records this shard accounted for (stored + skipped)


class EmbeddingStore:
    def __init__(self, root: Path, manifest: dict[str, Any]):
        self.root = root
        self.manifest = manifest
        self._meta_cache: list[dict] | None = None
        self._maps: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()  # (shard, rows) → map

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike) -> "EmbeddingStore":
        root = Path(path)
        manifest = read_artifact(root / MANIFEST_JSON, "embedding store", FORMAT_VERSION)
        return cls(root, manifest)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, provenance: dict[str, Any],
                       dtype: str = "float32") -> "EmbeddingStore":
        """Open the store at ``path``, refusing it if it was made another way, or create it."""
        root = Path(path)
        if dtype not in DTYPES:
            raise InvalidInputError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if (root / MANIFEST_JSON).is_file():
            store = cls.open(root)
            store._remove_leftovers()
            check_compatible(store.provenance, provenance, f"store {str(root)!r}")
            if store.dtype != dtype:
                raise IncompatibleError(
                    f"store {str(root)!r} holds {store.dtype} vectors; asked to add {dtype}")
            return store
        if root.exists() and any(p.name != ".lock" for p in root.iterdir()):
            raise InvalidInputError(f"{str(root)!r} exists, is not empty and is not a store")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        manifest = {
            "format": FORMAT_VERSION,
            "provenance": normalized_provenance(provenance, f"store {str(root)!r}"),
            "dtype": dtype,
            "count": 0,
            "shards": [],
            "created": now,
            "updated": now,
        }
        (root / "shards").mkdir(parents=True, exist_ok=True)
        store = cls(root, manifest)
        store._write_manifest()
        return store

    # -- properties ---------------------------------------------------------------------------
    @property
    def provenance(self) -> dict[str, Any]:
        return self.manifest["provenance"]

    @property
    def binding(self) -> dict[str, Any]:
        return {k: self.provenance.get(k) for k in BINDING_KEYS}

    def projection(self):
        """The projection its vectors were made with (``embedsvc project``), or None."""
        info = self.provenance.get("projection")
        if not info:
            return None
        from ..projection import load_projection

        return load_projection(self.root, info)

    @property
    def dim(self) -> int:
        return int(self.provenance["dim"])

    @property
    def dtype(self) -> str:
        return self.manifest["dtype"]

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    def __len__(self) -> int:
        return self.count

    @property
    def shards(self) -> list[ShardInfo]:
        return [ShardInfo(**s) for s in self.manifest["shards"]]

    # -- reading ------------------------------------------------------------------------------
    def _shard_path(self, name: str, kind: str) -> Path:
        suffix = {"vectors": ".npy", "meta": ".jsonl", "skipped": ".skipped.jsonl"}[kind]
        return self.root / "shards" / f"{name}{suffix}"

    def iter_vectors(self) -> Iterator[np.ndarray]:
        """Each shard's vectors, memory-mapped (no copy until used)."""
        for s in self.shards:
            yield shard_files.read_vectors(self._shard_path(s.name, "vectors"), s.count)

    def iter_shards(self) -> Iterator[tuple[np.ndarray, list[dict]]]:
        """Each shard's vectors (memory-mapped) and its rows of ``metadata()`` (read once)."""
        meta = self.metadata()
        for s, vectors in zip(self.shards, self.iter_vectors()):
            yield vectors, meta[s.first_id:s.first_id + s.count]

    def take(self, ids) -> np.ndarray:
        """Rows ``ids`` (any order, repeats allowed) as float32, read from the memory-mapped
        shards: only the pages that hold them are touched, so an index can re-rank its
        candidates with the exact vectors without holding the store in memory."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if len(ids) and (ids.min() < 0 or ids.max() >= self.count):
            raise NotFoundError(f"store has rows 0..{self.count - 1}; asked for rows outside")
        shards = self.shards
        which = np.searchsorted([s.first_id for s in shards], ids, side="right") - 1
        out = np.empty((len(ids), self.dim), np.float32)
        for k in np.unique(which):
            at = which == k
            out[at] = self._mapped(shards[k])[ids[at] - shards[k].first_id]
        return out

    def _mapped(self, shard: ShardInfo) -> np.ndarray:
        """Committed rows never change, so a map of them stays valid (a shard that grew is
        mapped again); the most recently used ``MAX_MAPS`` are kept (each map holds a file
        descriptor, and 100M rows are 24k shards)."""
        key = (shard.name, shard.count)
        if key in self._maps:
            self._maps.move_to_end(key)
        else:
            self._maps[key] = shard_files.read_vectors(self._shard_path(shard.name, "vectors"),
                                                       shard.count)
            if len(self._maps) > MAX_MAPS:
                self._maps.popitem(last=False)
        return self._maps[key]

    def vectors(self, dtype=np.float32) -> np.ndarray:
        """All vectors as one (count, dim) array in row-id order."""
        parts = [np.asarray(v, dtype=dtype) for v in self.iter_vectors()]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype)

    def metadata(self) -> list[dict]:
        """Every row's metadata, index = row id."""
        if self._meta_cache is None:
            rows: list[dict] = []
            for s in self.shards:
                rows.extend(json.loads(line)
                            for line in shard_files.read_lines(self._shard_path(s.name, "meta"),
                                                               s.count))
            self._meta_cache = rows
        return self._meta_cache

    def row(self, row_id: int) -> dict:
        if not 0 <= row_id < self.count:
            raise NotFoundError(f"store has rows 0..{self.count - 1}; no row {row_id}")
        return self.metadata()[row_id]

    def vector(self, row_id: int) -> np.ndarray:
        self.row(row_id)  # bounds check with a clear message
        return self.take([row_id])[0]

    def skipped(self) -> list[dict]:
        rows: list[dict] = []
        for s in self.shards:
            rows.extend(json.loads(line) for line in shard_files.read_lines(
                self._shard_path(s.name, "skipped"), s.inputs - s.count))
        return rows

    def done_paths(self) -> set[str]:
        """Inputs this store has already accounted for, stored or skipped."""
        return {r["path"] for r in self.metadata()} | {r["path"] for r in self.skipped()}

    def hashes(self) -> dict[str, int]:
        """sha256 of the file bytes → first row id with that content."""
        out: dict[str, int] = {}
        for r in self.metadata():
            out.setdefault(r["sha256"], r["id"])
        return out

    # -- writing ------------------------------------------------------------------------------
    def append(self, vectors: np.ndarray, rows: list[dict], skipped: list[dict],
               shard_inputs: int | None = None) -> ShardInfo:
        """Store and commit ``rows`` (their ids are assigned here) with their ``vectors``, and
        ``skipped`` inputs. They extend the last shard while it has accounted for fewer than
        ``shard_inputs`` inputs (None: always a new shard), else start a new one."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise IncompatibleError(f"store holds {self.dim}-d vectors, got shape {vectors.shape}")
        if len(rows) != len(vectors):
            raise InvalidInputError(f"{len(vectors)} vectors but {len(rows)} metadata rows")
        shards = self.manifest["shards"]
        extend = bool(shards) and shard_inputs is not None and shards[-1]["inputs"] < shard_inputs
        last = ShardInfo(**shards[-1]) if extend else ShardInfo(f"{len(shards):05d}", 0, self.count, 0)
        for i, row in enumerate(rows):
            row["id"] = self.count + i
        shard_files.append_vectors(self._shard_path(last.name, "vectors"), last.count, vectors,
                                   self.dtype)
        shard_files.append_lines(self._shard_path(last.name, "meta"), last.count, jsonl_bytes(rows))
        shard_files.append_lines(self._shard_path(last.name, "skipped"), last.inputs - last.count,
                                 jsonl_bytes(skipped))
        info = ShardInfo(last.name, last.count + len(rows), last.first_id,
                         last.inputs + len(rows) + len(skipped))
        if extend:
            shards[-1] = info.__dict__
        else:
            fsync_dir(self.root / "shards")  # the new files' names are durable before the commit
            shards.append(info.__dict__)
        self.manifest["count"] = self.count + len(rows)
        cut = sum(r.get("truncated") is True for r in rows)  # texts cut to the encoder's limit
        if cut or "truncated" in self.manifest:
            self.manifest["truncated"] = self.manifest.get("truncated", 0) + cut
        self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._write_manifest()  # the commit point
        if self._meta_cache is not None:
            self._meta_cache.extend(rows)
        return info

    def _remove_leftovers(self) -> None:
        """What a killed writer left beyond the last commit: temp files, and the tails of the
        last shard's files. Call only with the store's lock held."""
        for tmp in (self.root / "shards").glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        if self.shards:
            last = self.shards[-1]
            shard_files.truncate_vectors(self._shard_path(last.name, "vectors"), last.count)
            shard_files.truncate_lines(self._shard_path(last.name, "meta"), last.count)
            shard_files.truncate_lines(self._shard_path(last.name, "skipped"),
                                       last.inputs - last.count)

    def _write_manifest(self) -> None:
        # stamped with written_by of the last write
        self.manifest = write_artifact(self.root / MANIFEST_JSON, self.manifest, self.provenance)


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()


class StoreLock:
    """An exclusive flock: two writers on one store would both append shard N (and two servers
    writing one data dir would both append to a collection's log)."""

    def __init__(self, path: Path, held_by: str | None = None):
        self.path = path
        self.fd: int | None = None
        self.held_by = held_by or f"store {str(path.parent)!r} is being written by another process"

    def acquire(self) -> "StoreLock":
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise StoreLockedError(self.held_by) from None
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
