"""The server's collections: every ``DATA_DIR/indexes/NAME`` opened (recovered) at start, a new
one created by the first Upsert that names it, and one that appears in the folder while the
server runs (``embedsvc collection import`` renames a whole collection into place) opened when
it is first named or listed. See ``embedsvc/collection`` for how one works.

A first Upsert that fails leaves no trace: the collection it created is removed again. On a
writer with reader replicas (``publish_every`` > 0) each collection publishes its writes as a
snapshot at most that many seconds after them (``replicas.py`` is the readers' side).
"""
from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any, Callable

from ..collection import legacy
from ..collection.collection import Collection
from ..collection.settings import CollectionSettings
from ..collection.snapshot import read_manifest
from ..errors import NotFoundError
from ..names import valid_name

log = logging.getLogger("embedsvc.collections")


class Collections:
    def __init__(self, root: Path, settings: CollectionSettings | None = None,
                 publish_every: float = 0.0):
        self.root = root
        self.settings = settings or CollectionSettings()
        self.publish_every = publish_every
        self._lock = threading.Lock()
        self._items: dict[str, Collection] = {}
        self.unavailable: dict[str, str] = {}  # name -> why it could not be opened
        if root.is_dir():
            for leftover in root.glob(".*.new"):  # a creation cut short by a crash
                shutil.rmtree(leftover, ignore_errors=True)
            for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
                try:
                    if legacy.is_legacy(d):
                        legacy.convert(d, self.settings)
                    self._items[d.name] = Collection.open(d, self.settings, publish_every)
                except Exception as exc:  # noqa: BLE001 - one damaged index must not stop the rest
                    log.error("index %r cannot be opened: %s", d.name, exc)
                    self.unavailable[d.name] = str(exc)

    def _discover(self, name: str) -> None:
        """Open ``name`` if a whole collection has appeared on disk since the start (the
        caller holds ``_lock``)."""
        if name in self._items or name in self.unavailable or name.startswith("."):
            return
        root = self.root / name
        try:
            if read_manifest(root) is None:
                return
            self._items[name] = Collection.open(root, self.settings, self.publish_every)
            log.info("index %r appeared in the data dir and is served", name)
        except Exception as exc:  # noqa: BLE001 - as at start: one damaged index stays listed
            log.error("index %r cannot be opened: %s", name, exc)
            self.unavailable[name] = str(exc)

    def _discover_all(self) -> None:
        if self.root.is_dir():
            for d in self.root.iterdir():
                if d.name not in self._items and d.is_dir():
                    self._discover(d.name)

    def names(self) -> list[str]:
        with self._lock:
            self._discover_all()
            return sorted(self._items)

    def get(self, name: str) -> Collection:
        with self._lock:
            self._discover(name)
            if name not in self._items:
                why = self.unavailable.get(name)
                raise NotFoundError(f"index {name!r} could not be opened: {why}" if why else
                                    f"no index named {name!r}; available: "
                                    f"{', '.join(sorted(self._items)) or 'none (Upsert creates one)'}")
            return self._items[name]

    def find(self, name: str) -> Collection | None:
        with self._lock:
            self._discover(name)
            return self._items.get(name)

    def write(self, name: str, binding: dict[str, Any], write: Callable[[Collection], Any],
              projection=None) -> Any:
        """``write(collection)`` on the collection ``name``, created with ``binding`` (and the
        ``projection`` its vectors are made with) if new; a new one is removed again if that
        first write fails."""
        valid_name(name, "index name")
        with self._lock:
            self._discover(name)
            coll = self._items.get(name)
            if coll is None:
                if name in self.unavailable:
                    raise NotFoundError(f"index {name!r} could not be opened: "
                                        f"{self.unavailable[name]}")
                self.root.mkdir(parents=True, exist_ok=True)
                coll = self._items[name] = Collection.create(self.root / name, binding,
                                                             self.settings, self.publish_every,
                                                             projection)
                created = True
            else:
                created = False
        try:
            return write(coll)
        except BaseException:
            if created and coll.count == 0:
                with self._lock:
                    self._items.pop(name, None)
                coll.close()
                shutil.rmtree(coll.root, ignore_errors=True)
            raise

    def snapshots(self) -> list[dict[str, Any]]:
        """Each collection's last published snapshot, and the writes applied since."""
        with self._lock:
            items = dict(self._items)
        return [c.published.describe(name, c.table.view.seq, c.count)
                for name, c in sorted(items.items())]

    def close(self) -> None:
        with self._lock:
            items, self._items = list(self._items.values()), {}
        for c in items:
            c.close()
