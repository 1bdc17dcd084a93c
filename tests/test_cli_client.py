"""``embedsvc client``: every RPC from the command line against a real server, printing the same
JSON shapes as the local commands (numbers as numbers)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY, run_cli
from embedsvc.service.config import ServeConfig
from embedsvc.service.grpc_server import Server
from test_cli_findings import one_error_line


@pytest.fixture(scope="module")
def served(tiny_store, tmp_path_factory):
    """A server with the tiny backbone as default and a head trained on the tiny store."""
    data_dir = tmp_path_factory.mktemp("data")
    head = tmp_path_factory.mktemp("heads") / "fmnist"
    proc = run_cli("train-head", tiny_store.root, "--out", head, "--register", data_dir, "--quiet")
    assert proc.returncode == 0, proc.stderr
    srv = Server(ServeConfig(port=0, data_dir=str(data_dir), default_backbone=TINY)).start()
    yield srv, head
    srv.stop(grace=5)


def client(cli, srv, *args):
    proc = cli("client", args[0], "--server", f"127.0.0.1:{srv.port}", *args[1:])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_rpc_has_a_client_command(cli, served, tiny_store):
    srv, _ = served
    images = [tiny_store.row(i)["path"] for i in (0, 1)]
    assert client(cli, srv, "health") == {"status": "SERVING"}
    info = client(cli, srv, "info")
    assert info["default_backbone"] == TINY and isinstance(info["batching"]["max_batch_size"], int)
    models = {m["name"]: m for m in client(cli, srv, "models")}
    assert models[TINY]["dim"] == 256 and models[TINY]["default"] is True
    assert models[TINY]["loaded"] is True
    heads = {h["name"]: h for h in client(cli, srv, "heads")}
    assert heads["fmnist"]["available"] is True and heads["fmnist"]["kind"] == "logreg"
    vecs = client(cli, srv, "embed", *images)
    assert [v["dim"] for v in vecs] == [256, 256]
    streamed = client(cli, srv, "embed-stream", *images)
    assert [v["id"] for v in streamed] == [v["id"] for v in vecs]
    assert np.allclose([v["vector"] for v in streamed], [v["vector"] for v in vecs], atol=1e-4)
    up = client(cli, srv, "upsert", "--index", "cat", *images, "--first-id", 7)
    assert up == {"upserted": 2, "total": 2, "ids": [7, 8], "skipped": []}
    assert client(cli, srv, "indexes")[0]["count"] == 2  # a number, not "2"
    assert client(cli, srv, "delete", "--index", "cat", 7) == {"deleted": 1, "total": 1}


def test_upsert_calls_never_reuse_ids(cli, served, tiny_store):
    """5 apples then 5 cats: the server numbers each call after the last, so nothing is
    replaced unless ids are named (--first-id) or taken from the bytes (--content-ids)."""
    srv, _ = served
    apples = [tiny_store.row(i)["path"] for i in range(10, 15)]
    cats = [tiny_store.row(i)["path"] for i in range(15, 20)]
    first = client(cli, srv, "upsert", "--index", "ids", *apples, "--label", "apple")
    second = client(cli, srv, "upsert", "--index", "ids", *cats, "--label", "cat")
    assert first["ids"] == [0, 1, 2, 3, 4] and second["ids"] == [5, 6, 7, 8, 9]
    assert second["total"] == 10
    hashed = client(cli, srv, "upsert", "--index", "ids", apples[0], "--content-ids")
    again = client(cli, srv, "upsert", "--index", "ids", apples[0], "--content-ids")
    assert again["ids"] == hashed["ids"] and again["total"] == 11  # the same bytes, the same id
    replaced = client(cli, srv, "upsert", "--index", "ids", cats[0], "--first-id", 0)
    assert replaced == {"upserted": 1, "total": 11, "ids": [0], "skipped": []}


def test_local_and_client_json_have_one_shape(cli, served, tiny_store):
    srv, head = served
    image = tiny_store.row(5)["path"]
    local = json.loads(cli("classify", image, "--head", head, "--top", 3, "--json").stdout)
    remote = client(cli, srv, "classify", image, "--head", "fmnist", "--top", 3)
    assert local[0].keys() == remote[0].keys() and local[0]["top"][0].keys() == remote[0]["top"][0].keys()
    assert local[0]["label"] == remote[0]["label"]
    client(cli, srv, "upsert", "--index", "shape", image, "--label", "x", "--first-id", 1)
    remote_hits = client(cli, srv, "search", "--index", "shape", "--image", image, "-k", 1)
    local_hits = json.loads(cli("search", tiny_store.root, "--image", image, "-k", 1, "--json").stdout)
    assert remote_hits[0].keys() == local_hits[0].keys() == {"id", "score", "metadata"}


def test_a_server_error_is_one_line(cli, served, tiny_store):
    srv, _ = served
    proc = cli("client", "classify", tiny_store.row(0)["path"], "--server", f"127.0.0.1:{srv.port}",
               "--head", "nope")
    one_error_line(proc, 1, "NOT_FOUND", "nope")
