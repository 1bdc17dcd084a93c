"""Every artifact says which format it is and which library versions wrote it; one that depends on
a library's private layout (the RBF svm head rebuilds scikit-learn's SVC from its attributes) is
refused under another version instead of answering wrongly."""
from __future__ import annotations

import json
import shutil

import pytest

from classifiers.heads import Head, TrainHeadConfig, train_head
from embedsvc.errors import IncompatibleError
from embedsvc.index.store_index import build_store_index, index_dir
from embedsvc.versions import library_version

LIBRARIES = {"torch", "timm", "sklearn", "faiss", "numpy", "embedsvc"}


def test_store_index_and_head_record_their_writers(tiny_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(tiny_store.root, store, ignore=shutil.ignore_patterns(".lock"))
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["format"] == 1 and set(manifest["written_by"]) == LIBRARIES
    assert manifest["written_by"]["faiss"] == library_version("faiss")

    from embedsvc.store import EmbeddingStore

    build_store_index(EmbeddingStore.open(store), kind="flat")
    infos = json.loads((index_dir(EmbeddingStore.open(store)) / "index_infos.json").read_text())
    assert infos["rows_indexed"] == tiny_store.count and set(infos["written_by"]) == LIBRARIES

    head = train_head(store, tmp_path / "head", TrainHeadConfig(kind="centroid"), progress=False)
    meta = json.loads((tmp_path / "head" / "head.json").read_text())
    assert meta["written_by"]["sklearn"] == library_version("sklearn") and head.kind == "centroid"


def test_rbf_svm_head_is_refused_under_another_scikit_learn(tiny_store, tmp_path):
    train_head(tiny_store.root, tmp_path / "svm", TrainHeadConfig(kind="svm"), progress=False)
    Head.load(tmp_path / "svm")  # same version: loads
    path = tmp_path / "svm" / "head.json"
    meta = json.loads(path.read_text())
    meta["written_by"]["sklearn"] = "0.24.2"
    path.write_text(json.dumps(meta))
    with pytest.raises(IncompatibleError, match=r"scikit-learn|sklearn 0\.24\.2"):
        Head.load(tmp_path / "svm")
