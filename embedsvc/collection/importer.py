"""``collection import``: an embedding store becomes a served collection without embedding again.

The store's rows become the collection's items: the same ids (row ids), the same vectors, and
the rows' metadata (path, label, split, domain, sha256, width, height) as strings; the store's
provenance becomes the collection's binding, so a server searches it with the backbone that made
it and refuses vectors made otherwise. A projected store (``embedsvc project``) brings its
projection: the server projects the images and texts it stores and searches by it.

The collection is built aside, in ``INDEXES/.NAME.import/NAME``, in writes of ``CHUNK`` rows
through the collection's own log, then snapshotted and renamed into place whole: a server
watching the data dir (``service/collections.py``) sees either no collection or all of it. An
interrupted import resumes where its last write ended (the staged collection's count says how
far it got), provided it is the same store.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes, fsync_dir
from ..projection import source_provenance
from ..provenance import check_compatible
from ..errors import IncompatibleError, InvalidInputError
from ..names import valid_name
from ..store.store import EmbeddingStore, StoreLock
from .collection import Collection
from .settings import CollectionSettings
from .snapshot import read_manifest

CHUNK = 4096  # rows per logged write: what an interruption can lose


@dataclass(frozen=True)
class ImportReport:
    name: str
    path: str
    count: int
    resumed_at: int  # rows a previous, interrupted import had already written


def row_metadata(row: dict) -> dict[str, str]:
    """A store row as collection metadata: strings, absent fields left out."""
    return {k: str(v) for k, v in row.items() if k != "id" and v is not None and v != ""}


def check_servable(store: EmbeddingStore, binding: dict) -> None:
    """The store's vectors are what a server makes for a collection (``binding``: the installed
    encoder's final, unit-length vectors), so its searches compare like with like."""
    prov = source_provenance(store.provenance)  # a projected store's: what its encoder made
    if prov.get("tap") != binding["tap"] or not prov.get("normalized"):
        raise IncompatibleError(
            f"store {str(store.root)!r} holds tap={prov.get('tap')!r} normalized="
            f"{prov.get('normalized')!r} vectors; a served collection holds unit-length "
            f"{binding['tap']!r} vectors (embed-dataset's defaults)")
    check_compatible(binding, prov, f"encoder {prov.get('backbone')!r} as installed here")


def import_store(store: EmbeddingStore, indexes: Path, name: str,
                 settings: CollectionSettings = CollectionSettings(),
                 progress: bool = True) -> ImportReport:
    valid_name(name, "index name")
    target = indexes / name
    if read_manifest(target) is not None or target.exists():
        raise InvalidInputError(f"index {name!r} already exists in {str(indexes)!r}; import into "
                                f"a new name (delete its ids through the server to empty it)")
    if store.count == 0:
        raise InvalidInputError(f"store {str(store.root)!r} holds no vectors")
    indexes.mkdir(parents=True, exist_ok=True)
    staging = indexes / f".{name}.import"
    source = {"store": str(store.root.resolve()), "created": store.manifest.get("created")}
    with StoreLock(indexes / f".{name}.import.lock",
                   held_by=f"index {name!r} is being imported by another process"):
        staged = staging / name
        if _staged_source(staging) != source:  # another store's (or no) import: start afresh
            shutil.rmtree(staging, ignore_errors=True)
        if read_manifest(staged) is None:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            atomic_write_bytes(staging / "source.json", json.dumps(source).encode())
            coll = Collection.create(staged, dict(store.provenance), settings,
                                     projection=store.projection())  # queries projected alike
        else:
            coll = Collection.open(staged, settings)
        try:
            resumed_at = coll.count
            _write_rows(coll, store, resumed_at, progress)
            coll.wait_idle()
            coll.maintainer.stop()
            coll.publisher.stop()
            coll.publisher.publish()  # opening it later reads one snapshot, not the whole log
        finally:
            coll.close()
        os.rename(staged, target)  # fails, changing nothing, if the name was taken meanwhile
        fsync_dir(indexes)
        shutil.rmtree(staging, ignore_errors=True)
    return ImportReport(name, str(target), store.count, resumed_at)


def _staged_source(staging: Path) -> dict | None:
    try:
        return json.loads((staging / "source.json").read_text())
    except (OSError, ValueError):
        return None


def _write_rows(coll: Collection, store: EmbeddingStore, start: int, progress: bool) -> None:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=store.count, initial=start, desc=f"import {coll.root.name}", unit="vec",
                   dynamic_ncols=True)
    try:
        rows = store.metadata()
        for lo in range(start, store.count, CHUNK):
            hi = min(lo + CHUNK, store.count)
            ids = list(range(lo, hi))
            coll.upsert(store.take(np.arange(lo, hi)), ids,
                        [row_metadata(r) for r in rows[lo:hi]], [f"row {i}" for i in ids])
            if bar is not None:
                bar.update(hi - lo)
    finally:
        if bar is not None:
            bar.close()
