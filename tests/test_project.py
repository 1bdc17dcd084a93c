"""``embedsvc project``: a store of fewer dimensions, its PCA kept with it and applied to its
queries; projected and unprojected vectors are never mixed."""
import json

import numpy as np

from embedsvc.projection import fit_projection, fit_rows
from embedsvc.store import EmbeddingStore


def test_a_projected_store_holds_its_projection_and_projects_its_queries(cli, tiny_store, tmp_path):
    out = tmp_path / "p32"
    r = cli("project", tiny_store.root, "--dimensions", "32", "--out", out)
    assert r.returncode == 0, r.stderr
    p = EmbeddingStore.open(out)
    assert p.count == tiny_store.count and p.dim == 32
    info = p.provenance["projection"]
    assert info["kind"] == "pca" and info["from_dim"] == tiny_store.dim and info["dim"] == 32
    projection = p.projection()
    assert np.array_equal(p.vectors(), projection.apply(tiny_store.vectors()))
    assert np.allclose(np.linalg.norm(p.vectors(), axis=1), 1, atol=1e-5)
    assert [r["path"] for r in p.metadata()] == [r["path"] for r in tiny_store.metadata()]
    # the same store projected again: bitwise the same projection
    again = fit_projection(tiny_store.take(fit_rows(tiny_store.count)), 32, tiny_store.provenance)
    assert again.sha256 == info["sha256"]
    # PCA keeps most of the neighbourhoods: the projected top-10 overlaps the full one
    full = tiny_store.vectors() @ tiny_store.vectors()[:50].T
    small = p.vectors() @ p.vectors()[:50].T
    overlap = np.mean([len(set(np.argsort(-full[:, j])[:10]) & set(np.argsort(-small[:, j])[:10])) / 10
                       for j in range(50)])
    assert overlap > 0.5, overlap

    # an image query is embedded as the source store's were, then projected: row 7's own image
    # finds row 7 with score 1
    row = tiny_store.row(7)
    hits = json.loads(cli("search", out, "--image", row["path"], "-k", "3", "--json").stdout)
    assert hits[0]["id"] == 7 and abs(hits[0]["score"] - 1) < 1e-4
    assert cli("index", "build", out, "--kind", "flat", "--quiet").returncode == 0
    assert json.loads(cli("search", out, "--id", "7", "-k", "1", "--json").stdout)[0]["id"] == 7


def test_projection_errors_are_one_line_and_leave_nothing(cli, tiny_store, tmp_path):
    out = tmp_path / "p16"
    assert cli("project", tiny_store.root, "--dimensions", "16", "--out", out).returncode == 0
    for args, says in (((out, "--dimensions", "8", "--out", tmp_path / "x"), "projected already"),
                       ((tiny_store.root, "--dimensions", str(tiny_store.dim), "--out", tmp_path / "x"),
                        f"from 1 to {tiny_store.dim - 1}"),
                       ((tiny_store.root, "--dimensions", "16", "--out", out), "--overwrite")):
        r = cli("project", *args)
        assert r.returncode == 1 and says in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p16"]
    # raw vectors never join a projected store
    raw = cli("embed-dataset", tiny_store.row(0)["path"].rsplit("/", 1)[0], "--out", out,
              "--backbone", "tiny-random", "--quiet")
    assert raw.returncode == 1 and "projection" in raw.stderr
    assert EmbeddingStore.open(out).count == tiny_store.count
