"""A named, writable vector collection: a write-ahead log in front of rows in memory, an
approximate index over them once they are many, and snapshots on disk (``snapshot.py``).

A write is validated completely, then appended to the log and fsynced, and only then applied
to memory and acknowledged: its cost is the size of the write, whatever the collection holds.
A write the log refuses (a full disk) changes nothing. Searches take no lock against writes:
each reads one ``View``, the state after one write. Indexing new rows, rebuilding the index
and writing snapshots happen in the background (``maintenance.py``).

Ids: each item either names its id (an existing id is overwritten) or leaves it to the
collection, which assigns the next ids never used; ids are in [0, 2**63 - 1] and distinct
within a request. Deleting an absent id is not an error (it counts 0).
"""
from __future__ import annotations

import errno
import functools
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..atomic import fsync_dir
from ..errors import IncompatibleError, InvalidInputError, ResourceExhaustedError
from ..index.wal import DISK_FULL, WriteAheadLog
from . import ann, records
from .maintenance import Maintainer
from .publisher import Publisher
from .metadata import valid_metadata
from .rows import MAX_ID, RowTable, View, unit_vectors, valid_ids
from .search import ann_candidates, exact_top
from .settings import CollectionSettings
from .snapshot import (Published, clear_pending, collection_projection, read_manifest,
                       remove_stale, snapshot_bytes, wal_files, wal_path, write_manifest,
                       write_snapshot)
from .snapshot_read import read_snapshot


class Collection:
    def __init__(self, root: Path, table: RowTable, binding: dict[str, Any], wal: WriteAheadLog,
                 settings: CollectionSettings, log_bytes: int, published: Published,
                 publish_every: float = 0.0):
        self.root, self.table, self.binding, self.settings = root, table, binding, settings
        self.wal = wal
        self.published = published  # what reader replicas of this data dir can serve
        self.publish_every = publish_every  # seconds; 0: publish only when compacting the log
        self.log_bytes = log_bytes
        self.snapshot_bytes = snapshot_bytes(root / published.name)
        self.write_lock = threading.Lock()  # one writer at a time: log order = apply order
        self.index_lock = ann.ReadWriteLock()  # searches vs. adding rows to the approximate index
        # files maintenance wrote for publication: the last index file, a rebuild's rows
        self.files_lock = threading.Lock()
        self.index_file = published.layout.index if published.layout is not None else None
        self.base = None
        self.merge = None
        self.maintainer = Maintainer(self)
        self.publisher = Publisher(self)
        self.maintainer.poke()
        self.publisher.poke()

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, binding: dict[str, Any], settings: CollectionSettings,
               publish_every: float = 0.0, projection=None) -> "Collection":
        """A new, empty collection, staged aside and renamed into place whole (with the
        ``projection`` its vectors are made with, a projected collection's)."""
        staged = root.with_name(f".{root.name}.new")
        try:
            shutil.rmtree(staged, ignore_errors=True)
            staged.mkdir(parents=True)
            table = RowTable.empty(int(binding["dim"]), dict(ann.FLAT_INFOS))
            write_manifest(staged, write_snapshot(staged, table.view, 0, binding, None).name, 0)
            WriteAheadLog.open(wal_path(staged, 1), 1)[0].close()
            if projection is not None:
                projection.save(staged)
            os.replace(staged, root)
            fsync_dir(root.parent)
        except OSError as exc:
            shutil.rmtree(staged, ignore_errors=True)
            raise disk_error(exc, f"cannot create index {root.name!r}") from None
        return cls.open(root, settings, publish_every)

    @classmethod
    def open(cls, root: Path, settings: CollectionSettings,
             publish_every: float = 0.0) -> "Collection":
        """Recover: the snapshot the manifest names, then every logged write after it."""
        manifest = read_manifest(root)
        if manifest is None:
            raise IncompatibleError(f"{root.name!r} is not a collection (no MANIFEST.json)")
        remove_stale(root, manifest["snapshot"])
        clear_pending(root)
        view, next_id, binding, saved_at, layout = read_snapshot(root / manifest["snapshot"])
        table, seq = RowTable(view, next_id), view.seq
        wal, log_bytes = None, 0
        files = wal_files(root)
        for n, (first, path) in enumerate(files):
            log, logged = WriteAheadLog.open(path, first)
            for s, payload in logged:
                if s <= seq:
                    continue  # already in the snapshot
                if s != seq + 1:
                    log.close()
                    raise IncompatibleError(f"index {root.name!r}: writes {seq + 1}..{s - 1} are "
                                            f"missing from its log")
                apply(table, s, records.decode(payload))
                seq = s
            if n == len(files) - 1 and log.next_seq == seq + 1:
                wal = log
            else:
                log.close()
            if log.next_seq - 1 <= view.seq and log is not wal:
                path.unlink()  # wholly inside the snapshot
            else:
                log_bytes += log.size
        if wal is None:
            wal = WriteAheadLog.open(wal_path(root, seq + 1), seq + 1)[0]
        return cls(root, table, binding, wal, settings, log_bytes,
                   Published(manifest["snapshot"], view.seq, saved_at, layout), publish_every)

    # -- writes -------------------------------------------------------------------------------
    def upsert(self, vectors, ids: Sequence[int | None], metadata: Sequence[dict[str, str]],
               names: Sequence[str] | None = None) -> list[int]:
        """Ids used, in order (assigned where ``ids`` has None)."""
        if not len(ids) == len(metadata) == len(vectors):
            raise InvalidInputError(f"{len(vectors)} vectors, {len(ids)} ids, {len(metadata)} "
                                    f"metadata: one each per item")
        valid_ids(ids, distinct=True)
        x = unit_vectors(vectors, int(self.binding["dim"]), names)
        meta = [valid_metadata(m, names[n] if names is not None else f"#{n}")
                for n, m in enumerate(metadata)]
        with self.write_lock:
            start = max([self.table.next_id] + [i + 1 for i in ids if i is not None])
            if start + sum(i is None for i in ids) - 1 > MAX_ID:
                raise ResourceExhaustedError(f"no free ids left above {start - 1}; name ids "
                                             f"explicitly")
            free = iter(range(start, MAX_ID + 1))
            used = np.array([next(free) if i is None else i for i in ids], dtype=np.int64)
            write = records.Upsert(used, x, meta)
            self._log(write)
        self._poke()
        return used.tolist()

    def delete(self, ids: Sequence[int]) -> int:
        """How many of ``ids`` were present (each counted once) and are now gone."""
        wanted = list(dict.fromkeys(int(i) for i in ids))
        with self.write_lock:
            present = self.table.present(wanted)
            if not present:
                return 0
            self._log(records.Delete(np.array(present, dtype=np.int64)))
        self._poke()
        return len(present)

    def _poke(self) -> None:
        self.maintainer.poke()
        self.publisher.poke()

    def _log(self, write) -> None:
        payload = records.encode(write)
        seq = self.wal.append(payload)  # raises before anything changed
        apply(self.table, seq, write)
        self.log_bytes += len(payload) + 8

    # -- reads --------------------------------------------------------------------------------
    def search(self, query, k: int, where: dict[str, str] | None = None) -> list[tuple[int, float, dict]]:
        """The ``k`` best (id, score, metadata) for one query (see ``search.py``)."""
        q = unit_vectors(query, int(self.binding["dim"]))
        with self.index_lock.reading():  # the index is not grown while it is searched
            v = self.table.view
            found = ann_candidates(v, q, k, where)
        return exact_top(v, q, k, where, found)

    @functools.cached_property
    def projection(self):
        """What its images and texts are projected with (a projected collection), or None."""
        return collection_projection(self.root, self.binding)

    @property
    def count(self) -> int:
        return self.table.live

    @property
    def view(self) -> View:
        """The state after the latest write (as ``SnapshotReader.view``)."""
        return self.table.view

    @property
    def kind(self) -> str:
        return self.table.view.infos["kind"]

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until indexing, rebuilds, tuning and publications have caught up (tests, benches)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.maintainer.wait_idle(left):
                return False
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.publisher.wait_idle(left):
                return False
            if self.maintainer.idle.is_set():  # publishing gave maintenance no new work
                return True

    def close(self) -> None:
        self.publisher.stop()
        self.maintainer.stop()
        with self.write_lock:
            self.wal.close()


def apply(table: RowTable, seq: int, write) -> None:
    if isinstance(write, records.Upsert):
        table.upsert(seq, write.ids, write.vectors, write.metadata)
    else:
        table.delete(seq, write.ids)


def disk_error(exc: OSError, what: str) -> Exception:
    if exc.errno in DISK_FULL:
        return ResourceExhaustedError(f"{what}: the disk holding the data dir is full (or over "
                                      f"its size limit)")
    if exc.errno == errno.ENAMETOOLONG:
        return InvalidInputError(f"{what}: the name is too long for the file system")
    return exc
