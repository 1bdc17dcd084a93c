"""Collections written before the write-ahead log (index.faiss + metadata.json at the top of
NAME/, an exact ``IDMap2,Flat`` index): converted in place on first open, so an upgrade keeps
every stored vector. The old files are removed only once the new collection is complete."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from ..index.vector_index import INFOS_JSON, VectorIndex, has_index
from .snapshot import MANIFEST

log = logging.getLogger("embedsvc.collections")
OLD_FILES = ("index.faiss", INFOS_JSON, "removed.npy", "metadata.json")


def is_legacy(root: Path) -> bool:
    return has_index(root) and not (root / MANIFEST).exists()


def convert(root: Path, settings) -> None:
    import faiss

    from .collection import Collection

    old = VectorIndex.load(root, mmap=False)
    inner = faiss.downcast_index(old.index)
    ids = faiss.vector_to_array(inner.id_map).astype(np.int64)
    vectors = inner.index.reconstruct_n(0, inner.ntotal) if inner.ntotal else np.zeros((0, old.dim), np.float32)
    meta_path = root / "metadata.json"
    metadata = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    keep = [n for n, i in enumerate(ids.tolist()) if i not in old.removed]
    staged = root.with_name(f".{root.name}.converted")
    shutil.rmtree(staged, ignore_errors=True)
    c = Collection.create(staged, old.binding, settings)
    for lo in range(0, len(keep), 10_000):
        rows = keep[lo:lo + 10_000]
        c.upsert(vectors[rows], ids[rows].tolist(), [metadata.get(str(int(ids[r])), {}) for r in rows])
    c.wait_idle()
    c.close()
    # the new files join the old ones (the manifest last: until it is there, the old files are
    # what a restart reads), then the old ones go
    for p in sorted(staged.iterdir(), key=lambda p: p.name == MANIFEST):
        p.rename(root / p.name)
    staged.rmdir()
    for name in OLD_FILES:
        (root / name).unlink(missing_ok=True)
    log.info("index %r converted to the write-ahead-log format (%d vectors)", root.name, len(keep))
