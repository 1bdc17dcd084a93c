"""One provenance, one key, one reader and writer: every artifact made from the same vectors says
how they were made in the same words, under ``provenance``; artifacts in the layout the released
versions wrote (``binding`` in index and snapshot infos, provenances without modality, decode or
runtime) keep loading and keep refusing vectors made another way."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from classifiers.heads import Head, TrainHeadConfig, train_head
from embedsvc.collection.collection import Collection
from embedsvc.collection.settings import CollectionSettings
from embedsvc.collection.snapshot import INFOS_JSON, OLD_INFOS_JSON, read_manifest
from embedsvc.collection.snapshot_read import read_snapshot
from embedsvc.embeddings import Embeddings
from embedsvc.errors import IncompatibleError, InvalidInputError, NotFoundError
from embedsvc.index.store_index import build_store_index, index_dir, load_store_index
from embedsvc.provenance import Provenance, read_artifact
from embedsvc.store import EmbeddingStore

NEWER_KEYS = ("modality", "decode", "runtime", "architecture", "library")  # absent before text


@pytest.fixture()
def artifacts(tiny_store, tmp_path):
    """A store, its index, a head, saved embeddings and a collection, all of the same vectors."""
    root = tmp_path / "store"
    shutil.copytree(tiny_store.root, root, ignore=shutil.ignore_patterns(".lock"))
    store = EmbeddingStore.open(root)
    build_store_index(store, kind="flat")
    train_head(root, tmp_path / "head", TrainHeadConfig(kind="centroid"), progress=False)
    vectors = store.vectors()[:8]
    Embeddings(vectors, tuple(f"v{i}" for i in range(8)), store.provenance).save(tmp_path / "e.npy")
    c = Collection.create(tmp_path / "coll", store.binding, CollectionSettings())
    c.upsert(vectors, list(range(8)), [{}] * 8)
    c.close()
    snapshot = tmp_path / "coll" / read_manifest(tmp_path / "coll")["snapshot"]
    return {"store": root / "manifest.json", "index": index_dir(store) / "index_infos.json",
            "head": tmp_path / "head" / "head.json", "embeddings": tmp_path / "e.npy.json",
            "collection": snapshot / INFOS_JSON}


def test_every_artifact_says_how_its_vectors_were_made_in_one_form(artifacts):
    seen = {}
    for what, path in artifacts.items():
        meta = json.loads(path.read_text())
        assert "binding" not in meta and "written_by" in meta, what
        p = meta["provenance"]
        assert Provenance.from_dict(p).to_dict() == p, what  # written in its one normal form
        assert p["backbone"] == "tiny-random" and p["modality"] == "image", what
        assert p["decode"] in ("fast", "exact") and p["runtime"] == "torch", what
        seen[what] = Provenance.from_dict(p).binding()
    store = seen.pop("store")
    head = seen.pop("head")
    assert all(b == store for b in seen.values()), seen  # index, embeddings, collection
    # the head is trained on the store's vectors; it says so in the same words
    assert {k: v for k, v in head.items() if k != "normalized"} == \
        {k: v for k, v in store.items() if k != "normalized"}


def _as_released(path, key: str = "provenance") -> None:
    """Rewrite an artifact as the released versions wrote it."""
    meta = json.loads(path.read_text())
    p = meta.pop("provenance")
    for k in NEWER_KEYS:
        p.pop(k, None)
    meta[key] = {k: v for k, v in p.items() if v is not None}
    path.write_text(json.dumps(meta, indent=2))


def _as_format_1(snapshot) -> None:
    """Rewrite a collection snapshot folder as format 1 wrote it: one file per kind of data."""
    loaded = read_snapshot(snapshot)
    v = loaded.view
    for p in snapshot.iterdir():
        if p.name != INFOS_JSON:
            p.unlink()
    np.save(snapshot / "vectors.npy", v.vectors[:v.n])
    np.save(snapshot / "ids.npy", v.ids[:v.n])
    np.save(snapshot / "alive.npy", v.alive())
    (snapshot / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in v.metadata))
    (snapshot / "snapshot.json").write_text(json.dumps({
        "format": 1, "seq": v.seq, "rows": v.n, "indexed": 0, "next_id": loaded.next_id}))


def test_artifacts_in_the_released_layout_keep_loading_and_checking(artifacts, tmp_path):
    for what in ("store", "head", "embeddings"):
        _as_released(artifacts[what])
    _as_released(artifacts["index"], key="binding")
    _as_format_1(artifacts["collection"].parent)
    infos = artifacts["collection"]
    _as_released(infos, key="binding")
    infos.rename(infos.with_name(OLD_INFOS_JSON))

    store = EmbeddingStore.open(artifacts["store"].parent)
    assert store.provenance["modality"] == "image" and store.provenance["decode"] == "exact"
    vectors = store.vectors()
    index = load_store_index(store)  # checked against the store: the same vectors
    assert index.binding["modality"] == "image"
    _, ids = index.search(vectors[:3], 1)
    assert ids[:, 0].tolist() == [0, 1, 2]

    head = Head.load(artifacts["head"].parent)
    emb = Embeddings.load(artifacts["embeddings"].with_name("e.npy"))
    assert head.predict_proba(emb).shape == (8, len(head.classes))
    text_made = Embeddings(emb.vectors, emb.ids, {**emb.provenance, "modality": "text"})
    with pytest.raises(IncompatibleError, match="modality"):
        head.predict_proba(text_made)

    c = Collection.open(tmp_path / "coll", CollectionSettings())
    try:
        assert c.binding["modality"] == "image" and c.count == 8
        assert c.search(vectors[5] / np.linalg.norm(vectors[5]), 1)[0][0] == 5
        c.publisher.publish()  # the next publication is of format 2, every row in it
    finally:
        c.close()
    c = Collection.open(tmp_path / "coll", CollectionSettings())
    try:
        assert c.published.layout.rows == 8 and c.count == 8
        assert c.search(vectors[6] / np.linalg.norm(vectors[6]), 1)[0][0] == 6
    finally:
        c.close()


def test_an_unreadable_or_foreign_artifact_gets_one_clear_error(artifacts, tmp_path):
    with pytest.raises(NotFoundError, match="head.json missing"):
        read_artifact(tmp_path / "nowhere" / "head.json", "head")
    artifacts["head"].write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        Head.load(artifacts["head"].parent)
    artifacts["store"].write_text(json.dumps({"format": 99}))
    with pytest.raises(IncompatibleError, match="format 99"):
        EmbeddingStore.open(artifacts["store"].parent)
    artifacts["index"].write_text(json.dumps({"format": 1, "provenance": {"dim": 3}}))
    with pytest.raises(IncompatibleError, match="names no encoder"):
        read_artifact(artifacts["index"], "index")
