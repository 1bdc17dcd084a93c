"""Nothing a client stores can break a read: the text that once got acknowledged and then
failed every read of its collection is refused by both transports, naming the field, and a
collection that holds such rows (written by the code before the check, tests/fixtures/) is
served without an error by every read."""
from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from conftest import TINY
from embedsvc.client import Client
from embedsvc.service.config import ServeConfig
from embedsvc.service.grpc_server import Server
from embedsvc.v1 import embedsvc_pb2 as pb

FIXTURE = Path(__file__).with_name("fixtures") / "unreadable-metadata"
# (raw JSON metadata, what the refusal must name); the six the outside probe got stored
BAD = [(r'{"path": "x\u0000y"}', "NUL"), ('{"path": "' + "p" * 300 + '"}', "component"),
       ('{"path": "' + "a/" * 3000 + '"}', "bytes"), (r'{"label": "\ud800"}', "surrogate"),
       (r'{"\ud800": "x"}', "surrogate"), (r'{"path": "\udc80.png"}', "surrogate")]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("stored")
    shutil.copytree(FIXTURE, data / "indexes" / "old")
    srv = Server(ServeConfig(port=0, http_port=0, data_dir=str(data),
                             default_backbone=TINY)).start()
    yield srv, httpx.Client(base_url=f"http://127.0.0.1:{srv.http_port}", timeout=30)
    srv.stop(grace=5)


def _dim(srv) -> int:
    with srv.core.models.lease() as runner:
        return runner.encoder.backbone.cfg.dim


def test_each_bad_text_is_refused_over_http_naming_the_field(served):
    srv, http = served
    vector = np.ones(_dim(srv)).tolist()
    for meta, why in BAD:
        body = f'{{"items": [{{"vector": {vector}, "metadata": {meta}}}]}}'
        r = http.post("/v1/indexes/fresh/upsert", content=body,
                      headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (meta[:40], r.text)
        message = r.json()["error"]["message"]
        assert "item #0" in message and "metadata" in message and why in message, message
    r = http.post("/v1/indexes/fresh/upsert", content=f'{{"items": [{{"id": 1, "vector": '
                                                      f'{vector}, "metadata": {{"label": '
                                                      f'"ok"}}}}]}}',
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text  # nothing of the refused writes is left behind
    assert r.json()["total"] == 1
    r = http.post("/v1/classify", content=r'{"images": [{"id": "\ud800", "data": "AAAA"}]}',
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "id of input #0" in r.json()["error"]["message"], r.text
    r = http.request("DELETE", "/v1/indexes/fresh/items", json={"ids": [True]})
    assert r.status_code == 400, r.text
    counts = {i["name"]: i["count"] for i in http.get("/v1/indexes").json()["indexes"]}
    assert counts["fresh"] == 1  # id 1 was not deleted


def test_each_bad_text_is_refused_over_grpc(served):
    srv, _ = served
    vector = pb.Vector(values=np.ones(_dim(srv)).tolist())
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        upsert = channel.unary_unary("/embedsvc.v1.EmbeddingService/Upsert")
        embed = channel.unary_unary("/embedsvc.v1.EmbeddingService/Embed")
        for meta, why in BAD:
            import json

            # protobuf strings are UTF-8: a surrogate travels as its CESU-8 bytes, which the
            # server's parser refuses; the others reach the metadata check
            surrogate = "\\ud" in meta or "\\udc" in meta
            parsed = {k.replace("\ud800", "QQQ"): v.replace("\ud800", "QQQ").replace(
                "\udc80", "QQQ") for k, v in json.loads(meta).items()}
            raw = pb.UpsertRequest(index="fresh", items=[pb.UpsertItem(
                vector=vector, metadata=parsed)]).SerializeToString()
            raw = raw.replace(b"QQQ", b"\xed\xa0\x80")
            with pytest.raises(grpc.RpcError) as err:
                upsert(raw, timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
            details = err.value.details()
            assert (why if not surrogate else "bad UTF-8 (in items[0].metadata[0].") in details, \
                details
        raw = pb.EmbedRequest(images=[pb.Image(id="QQQ", data=b"x")]).SerializeToString()
        with pytest.raises(grpc.RpcError) as err:
            embed(raw.replace(b"QQQ", b"\xed\xa0\x80"), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:  # a NUL is valid UTF-8: the check names it
            Client(f"127.0.0.1:{srv.port}").embed([b"x"], ids=["a\x00b"], timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "id of input #0" in err.value.details()


def test_a_collection_holding_such_rows_is_served(served):
    """Written by the code before the check (tests/fixtures/make_unreadable_metadata.py)."""
    srv, http = served
    query = np.ones(_dim(srv)).tolist()
    r = http.post("/v1/search", json={"index": "old", "vector": query, "k": 10})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 6
    labels = [h["metadata"].get("label") for h in hits if "label" in h["metadata"]]
    assert labels == ["\\ud800"]  # escaped, not lost
    m = http.get("/v1/indexes/old/map", params={"limit": 10})
    assert m.status_code == 200 and m.json()["shown"] == 6, m.text
    for item in range(6):
        t = http.get(f"/v1/indexes/old/items/{item}/thumbnail")
        assert t.status_code == 404, t.text  # no image, and no path inside the data dir
    with Client(f"127.0.0.1:{srv.port}") as c:
        found = c.search("old", vector=query, k=10, timeout=30)
    assert len(found) == 6
