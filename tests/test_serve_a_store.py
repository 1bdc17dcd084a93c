"""A store becomes a served collection without embedding again, and a folder of photos goes to a
server in one command, a bad file named and left out."""
from __future__ import annotations

import base64

import httpx
import pytest

from conftest import TINY
from embedsvc.client import Client
from embedsvc.service.config import ServeConfig
from embedsvc.service.grpc_server import Server
from embedsvc.store import EmbeddingStore


@pytest.fixture(scope="module")
def tree(photo_images, tmp_path_factory):
    """Three classes of four crops each, as a user's class-folder tree."""
    root = tmp_path_factory.mktemp("tree") / "photos"
    for label in ("astronaut", "chelsea", "coffee"):
        img = photo_images[label].convert("RGB")
        (root / label).mkdir(parents=True)
        w, h = img.size
        for n in range(4):
            box = (n * w // 10, n * h // 12, w - n * w // 9, h - n * h // 14)
            img.crop(box).save(root / label / f"{label}-{n}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(ServeConfig(port=0, http_port=0, data_dir=str(tmp_path_factory.mktemp("data")),
                             default_backbone=TINY)).start()
    yield srv
    srv.stop(grace=5)


def test_an_imported_store_is_searched_over_both_transports(cli, tree, server, tmp_path):
    made = cli("embed-dataset", tree, "--out", tmp_path / "store", "--backbone", TINY, "--quiet")
    assert made.returncode == 0, made.stderr
    imported = cli("collection", "import", tmp_path / "store", "--data-dir", server.config.data_dir,
                   "--name", "photos", "--quiet")
    assert imported.returncode == 0, imported.stderr
    assert "imported 12 vectors" in imported.stdout

    store = EmbeddingStore.open(tmp_path / "store")
    grpc = Client(f"127.0.0.1:{server.port}")
    http = httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=60)
    assert {i.name: i.count for i in grpc.indexes()}["photos"] == 12
    for row in store.metadata():
        data = open(row["path"], "rb").read()
        (first, *_), = [grpc.search("photos", image=data, k=3)]
        assert first["id"] == row["id"] and first["metadata"]["label"] == row["label"]
        assert first["metadata"]["path"] == row["path"] and first["score"] > 0.999
        hits = http.post("/v1/search", json={"index": "photos", "k": 3, "image": {
            "data": base64.b64encode(data).decode()}}).json()["hits"]
        assert hits[0]["id"] == row["id"] and hits[0]["metadata"]["label"] == row["label"]
    # the vectors are the store's, not embedded again
    got = grpc.search("photos", vector=store.vector(5).tolist(), k=1)[0]
    assert got["id"] == 5 and got["score"] == pytest.approx(1.0, abs=1e-5)

    again = cli("collection", "import", tmp_path / "store", "--data-dir", server.config.data_dir,
                "--name", "photos", "--quiet")
    assert again.returncode == 1 and "already exists" in again.stderr
    other = cli("embed-dataset", tree, "--out", tmp_path / "late", "--tap", "late", "--backbone",
                TINY, "--quiet")
    assert other.returncode == 0, other.stderr
    refused = cli("collection", "import", tmp_path / "late", "--data-dir",
                  server.config.data_dir, "--name", "late", "--quiet")
    assert refused.returncode == 1 and "pre_logits" in refused.stderr
    assert "late" not in {i.name for i in grpc.indexes()}


def test_client_upsert_takes_a_folder_and_names_the_file_it_cannot_read(cli, tree, server,
                                                                       tmp_path, monkeypatch):
    import shutil

    mine = tmp_path / "mine"
    shutil.copytree(tree, mine)
    (mine / "coffee" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no jpeg")
    monkeypatch.setenv("EMBEDSVC_SERVER", f"127.0.0.1:{server.port}")  # no --server
    r = cli("client", "upsert", "--index", "mine", mine, "--quiet")
    assert r.returncode == 0, r.stderr
    assert str(mine / "coffee" / "broken.jpg") in r.stderr and "'#" not in r.stderr
    import json

    answer = json.loads(r.stdout)
    assert answer["upserted"] == 12 and answer["total"] == 12
    assert [s["path"] for s in answer["skipped"]] == [str(mine / "coffee" / "broken.jpg")]
    grpc = Client(f"127.0.0.1:{server.port}")
    hit = grpc.search("mine", image=(mine / "chelsea" / "chelsea-2.jpg").read_bytes(), k=1)[0]
    assert hit["metadata"]["label"] == "chelsea"
    assert hit["metadata"]["path"] == str(mine / "chelsea" / "chelsea-2.jpg")
