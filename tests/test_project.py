"""``embedsvc project``: a store of fewer dimensions, its PCA kept with it and applied to its
queries; projected and unprojected vectors are never mixed."""
import json

import numpy as np
import pytest

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


def test_dimensions_over_both_transports_equal_the_clis_projection(cli, tiny_store, tmp_path):
    """A server given a projected store (serve.toml ``projections``) answers ``dimensions`` in
    /v1/embeddings and gRPC Embed with the vectors ``embed --projection STORE`` prints; other
    dimensions are refused naming the ones it has. The store imported as a collection projects
    what is stored in it and searched by it."""
    import base64

    import grpc
    import httpx

    from embedsvc.service.config import ServeConfig
    from embedsvc.service.grpc_server import Server
    from embedsvc.v1 import embedsvc_pb2 as pb
    from embedsvc.v1 import embedsvc_pb2_grpc as pb_grpc

    out = tmp_path / "p32"
    assert cli("project", tiny_store.root, "--dimensions", "32", "--out", out).returncode == 0
    image = tiny_store.row(3)["path"]
    local = cli("embed", image, "--projection", out, "--out", tmp_path / "q.npy")
    assert local.returncode == 0, local.stderr
    want = np.load(tmp_path / "q.npy")[0]  # the exact float32 values (--json rounds them)
    assert want.shape == (32,)
    meta = json.loads((tmp_path / "q.npy.json").read_text())
    assert meta["provenance"]["projection"]["dim"] == 32

    # a head trained on the projected store keeps its projection: given an image, locally and
    # by a server, it answers what it answers for the store's projected row
    trained = cli("train-head", out, "--kind", "logreg", "--out", tmp_path / "h32", "--quiet",
                  "--register", tmp_path / "data")
    assert trained.returncode == 0, trained.stderr
    from classifiers.heads.artifact import Head

    head = Head.load(tmp_path / "h32")
    assert head.projection is not None and head.projection.sha256 == meta["provenance"]["projection"]["sha256"]
    row_proba = head.estimator.predict_proba(EmbeddingStore.open(out).vector(3)[None])[0]
    local = cli("classify", "--head", tmp_path / "h32", image, "--json", "--top", "1")
    assert local.returncode == 0, local.stderr
    answer = json.loads(local.stdout)[0]
    assert answer["label"] == head.classes[int(row_proba.argmax())]
    assert abs(answer["probability"] - row_proba.max()) < 1e-5
    srv = Server(ServeConfig(port=0, http_port=0, data_dir=str(tmp_path / "data"), default_backbone="tiny-random",
                             projections=[str(out)])).start()
    try:
        data = base64.b64encode(open(image, "rb").read()).decode()
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.http_port}", timeout=60) as http:
            body = {"model": "tiny-random", "input": [{"image": data}], "dimensions": 32,
                    "encoding_format": "base64"}
            r = http.post("/v1/embeddings", json=body)
            assert r.status_code == 200, r.text
            got = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), "<f4")
            assert np.array_equal(got, want)
            same = http.post("/v1/embeddings", json={**body, "dimensions": tiny_store.dim})
            assert len(np.frombuffer(base64.b64decode(same.json()["data"][0]["embedding"]), "<f4")) == tiny_store.dim
            bad = http.post("/v1/embeddings", json={**body, "dimensions": 16})
            assert bad.status_code == 400 and "projects them to: 32" in bad.text, bad.text
            raw = http.post("/v1/embeddings", json={**body, "normalize": False})
            assert raw.status_code == 400 and "raw" in raw.text, raw.text
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = pb_grpc.EmbeddingServiceStub(ch)
            resp = stub.Embed(pb.EmbedRequest(images=[pb.Image(data=open(image, "rb").read())],
                                              options=pb.EmbedOptions(backbone="tiny-random", dimensions=32)))
            assert np.array_equal(np.array(resp.vectors[0].values, np.float32), want)
            assert resp.provenance.dim == 32
            with pytest.raises(grpc.RpcError) as exc:
                stub.Embed(pb.EmbedRequest(images=[pb.Image(data=open(image, "rb").read())],
                                           options=pb.EmbedOptions(backbone="tiny-random", dimensions=16)))
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "32" in exc.value.details()
        from embedsvc.client import Client

        with Client(f"127.0.0.1:{srv.port}") as client:
            vectors, _ = client.embed([image], backbone="tiny-random", dimensions=32)
            assert np.array_equal(vectors[0], want)
            # a projected store imported as a collection keeps its projection: an image is
            # projected before it is searched or stored, over both transports
            imported = cli("collection", "import", out, "--data-dir", tmp_path / "data",
                           "--name", "small", "--quiet")
            assert imported.returncode == 0, imported.stderr
            hit = client.search("small", image=image, k=1)[0]
            assert hit["id"] == 3 and hit["score"] > 0.9999, hit
            other = tiny_store.row(5)["path"]
            with httpx.Client(base_url=f"http://127.0.0.1:{srv.http_port}", timeout=60) as http:
                r = http.post("/v1/indexes/small/upsert", json={"items": [{
                    "id": 9999, "image": base64.b64encode(open(other, "rb").read()).decode()}]})
                assert r.status_code == 200, r.text
            stored = client.search("small", vector=EmbeddingStore.open(out).vector(5).tolist(), k=2)
            assert {h["id"] for h in stored} == {5, 9999} and stored[1]["score"] > 0.9999, stored
            with pytest.raises(grpc.RpcError) as exc:  # a vector of the source's dimension
                client.search("small", vector=tiny_store.vector(5).tolist(), k=1)
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # a new collection made by Upsert with dimensions keeps the server's projection
            client.upsert("fresh", [{"id": 3, "image": image}], dimensions=32)
            assert (tmp_path / "data" / "indexes" / "fresh" / "projection.npz").is_file()
            hit = client.search("fresh", vector=want.tolist(), k=1)[0]
            assert hit["id"] == 3 and hit["score"] > 0.9999
            assert client.search("fresh", image=other, k=1)[0]["id"] == 3
            for name, dims in (("fresh", 16), ("other", 16)):  # no such projection: no index
                with pytest.raises(grpc.RpcError) as exc:
                    client.upsert(name, [{"image": image}], dimensions=dims)
                assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
            assert sorted(i.name for i in client.indexes()) == ["fresh", "small"]
            served = client.classify([image], head="h32", top_k=1)[0]
            assert served["label"] == answer["label"]
            assert abs(served["probability"] - row_proba.max()) < 1e-5
    finally:
        srv.stop(grace=5)
    # a store that is not projected cannot be listed
    with pytest.raises(Exception, match="not a projected store"):
        Server(ServeConfig(port=0, data_dir=str(tmp_path / "data2"), default_backbone="tiny-random",
                           projections=[str(tiny_store.root)])).start()
