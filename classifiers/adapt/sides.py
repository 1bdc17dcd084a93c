"""The two sides of a gap as embeddings: an embedding store is read as it is; a folder or manifest
of images or texts is embedded, the way the store beside it was made when there is one (same
encoder, weights, tap, normalisation), else with the encoder asked for (default: the default
encoder of what the source holds)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedsvc.datasets.sources import is_store, scan_source
from embedsvc.provenance import check_compatible


@dataclass(frozen=True)
class Side:
    name: str
    vectors: np.ndarray
    labels: np.ndarray | None  # str per row, None when the side has no labels at all
    provenance: dict


def load_sides(a: str, b: str, backbone: str | None, max_per_side: int = 500, seed: int = 0,
               progress: bool = True) -> tuple[Side, Side]:
    """Both sides, each a random sample of at most ``max_per_side`` rows (seeded)."""
    rng = np.random.default_rng(seed)
    stores = {p: _read_store(p, max_per_side, rng) for p in (a, b) if is_store(p)}
    made_like = next(iter(stores.values())).provenance if stores else None
    fe = None
    sides = []
    for path in (a, b):
        if path in stores:
            sides.append(stores[path])
            continue
        records = scan_source(path)
        if fe is None:
            fe = _encoder(made_like, backbone, records, path)
        sides.append(_embed_source(path, records, fe, max_per_side, rng, progress))
    check_compatible(sides[0].provenance, sides[1].provenance, f"the gap to {a}")
    return sides[0], sides[1]


def _sample(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= k else np.sort(rng.choice(n, k, replace=False))


def _labels(values: list) -> np.ndarray | None:
    return None if all(v is None for v in values) else np.array(
        ["" if v is None else str(v) for v in values])


def _read_store(path: str, k: int, rng: np.random.Generator) -> Side:
    from embedsvc.store import EmbeddingStore

    store = EmbeddingStore.open(path)
    rows = _sample(store.count, k, rng)
    meta = store.metadata()
    return Side(path, store.vectors()[rows], _labels([meta[i].get("label") for i in rows]),
                store.provenance)


def _encoder(provenance: dict | None, name: str | None, records, path: str):
    from embedsvc.encoders import (check_source, default_encoder, encoder_for,
                                   modality_of_records, open_encoder)

    if provenance is not None:
        return encoder_for(provenance)
    name = name or default_encoder(modality_of_records(records))
    check_source(name, records, path)
    return open_encoder(name)


def _embed_source(path: str, records, fe, k: int, rng: np.random.Generator,
                  progress: bool) -> Side:
    from embedsvc.encoders import check_source, record_inputs

    check_source(fe.name, records, path)
    chosen = [records[i] for i in _sample(len(records), k, rng)]
    inputs, ids = record_inputs(chosen, fe.modality)
    emb = fe.embed(inputs, ids=ids, skip_bad=True, progress=progress)
    kept = set(emb.ids)
    return Side(path, emb.vectors, _labels([r.label for r in chosen if r.path in kept]),
                emb.provenance)
