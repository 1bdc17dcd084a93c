"""A collection's publications, on a thread of their own so that no index work delays them: a
snapshot once the log outgrows ``compact_log_bytes`` (or half the snapshot), or, on a writer
with reader replicas (``publish_every`` > 0), once writes are unpublished and ``publish_every``
seconds have passed since the last one (longer when publishing takes long: at most a quarter
of the time goes to it); and soon after maintenance wrote files for one (a rebuild's rows, an
index). A publication writes what changed since the previous one (``snapshot.py``)."""
from __future__ import annotations

import threading
import time

from ..index.wal import WriteAheadLog
from .snapshot import (remove_stale, snapshot_bytes, unlink_pending, wal_files,
                       wal_path, write_manifest, write_snapshot)
from .worker import Worker


class Publisher(Worker):
    role = "publish"

    def __init__(self, collection):
        super().__init__(collection)
        self._published_at = 0.0  # monotonic time of the last publication
        self._publish_cost = 0.0  # how long it took
        self._due: float | None = None  # when unpublished writes are to be published
        self._asked = False  # maintenance wrote files for the next publication
        self._one_at_a_time = threading.Lock()

    def request(self) -> None:
        """Publish soon: maintenance wrote files (pending/) that the next publication links."""
        self._asked = True
        self.poke()

    def due(self) -> float | None:
        return self._due

    def step(self) -> bool:
        c, s = self.c, self.c.settings
        self._due = None
        if self._asked or c.log_bytes > max(s.compact_log_bytes, c.snapshot_bytes // 2):
            self.publish()
            return True
        if c.publish_every and c.table.view.seq > c.published.seq:
            due = self._published_at + max(c.publish_every, 3 * self._publish_cost)
            if time.monotonic() >= due:
                self.publish()
                return True
            self._due = due
        return False

    def publish(self) -> None:
        """Publish the current state, then drop the logs it covers. The log is rotated first,
        so writes go on into a new file while the snapshot is written. One at a time (this
        thread's, or a caller's such as an import's last)."""
        with self._one_at_a_time:
            self._publish()

    def _publish(self) -> None:
        c = self.c
        t0 = time.monotonic()
        self._asked = False
        with c.write_lock:
            v, next_id, logged = c.table.view, c.table.next_id, c.log_bytes
            with c.files_lock:  # what maintenance wrote for it (a rebuild sets both locked)
                base, index, merge = c.base, c.index_file, c.merge
            if c.wal.first_seq != v.seq + 1:
                new = WriteAheadLog.open(wal_path(c.root, v.seq + 1), v.seq + 1)[0]
                c.wal, old = new, c.wal
                old.close()
            c.log_bytes = 0
        try:
            published = write_snapshot(c.root, v, next_id, c.binding, c.published, base, index,
                                       merge)
            write_manifest(c.root, published.name, v.seq)
        except BaseException:
            with c.write_lock:
                c.log_bytes += logged  # still unpublished: try again later
            raise
        for first, path in wal_files(c.root):
            if first <= v.seq and path != c.wal.path:
                path.unlink()
        c.published = published
        with c.files_lock:  # pending files the snapshot links live on in it
            if c.base is not None and c.base.epoch == v.epoch:
                c.base = None
            if merge is not None and c.merge is merge:  # applied, or made moot by a rebuild
                c.merge = None
                unlink_pending(c.root, merge.files())
            unlink_pending(c.root, published.layout.files())
        remove_stale(c.root, published.name)
        c.snapshot_bytes = snapshot_bytes(c.root / published.name)
        self._published_at = time.monotonic()
        self._publish_cost = self._published_at - t0
