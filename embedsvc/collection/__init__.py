"""Writable vector collections: a write-ahead log, rows in memory, an approximate index once
they are many, snapshots on disk that other processes can read."""
from ..lazy import lazy_exports

__all__ = ["Collection", "CollectionSettings", "SnapshotReader"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "Collection": "collection", "CollectionSettings": "settings", "SnapshotReader": "snapshot_read"})
