"""A collection's background work, one thread per collection, in this order of urgency:

1. rebuild when the right index kind changed (the live count crossed the planner's threshold)
   or when ended rows (deleted, overwritten) are a large fraction: the new rows hold only live
   ones, and the new index is built and tuned aside while writes and searches go on; only the
   rows written meanwhile are copied under the write lock;
2. write a snapshot once the log outgrows ``compact_log_bytes`` (or half the last snapshot),
   or, on a writer with reader replicas (``publish_every`` > 0), once writes are unpublished
   and ``publish_every`` seconds have passed since the last publication (longer when writing
   a snapshot takes long: at most a quarter of the time goes to publishing);
3. add new rows to the approximate index, ``index_batch`` at a time (until they are indexed,
   searches scan them exactly);
4. re-tune the search parameter once the collection doubled since the last tuning.

This thread is the only one that changes an approximate index, so a snapshot can write it
while searches go on; searches wait only for one batch of additions.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
import numpy as np

from ..index.planner import CODE_KINDS
from ..index.wal import WriteAheadLog
from . import ann
from .rows import NEVER, RowTable, View
from .snapshot import (remove_stale, snapshot_bytes, wal_files, wal_path,
                       write_manifest, write_snapshot)

log = logging.getLogger("embedsvc.collections")
RETRY_AFTER_ERROR_S = 5.0


class Maintainer:
    def __init__(self, collection):  # a collection.Collection
        self.c = collection
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._idle_lock = threading.Lock()
        self.idle = threading.Event()  # set while nothing is left to do (tests and benchmarks)
        self.last_error: str | None = None
        self._published_at = 0.0  # monotonic time of the last snapshot
        self._publish_cost = 0.0  # how long it took to write
        self._due: float | None = None  # when unpublished writes are to be published

    def poke(self) -> None:
        with self._idle_lock:  # with _run's check: idle is never set while a poke is unseen
            self.idle.clear()
            self._wake.set()
        with self._start_lock:
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"maintain-{self.c.root.name}")
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current step; a long one (a rebuild) is left to die with the process:
        the log holds every write, and the next start removes what it left half-written."""
        self._stopped = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self.idle.wait(timeout)

    def _run(self) -> None:
        while not self._stopped:
            self._wake.clear()
            try:
                worked = self.step()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - the log keeps every write; retry later
                log.exception("index %r: background maintenance failed", self.c.root.name)
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._wake.wait(RETRY_AFTER_ERROR_S)
                continue
            if not worked:
                with self._idle_lock:
                    if not self._wake.is_set() and self._due is None:
                        self.idle.set()
                self._wake.wait(None if self._due is None
                                else max(0.0, self._due - time.monotonic()))

    def step(self) -> bool:
        """Do the most urgent piece of work; False when there is none."""
        c, s = self.c, self.c.settings
        v = c.table.view
        kind = v.infos["kind"]
        plan = ann.choose(c.table.live, int(c.binding["dim"]), s, kind)
        dead = v.n - c.table.live
        if plan.kind != kind or dead >= max(64, s.rebuild_dead_fraction * v.n) or (
                kind in ("ivf", "ivfpq", *CODE_KINDS) and c.table.live > 4 * v.infos["built_count"]):
            self.rebuild(plan)
            self.snapshot()
            return True
        if c.log_bytes > max(s.compact_log_bytes, c.snapshot_bytes // 2):
            self.snapshot()
            return True
        self._due = None
        if c.publish_every and v.seq > c.published.seq:
            due = self._published_at + max(c.publish_every, 3 * self._publish_cost)
            if time.monotonic() >= due:
                self.snapshot()
                return True
            self._due = due
        if v.ann is not None and v.indexed < v.n:
            self.index_more(v)
            return True
        if v.ann is not None and c.table.live >= 2 * v.infos["tuned_count"]:
            self.retune(v)
            return True
        return False

    # -- the approximate index -------------------------------------------------------------------
    def index_more(self, v: View) -> None:
        c = self.c
        hi = min(v.n, v.indexed + c.settings.index_batch)
        with c.index_lock.writing():
            v.ann.add(np.ascontiguousarray(v.vectors[v.indexed:hi]))
        with c.write_lock:
            now = c.table.view
            c.table.view = replace(now, indexed=hi)

    def retune(self, v: View) -> None:
        c = self.c
        plan_kind = v.infos["kind"]
        plan = ann.choose(c.table.live, int(c.binding["dim"]), c.settings, plan_kind)
        alive = v.alive(0, v.indexed)
        if not alive.all():
            return self.rebuild(plan)
        found = ann.tune(v.ann, plan, v.vectors[:v.indexed], c.settings.recall_target)
        with c.write_lock:
            now = c.table.view
            c.table.view = replace(now, infos={**now.infos, **found})

    def rebuild(self, plan) -> None:
        """Rows without the ended ones, and a new index over them, swapped in whole."""
        c = self.c
        t0 = time.perf_counter()
        with c.write_lock:
            v = c.table.view
        live = np.flatnonzero(v.alive())
        spare = max(1024, len(live) // 4)
        vectors = np.empty((len(live) + spare, v.vectors.shape[1]), np.float32)
        vectors[:len(live)] = v.vectors[live]
        if plan.kind == "flat" or not len(live):
            index, infos = None, dict(ann.FLAT_INFOS)
        else:
            index, infos = ann.build(vectors[:len(live)], plan, c.settings)
        ids = v.ids[live]
        metadata = [v.metadata[r] for r in live.tolist()]
        row_of = dict(zip(ids.tolist(), range(len(live))))
        with c.write_lock:  # only what was written since the capture is handled here
            now = c.table.view
            ended = now.ended[live]  # ended by writes after the capture
            for new_row in np.flatnonzero(ended != NEVER).tolist():
                row_of.pop(int(ids[new_row]), None)
            tail = slice(v.n, now.n)
            t = now.n - v.n
            if t > spare:
                vectors = np.concatenate([vectors[:len(live)], now.vectors[tail]])
            else:
                vectors[len(live):len(live) + t] = now.vectors[tail]
            all_ids = np.concatenate([ids, now.ids[tail]])
            all_ended = np.concatenate([ended, now.ended[tail]])
            for j, (i, e) in enumerate(zip(now.ids[tail].tolist(), now.ended[tail].tolist())):
                if e == NEVER:
                    row_of[i] = len(live) + j
            view = View(len(all_ids), now.seq, vectors, all_ids, all_ended,
                        metadata + now.metadata[v.n:now.n], index,
                        len(live) if index is not None else 0, infos)
            c.table = RowTable(view, c.table.next_id, row_of)
        log.info("index %r rebuilt as %s over %d vectors in %.1f s", c.root.name, infos["kind"],
                 len(live), time.perf_counter() - t0)

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot(self) -> None:
        """Write the current state as a snapshot, then drop the logs it covers. The log is
        rotated first, so writes go on into a new file while the snapshot is written."""
        c = self.c
        t0 = time.monotonic()
        with c.write_lock:
            v, next_id, logged = c.table.view, c.table.next_id, c.log_bytes
            if c.wal.first_seq != v.seq + 1:
                new = WriteAheadLog.open(wal_path(c.root, v.seq + 1), v.seq + 1)[0]
                c.wal, old = new, c.wal
                old.close()
            c.log_bytes = 0
        try:
            published = write_snapshot(c.root, v, next_id, c.binding,
                                       (lambda p: ann.write_index(v.ann, p)) if v.ann else None)
            write_manifest(c.root, published.name, v.seq)
        except BaseException:
            with c.write_lock:
                c.log_bytes += logged  # still unsnapshotted: try again later
            raise
        for first, path in wal_files(c.root):
            if first <= v.seq and path != c.wal.path:
                path.unlink()
        c.published = published
        remove_stale(c.root, published.name)
        c.snapshot_bytes = snapshot_bytes(c.root / published.name)
        self._published_at = time.monotonic()
        self._publish_cost = self._published_at - t0
