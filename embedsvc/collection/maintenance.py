"""A collection's index work, one thread per collection, in this order of urgency:

1. rebuild when the right index kind changed (the live count crossed the planner's threshold)
   or when ended rows (deleted, overwritten) are a large fraction: the new rows hold only live
   ones, numbered again (a new epoch), and the new index is built and tuned aside while
   writes, searches and publications go on; its rows and index are written for the next
   publication (``pending/``) before it is swapped in, and only the rows written meanwhile
   are copied under the write lock;
2. add new rows to the approximate index, ``index_batch`` at a time (until they are indexed,
   searches scan them exactly);
3. write the index to a file for publication once it covers ``INDEX_FILE_ROWS`` rows (or a
   quarter, if more) more than the last one written: until then readers scan the newer rows
   exactly;
4. re-tune the search parameter once the collection doubled since the last tuning;
5. compaction: once the published snapshot has more than ``MAX_SEGMENTS`` segments (each
   publication seals one) or ``MAX_DEAD_FILES`` dead files, write one for a run of them
   (``segments.merge_run``: each row is written again O(log rows) times) for the next
   publication to swap in. Ended rows are dropped by the rebuild of step 1.

This thread is the only one that changes an approximate index, so it can write it while
searches go on; searches wait only for one batch of additions. Publication is another
thread's (``publisher.py``): a rebuild never delays it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np

from ..index.planner import CODE_KINDS
from . import ann
from .rows import NEVER, RowTable, View
from .segments import MAX_DEAD_FILES, MAX_SEGMENTS, merge_run, tag, write_npy, write_segment
from .snapshot import PENDING, Base, Merge, write_pending_index, write_pending_segments
from .worker import Worker

log = logging.getLogger("embedsvc.collections")
INDEX_FILE_ROWS = 20_000


class Maintainer(Worker):
    role = "maintain"

    def step(self) -> bool:
        c, s = self.c, self.c.settings
        v = c.table.view
        kind = v.infos["kind"]
        plan = ann.choose(c.table.live, int(c.binding["dim"]), s, kind)
        dead = v.n - c.table.live
        if plan.kind != kind or dead >= max(64, s.rebuild_dead_fraction * v.n) or (
                kind in ("ivf", "ivfpq", *CODE_KINDS) and c.table.live > 4 * v.infos["built_count"]):
            self.rebuild(plan)
            return True
        if v.ann is not None and v.indexed < v.n:
            self.index_more(v)
            return True
        if v.ann is not None and self._index_file_behind(v):
            self.write_index_file(v)
            return True
        if v.ann is not None and c.table.live >= 2 * v.infos["tuned_count"]:
            self.retune(v)
            return True
        published = c.published
        layout = published.layout
        if c.merge is None and layout is not None and layout.epoch == v.epoch and (
                len(layout.segments) > MAX_SEGMENTS or len(layout.dead) > MAX_DEAD_FILES):
            self.merge(v, published)
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

    def _index_file_behind(self, v: View) -> bool:
        f = self.c.index_file
        if f is None or f.epoch != v.epoch:
            return True
        # a quarter more each time: the bytes written stay linear in the rows indexed (about
        # 4x the final index), and readers scan at most a fifth of the rows exactly
        return v.indexed - f.indexed >= max(INDEX_FILE_ROWS, f.indexed // 4)

    def write_index_file(self, v: View) -> None:
        """The index as it is now (rows [0, v.indexed)), for the next publication."""
        c = self.c
        written = write_pending_index(c.root, v.ann, v.epoch, v.indexed)
        with c.files_lock:
            c.index_file = written
        c.publisher.request()

    # -- the files publications link ---------------------------------------------------------
    def merge(self, v: View, published) -> None:
        """One segment for a run of the published snapshot's small ones, one dead file for its
        many: written to ``pending/`` and swapped in by the next publication."""
        c, layout = self.c, published.layout
        run, seg, dead, replaced = merge_run(layout.segments), None, None, ()
        (c.root / PENDING).mkdir(exist_ok=True)
        if len(run) > 1:
            lo, hi = run[0].lo, run[-1].hi
            seg = write_segment(c.root / PENDING, v.epoch, lo, v.vectors[lo:hi], v.ids[lo:hi],
                                v.metadata[lo:hi], v.alive(lo, hi))
        if len(layout.dead) > MAX_DEAD_FILES:
            folder = c.root / published.name
            rows = np.unique(np.concatenate([np.load(folder / d["name"]) for d in layout.dead]))
            name = f"dead-{v.epoch}-{layout.seq}-{tag()}.npy"
            dead = {"name": name, **write_npy(c.root / PENDING / name, rows), "count": len(rows)}
            replaced = [d["name"] for d in layout.dead]
        with c.files_lock:
            c.merge = Merge(v.epoch, seg, frozenset(s.stem for s in run) if seg else frozenset(),
                            dead, frozenset(replaced))
        c.publisher.request()

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
        # the new epoch's rows and index, written for the next publication before the swap:
        # it links them, and writes only the rows that came meanwhile
        epoch = v.epoch + 1
        captured = View(len(live), v.seq, vectors, ids, np.full(len(live), NEVER, np.int64),
                        metadata, epoch=epoch)
        base = Base(epoch, len(live), write_pending_segments(c.root, captured),
                    write_pending_index(c.root, index, epoch, len(live)) if index is not None
                    else None)
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
                        len(live) if index is not None else 0, infos, epoch)
            c.table = RowTable(view, c.table.next_id, row_of)
            with c.files_lock:
                c.base, c.index_file = base, base.index
        c.publisher.request()
        log.info("index %r rebuilt as %s over %d vectors in %.1f s", c.root.name, infos["kind"],
                 len(live), time.perf_counter() - t0)
