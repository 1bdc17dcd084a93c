"""Search a real Fashion-MNIST store by image and by id, from Python and the CLI."""
import json

import numpy as np
import pytest

from embedsvc.search import StoreSearcher

pytestmark = pytest.mark.slow  # real EfficientNet-Lite weights (see README: Tests and CI)


def test_neighbour_labels_agree_with_the_query(fmnist_store):
    """Fashion-MNIST test images against the 2,000-image train part of the store."""
    s = StoreSearcher(fmnist_store)
    meta = fmnist_store.metadata()
    test_ids = [r["id"] for r in meta if r["split"] == "test"]
    hits = s.search_ids(test_ids, k=10, where={"split": "train"})
    agree = np.mean([[h.label == meta[q]["label"] for h in hs] for q, hs in zip(test_ids, hits)])
    assert all(h.metadata["split"] == "train" for hs in hits for h in hs)
    assert agree >= 0.70, agree  # 0.75 measured with 200 per class; chance is 0.1


def test_a_training_image_finds_itself_first(fmnist_store):
    s = StoreSearcher(fmnist_store)
    row = next(r for r in fmnist_store.metadata() if r["split"] == "train" and r["label"] == "bag")
    hits = s.search_inputs([row["path"]], k=10)[0]
    assert hits[0].id == row["id"] and abs(hits[0].score - 1.0) < 1e-4
    assert sum(h.label == "bag" for h in hits) >= 7


def test_search_cli(cli, fmnist_store):
    row = fmnist_store.row(10)
    proc = cli("search", fmnist_store.root, "--image", row["path"], "-k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)
    assert hits[0]["id"] == 10 and hits[0]["metadata"]["label"] == row["label"] and len(hits) == 3
    bad = cli("search", fmnist_store.root, "--id", "999999")
    assert bad.returncode == 1 and "no row 999999" in bad.stderr
