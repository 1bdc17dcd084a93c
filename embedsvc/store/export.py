"""``embedsvc export``: a store in the layouts other tools read.

- ``clip-retrieval``: what clip-retrieval writes and autofaiss / embedding-reader read:
  ``OUT/img_emb/img_emb_{n}.npy`` (a text store: ``text_emb/text_emb_{n}.npy``) and
  ``OUT/metadata/metadata_{n}.parquet``, one pair per store shard, rows in the same order (the
  store's dtype; ``image_path`` or ``caption`` beside the store's own columns).
- ``parquet``: one file, an ``embedding`` column (fixed-size list of float32) and the metadata
  columns, with the store's provenance and summary in the file's key-value metadata (what
  DuckDB, LanceDB and the vector databases import).

Either is written beside OUT and renamed into place when complete: a failed export leaves
nothing at OUT.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import numpy as np

from ..atomic import written_beside
from ..errors import InvalidInputError
from .store import EmbeddingStore

FORMATS = ("clip-retrieval", "parquet")
PROVENANCE_KEY = b"embedsvc.provenance"
SUMMARY_KEY = b"embedsvc.store"
_TYPED = {"id": "int64", "width": "int64", "height": "int64", "truncated": "bool"}


def export_store(store_path: str | os.PathLike, out: str | os.PathLike, fmt: str,
                 overwrite: bool = False) -> dict:
    """Write the store at ``store_path`` to ``out`` in ``fmt``; returns a summary. An ``out``
    that exists is replaced only with ``overwrite``, and only once the new one is complete."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    store = EmbeddingStore.open(store_path)
    out = Path(out)
    with written_beside(out, overwrite) as tmp:
        (write_clip_retrieval if fmt == "clip-retrieval" else write_parquet)(store, tmp)
    return {"store": str(store.root), "out": str(out), "format": fmt, "rows": store.count,
            "dim": store.dim, "files": sum(1 for _ in out.rglob("*")) if out.is_dir() else 1}


def _columns(store: EmbeddingStore) -> list[str]:
    """Every metadata key of the store, in the order first seen (id, path, label, ...)."""
    keys: dict[str, None] = {}
    for r in store.metadata():
        keys.update(dict.fromkeys(r))
    return sorted(keys, key=lambda k: k != "id")  # id first, the rest as stored


def _metadata_table(rows: list[dict], columns: list[str], extra: dict[str, str]):
    """Rows as an Arrow table with one type per column whatever the shard: numbers and flags
    typed, everything else text (a dict or list as JSON)."""
    import pyarrow as pa

    arrays, names = [], []
    for c in columns:
        values = [r.get(c) for r in rows]
        if c in _TYPED:
            arrays.append(pa.array(values, getattr(pa, _TYPED[c])()))
        else:
            arrays.append(pa.array([v if v is None or isinstance(v, str) else json.dumps(v)
                                    for v in values], pa.string()))
        names.append(c)
    for new, source in extra.items():
        arrays.append(pa.array([r.get(source) for r in rows], pa.string()))
        names.append(new)
    return pa.Table.from_arrays(arrays, names=names)


def _is_text(store: EmbeddingStore) -> bool:
    return store.provenance.get("modality") == "text"


def write_clip_retrieval(store: EmbeddingStore, out: Path) -> None:
    import pyarrow.parquet as pq

    kind = "text" if _is_text(store) else "img"
    (out / f"{kind}_emb").mkdir(parents=True)
    (out / "metadata").mkdir()
    columns = _columns(store)
    extra = {"caption": "text"} if kind == "text" else {"image_path": "path"}
    for n, (vectors, rows) in enumerate(store.iter_shards()):
        np.save(out / f"{kind}_emb" / f"{kind}_emb_{n}.npy", np.asarray(vectors))
        pq.write_table(_metadata_table(rows, columns, extra), out / "metadata" / f"metadata_{n}.parquet")


def write_parquet(store: EmbeddingStore, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = _columns(store)
    schema = _metadata_table([], columns, {}).schema.append(
        pa.field("embedding", pa.list_(pa.float32(), store.dim)))
    schema = schema.with_metadata({
        PROVENANCE_KEY: json.dumps(store.provenance, sort_keys=True).encode(),
        SUMMARY_KEY: json.dumps({"count": store.count, "dim": store.dim, "dtype": store.dtype,
                                 "store": str(store.root)}).encode()})
    with pq.ParquetWriter(out, schema) as writer:
        for vectors, rows in store.iter_shards():
            flat = pa.array(np.asarray(vectors, np.float32).ravel(), pa.float32())
            table = _metadata_table(rows, columns, {}).append_column(
                "embedding", pa.FixedSizeListArray.from_arrays(flat, store.dim))
            writer.write_table(table.replace_schema_metadata(schema.metadata))
