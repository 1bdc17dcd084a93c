"""A reader replica's collections: the snapshots that the writer of the same data dir publishes,
served read-only (``role = "reader"``).

The writer (``role = "writer"``) publishes a collection by writing a snapshot folder whole and
then replacing the collection's MANIFEST.json, which names it (``collection/snapshot.py``). A
reader reads each manifest every ``follow_interval_s``; when it names another snapshot, the
reader opens that folder (all its files at once, so the writer may remove it meanwhile), and
only when it is read completely swaps it in for the one it served. A search reads one snapshot
from start to end: the state after one write of the writer's, never parts of two. A reader
writes only its leases into the data dir (``collection/leases.py``: which snapshot it serves,
so the writer keeps it); Upsert and Delete are refused (FAILED_PRECONDITION).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from ..collection.leases import drop_lease, reader_id, write_lease
from ..collection.snapshot import read_manifest
from ..collection.snapshot_read import SnapshotReader
from ..errors import NotFoundError

log = logging.getLogger("embedsvc.replicas")


class FollowedCollections:
    """The reader's counterpart of ``collections.Collections``: the same lookups, no writes."""

    def __init__(self, root: Path, follow_interval_s: float, lease_s: float = 30.0):
        self.root = root
        self._lock = threading.Lock()
        self._items: dict[str, SnapshotReader] = {}
        self.reader_id, self.lease_s = reader_id(), lease_s
        self._leased: dict[str, tuple[str, float]] = {}  # name -> (snapshot, when renewed)
        self._lease_error: str | None = None
        self.unavailable: dict[str, str] = {}  # name -> why its snapshot could not be read
        self.refresh()  # what is published at start is served from the first request on
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._follow, args=(follow_interval_s,),
                                        daemon=True, name="follow-snapshots")
        self._thread.start()

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._items)

    def get(self, name: str) -> SnapshotReader:
        with self._lock:
            if name in self._items:
                return self._items[name]
            why = self.unavailable.get(name)
            raise NotFoundError(f"index {name!r} could not be read: {why}" if why else
                                f"no index named {name!r} is published; available: "
                                f"{', '.join(sorted(self._items)) or 'none'}")

    def find(self, name: str) -> SnapshotReader | None:
        with self._lock:
            return self._items.get(name)

    def snapshots(self) -> list[dict[str, Any]]:
        with self._lock:
            items = dict(self._items)
        return [r.published.describe(name, r.published.seq, r.count)
                for name, r in sorted(items.items())]

    def refresh(self) -> None:
        """Serve, for each collection, the snapshot its manifest names now."""
        named = {}
        if self.root.is_dir():
            for d in sorted(p for p in self.root.iterdir()
                            if p.is_dir() and not p.name.startswith(".")):
                try:
                    manifest = read_manifest(d)
                except (OSError, ValueError) as exc:
                    self._unreadable(d.name, f"its MANIFEST.json cannot be read: {exc}")
                    continue
                if manifest is not None:  # else not a collection (yet)
                    named[d.name] = manifest["snapshot"]
        with self._lock:
            served = dict(self._items)
        items = {}
        for name, snapshot in named.items():
            old = served.get(name)
            if old is not None and old.published.name == snapshot:
                items[name] = old
                continue
            try:
                # segments and checksums already read are not read again
                items[name] = SnapshotReader(self.root / name / snapshot,
                                             old.cache if old is not None else None)
            except Exception as exc:  # noqa: BLE001 - one bad snapshot must not stop the rest
                if old is not None:
                    items[name] = old
                if not isinstance(exc, NotFoundError):  # else replaced meanwhile: next round
                    self._unreadable(name, f"snapshot {snapshot}: {type(exc).__name__}: {exc}")
                continue
            self.unavailable.pop(name, None)
            p = items[name].published
            log.info("index %r: serving snapshot %s (writes 1..%d, %d vectors)", name, p.name,
                     p.seq, items[name].count)
        with self._lock:
            self._items = items
        self._renew_leases(items)

    def _renew_leases(self, items: dict[str, SnapshotReader]) -> None:
        """Tell the writer which snapshot each index is served from (renewed at a third of the
        lease, so a slow round does not let it lapse)."""
        now = time.monotonic()
        for name, reader in items.items():
            snapshot = reader.published.name
            held = self._leased.get(name)
            if held is not None and held[0] == snapshot and now - held[1] < self.lease_s / 3:
                continue
            try:
                write_lease(self.root / name, self.reader_id, snapshot, self.lease_s)
            except OSError as exc:  # a read-only mount: serve anyway
                if self._lease_error != str(exc):
                    log.warning("index %r: cannot write this reader's lease (%s); the writer "
                                "may remove a snapshot while it is served", name, exc)
                self._lease_error = str(exc)
                continue
            self._leased[name] = (snapshot, now)

    def _unreadable(self, name: str, why: str) -> None:
        if self.unavailable.get(name) != why:
            log.error("index %r cannot be served: %s", name, why)
        self.unavailable[name] = why

    def _follow(self, every: float) -> None:
        while not self._stopped.wait(every):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - keep serving what we have; try again
                log.exception("following the published snapshots failed")

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(10)
        with self._lock:
            self._items = {}
        for name in self._leased:
            try:
                drop_lease(self.root / name, self.reader_id)
            except OSError:
                pass
