"""Issue 29's small findings on a newcomer's path, each through the CLI (or the HTTP API): what a
command says when a filter matches nothing, a file cannot be read, an image is tiny, a folder
has one class, a flag is mistyped; how models are listed; and that a one-shot search starts
without torch once its graph is cached."""
from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from conftest import TINY, run_importtime
from embedsvc.wording import count


def test_a_filter_value_the_store_lacks_is_an_error_that_lists_the_values(cli, tiny_store):
    r = cli("search", tiny_store.root, "--id", 0, "--split", "validation")
    assert r.returncode == 1 and "no split 'validation'" in r.stderr
    assert "'test', 'train'" in r.stderr
    r = cli("search", tiny_store.root, "--id", 0, "--label", "Bag")
    assert r.returncode == 1 and "'Bag'" in r.stderr and "'bag'" in r.stderr
    ok = cli("search", tiny_store.root, "--id", 0, "--split", "train", "--json")
    assert ok.returncode == 0 and all(h["metadata"]["split"] == "train" for h in json.loads(ok.stdout))


def test_an_unknown_flag_is_named_with_the_nearest_one(cli):
    r = cli("embed-dataset", "photos", "--ot", "store")
    assert r.returncode == 2 and "unknown option --ot; did you mean --out?" in r.stderr
    assert "required" not in r.stderr
    r = cli("search", "s", "--id", "1", "-k5", "--lable", "x")
    assert r.returncode == 2 and "did you mean --label?" in r.stderr
    r = cli("train-head", "s", "--out", "h", "--seed", "-1")  # a negative value is no flag
    assert r.returncode == 2 and "--seed" in r.stderr and "unknown option" not in r.stderr


def test_plurals():
    assert [count(1, "class"), count(2, "class"), count(1, "epoch"), count(0, "image")] == [
        "1 class", "2 classes", "1 epoch", "0 images"]


def test_tiny_images_are_embedded_with_a_counted_warning(cli, photos, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(photos["coffee"], src / "coffee.png")
    Image.open(photos["chelsea"]).resize((5, 5)).save(src / "speck.png")
    r = cli("embed-dataset", src, "--out", tmp_path / "s", "--backbone", TINY, "--quiet")
    assert r.returncode == 0 and "added 2 vectors" in r.stdout
    (line,) = [l for l in r.stderr.splitlines() if "smaller than 32 px" in l]
    assert line.startswith("embedsvc: warning: 1 image smaller") and "speck.png' (5x5)" in line


def test_the_advisor_counts_readable_images_and_refuses_one_class(cli, photos, tmp_path):
    data = tmp_path / "data"
    for label, photo in (("cat", "chelsea"), ("cup", "coffee")):
        (data / label).mkdir(parents=True)
        for i in range(4):
            shutil.copy(photos[photo], data / label / f"{i}.png")
    (data / "cup" / "broken.jpg").write_text("not an image")
    r = cli("advise", data, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "8 labelled images in 2 classes (4..4 per class); 1 could not be read" in r.stdout
    assert "broken.jpg" in r.stderr
    shutil.rmtree(data / "cup")
    one = cli("advise", data, "--quiet")
    assert one.returncode == 1 and "a head needs at least 2 classes" in one.stderr
    assert "'cat'" in one.stderr


def test_models_lists_families_apart_and_spells_them_one_way(tmp_path):
    import httpx

    from embedsvc.client import Client
    from embedsvc.service.config import ServeConfig
    from embedsvc.service.grpc_server import Server

    srv = Server(ServeConfig(port=0, http_port=0, data_dir=str(tmp_path), default_backbone=TINY)).start()
    try:
        body = httpx.get(f"http://127.0.0.1:{srv.http_port}/v1/models", timeout=30).json()
        grpc_rows = {m.name: m.family for m in Client(f"127.0.0.1:{srv.port}").models()}
        missing = httpx.post(f"http://127.0.0.1:{srv.http_port}/v1/embeddings", timeout=30,
                             json={"model": "nope", "input": ["aGk="]})
    finally:
        srv.stop(grace=5)
    models = [m["id"] for m in body["data"]]
    families = [f["name"] for f in body["families"]]
    assert TINY in models and not any("<" in m for m in models)
    assert {"timm:<model>", "torchvision:<model>", "open_clip:<model>"} <= set(families)
    assert grpc_rows["open_clip:<model>"] and not grpc_rows[TINY]
    assert missing.status_code == 404
    message = missing.json()["error"]["message"]
    assert all(f in message for f in families if not f.startswith("finetuned")), message


@pytest.mark.slow
def test_a_second_search_by_image_starts_without_torch(photos, tmp_path, monkeypatch):
    """The first `search --image` caches the store's ONNX graph; the next one imports no torch
    or timm and finds the same rows with the same scores (to 4 decimals)."""
    monkeypatch.setenv("EMBEDSVC_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        shutil.copy(photos[name], src / f"{name}.png")
    from embedsvc.extract import FeatureExtractor
    from embedsvc.index.store_index import build_store_index
    from embedsvc.search import StoreSearcher
    from embedsvc.store import EmbeddingStore, embed_dataset

    embed_dataset(src, tmp_path / "s", progress=False)
    build_store_index(EmbeddingStore.open(tmp_path / "s"), "default", "auto", 0.95, 4 << 30,
                      "auto", progress=False)
    searcher = StoreSearcher(tmp_path / "s")  # the first search: torch, and it fills the cache
    a = searcher.search_inputs([photos["coffee"]], 4)[0]
    assert isinstance(searcher.extractor(), FeatureExtractor)
    second, modules = run_importtime("search", tmp_path / "s", "--image", photos["coffee"],
                                     "-k", "4", "--json")
    assert second.returncode == 0, second.stderr
    assert "torch" not in modules and "timm" not in modules and "onnxruntime" in modules
    b = json.loads(second.stdout)
    assert [h.id for h in a] == [h["id"] for h in b]
    assert [round(h.score, 4) for h in a] == [round(h["score"], 4) for h in b]
    assert b[0]["metadata"]["path"].endswith("coffee.png") and b[0]["score"] > 0.9999
