"""The HTTP/JSON API against a real server on localhost (gRPC beside it, one core): every
endpoint's success, each error status, the token, the limits, and the OpenAI Python client."""
from __future__ import annotations

import base64
import concurrent.futures as cf
import contextlib
import io
import json
import os

import httpx
import numpy as np
import pytest
from PIL import Image

from classifiers.heads import TrainHeadConfig, train_head
from conftest import TINY, run_cli, wait_for
from embedsvc.client import Client
from embedsvc.service.config import ServeConfig
from embedsvc.service.grpc_server import Server

TOKEN = "s3cret-token"
LIMIT_IMAGES, LIMIT_BODY = 4, 2 << 20


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def img(data: bytes | str) -> dict:
    """An image in /v1/embeddings' typed form (a plain string there is a text)."""
    return {"image": data if isinstance(data, str) else b64(data)}


def png(seed: int, size: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def served(tiny_store, tmp_path_factory):
    data = tmp_path_factory.mktemp("http")
    train_head(tiny_store.root, data / "heads" / "tiny", TrainHeadConfig(kind="centroid"),
               progress=False)
    (data / "heads" / "broken").mkdir()
    (data / "heads" / "broken" / "head.json").write_text("{not json")
    srv = Server(ServeConfig(port=0, http_port=0, metrics_port=0, data_dir=str(data),
                             default_backbone=TINY, auth_token=TOKEN,
                             max_images_per_request=LIMIT_IMAGES, max_message_bytes=LIMIT_BODY,
                             max_bytes_per_image=256 << 10)).start()
    http = httpx.Client(base_url=f"http://127.0.0.1:{srv.http_port}", timeout=60,
                        headers={"Authorization": f"Bearer {TOKEN}"})
    yield srv, http, data
    http.close()
    srv.stop(grace=5)


def error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code and body["type"] == code.lower(), body
    return body["message"]


# -- embeddings ------------------------------------------------------------------------------------
def test_openai_client_gets_what_grpc_embed_gives(served, photos):
    from openai import OpenAI

    srv, _, _ = served
    photo = photos["chelsea"].read_bytes()
    grpc_vec = list(Client(f"127.0.0.1:{srv.port}", token=TOKEN).embed([photo])[1]
                    .vectors[0].values)
    client = OpenAI(base_url=f"http://127.0.0.1:{srv.http_port}/v1", api_key=TOKEN, max_retries=0)
    default = client.embeddings.create(model=TINY, input=[img(photo)])  # asks for base64
    floats = client.embeddings.create(model=TINY, input=[img(f"data:image/png;base64,{b64(photo)}")],
                                      encoding_format="float")
    assert default.data[0].embedding == grpc_vec
    assert floats.data[0].embedding == grpc_vec
    assert default.model == TINY and len(grpc_vec) == 256
    assert [m.id for m in client.models.list()][:1] == ["effnet-lite0"]
    with pytest.raises(Exception) as raised:  # the client's own error class, from our body
        client.embeddings.create(model="no-such-model", input=[img(photo)])
    assert raised.value.status_code == 404 and "no-such-model" in str(raised.value)


def test_embeddings_options_and_shape(served):
    _, http, _ = served
    images = [img(png(1)), img(f"data:image/png;base64,{b64(png(2))}")]
    r = http.post("/v1/embeddings", json={"model": "default", "input": images})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1] and body["usage"]["images"] == 2
    v = np.array(body["data"][0]["embedding"])
    assert abs(np.linalg.norm(v) - 1) < 1e-5 and body["provenance"]["dim"] == 256
    raw = http.post("/v1/embeddings", json={"model": TINY, "input": images[:1],
                                            "normalize": False, "encoding_format": "base64"})
    raw_v = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), "<f4")
    assert not raw.json()["provenance"]["normalized"]
    np.testing.assert_allclose(raw_v / np.linalg.norm(raw_v), v, atol=1e-6)
    # base64 as the `base64` command writes it: line breaks every 76 characters
    wrapped = base64.encodebytes(png(1)).decode()
    one = [http.post("/v1/embeddings", json={"model": "", "input": [it]}).json()["data"][0][
        "embedding"] for it in (img(wrapped), images[0])]
    assert one[0] == one[1]


def test_invalid_requests_are_400_naming_the_problem(served):
    _, http, _ = served
    cases = [
        ({"model": "", "input": [img("not base64!")]}, "input[0] is neither base64"),
        ({"model": "", "input": [img("data:image/png,rawbytes")]}, "a data URI must be base64"),
        ({"model": "", "input": [img(png(1)), img(b"not an image")]},
         "cannot read image 'input[1]': not a recognised image format"),
        ({"model": "", "input": [img(png(1))], "dimensions": 3}, "projects them to: none"),
        ({"input": [img(png(1))]}, "model: Field required"),
        ({"model": "", "input": [img(png(1))], "encodng_format": "float"}, "encodng_format"),
        ({"model": "", "input": [img(png(1))], "encoding_format": "int4"}, "encoding_format"),
        ({"model": "", "input": [img(png(i)) for i in range(LIMIT_IMAGES + 1)]},
         f"{LIMIT_IMAGES + 1} images in one request; the limit is {LIMIT_IMAGES}"),
        ({"model": "", "input": []}, "the request has no images"),
        ({"model": "", "input": [img(png(1, size=400))]}, "the limit is 262144"),
    ]
    for body, says in cases:
        assert says in error(http.post("/v1/embeddings", json=body), 400, "INVALID_ARGUMENT"), body
    r = http.post("/v1/embeddings", content=b"{oops", headers={"Content-Type": "application/json"})
    error(r, 400, "INVALID_ARGUMENT")
    form = http.post("/v1/embeddings", content=json.dumps({"model": "", "input": "x"}),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert "Content-Type: application/json" in error(form, 400, "INVALID_ARGUMENT")


# -- the token, the limits, the statuses -----------------------------------------------------------
def test_the_token_guards_the_api_but_not_health_or_the_page(served):
    srv, http, _ = served
    base = str(http.base_url)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for method, path in [("GET", "/v1/models"), ("GET", "/v1/info"),
                             ("POST", "/v1/embeddings"), ("DELETE", "/v1/indexes/x/items"),
                             ("GET", "/v1/indexes/x/items/0/thumbnail")]:
            r = httpx.request(method, base + path, headers=headers, json={})
            assert "bearer token" in error(r, 401, "UNAUTHENTICATED")
            assert r.headers["www-authenticate"] == "Bearer"
    for path in ("/healthz", "/readyz", "/openapi.json", "/", "/static/app.js"):
        assert httpx.get(base + path).status_code == 200, path
    page = httpx.get(base + "/")
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_body_and_admission_limits(served):
    srv, http, _ = served
    big = {"model": "", "input": ["A" * LIMIT_BODY]}
    assert "the limit is" in error(http.post("/v1/embeddings", json=big), 413,
                                   "RESOURCE_EXHAUSTED")

    def chunks():  # no Content-Length: the limit is counted as the body arrives
        for _ in range(LIMIT_BODY // 65536 + 2):
            yield b" " * 65536

    r = http.post("/v1/embeddings", content=chunks(), headers={"Content-Type": "application/json"})
    error(r, 413, "RESOURCE_EXHAUSTED")
    # a slot is given back just after its answer is sent
    wait_for(lambda: srv.core.admission.requests == 0, what="every slot given back")
    with contextlib.ExitStack() as held:  # every request slot taken, as by requests in flight
        for _ in range(srv.config.max_concurrent_requests):
            held.enter_context(srv.core.admission.request(0))
        r = http.post("/v1/embeddings", json={"model": "", "input": [img(png(1))]})
        assert "requests in progress" in error(r, 429, "RESOURCE_EXHAUSTED")
        assert r.headers["retry-after"] == "1"
    r = http.post("/v1/embeddings", json={"model": "", "input": [img(png(1))]},
                  headers={"X-Request-Timeout": "0.000001"})
    error(r, 504, "DEADLINE_EXCEEDED")
    r = http.post("/v1/embeddings", json={"model": "", "input": [img(png(1))]},
                  headers={"X-Request-Timeout": "soon"})
    assert "X-Request-Timeout" in error(r, 400, "INVALID_ARGUMENT")
    ok = http.post("/v1/embeddings", json={"model": "", "input": [img(png(1))]})
    assert ok.status_code == 200  # the refusals left nothing held


def test_draining_answers_503_and_readyz_says_so(tmp_path):
    srv = Server(ServeConfig(port=0, http_port=0, data_dir=str(tmp_path),
                             default_backbone=TINY)).start()
    base = f"http://127.0.0.1:{srv.http_port}"
    try:
        assert httpx.get(base + "/readyz").json() == {"status": "SERVING"}
        srv.core.admission.close()  # what stop() does first
        assert httpx.get(base + "/readyz").status_code == 503
        r = httpx.post(base + "/v1/embeddings", json={"model": "", "input": [img(png(1))]})
        assert "shutting down" in error(r, 503, "UNAVAILABLE")
        assert httpx.get(base + "/healthz").status_code == 200  # alive while it drains
    finally:
        srv.stop(grace=2)


# -- classify, heads, drift ------------------------------------------------------------------------
def test_classify_heads_reports_and_drift(served):
    _, http, data = served
    img = {"id": "a", "data": b64(png(3))}
    r = http.post("/v1/classify", json={"images": [img], "head": "tiny", "top_k": 3})
    res = r.json()["results"][0]
    assert r.status_code == 200 and res["id"] == "a" and len(res["top"]) == 3
    assert 0 <= res["ood_score"] <= 1 and res["label"] == res["top"][0]["label"]
    r = http.post("/v1/classify", json={"images": [img], "head": "tiny", "max_ood_score": 0.0001})
    assert r.json()["results"][0]["abstained"] and r.json()["results"][0]["label"] == "unknown"
    assert "no head named 'nope'" in error(
        http.post("/v1/classify", json={"images": [img], "head": "nope"}), 404, "NOT_FOUND")
    assert "unavailable" in error(http.post("/v1/classify", json={"images": [img],
                                                                  "head": "broken"}),
                                  400, "FAILED_PRECONDITION")
    error(http.post("/v1/classify", json={"images": [img], "top_k": 0}), 400, "INVALID_ARGUMENT")
    error(http.post("/v1/classify", json={"images": [img], "head": "tiny",
                                          "abstain_below": 2}), 400, "INVALID_ARGUMENT")

    heads = {h["name"]: h for h in http.get("/v1/heads").json()["heads"]}
    assert heads["tiny"]["available"] and not heads["broken"]["available"]
    report = http.get("/v1/heads/tiny").json()
    assert report["kind"] == "centroid" and report["figures"] == ["confusion"]
    assert report["metrics"]["n"] == 100 and str(data) not in json.dumps(report)
    assert "store" not in report["training"]
    fig = http.get("/v1/heads/tiny/figures/confusion")
    assert fig.headers["content-type"] == "image/png" and Image.open(io.BytesIO(fig.content)).size
    assert "learning-curve" in error(http.get("/v1/heads/tiny/figures/learning_curve"), 404,
                                     "NOT_FOUND")
    error(http.get("/v1/heads/tiny/figures/secrets"), 400, "INVALID_ARGUMENT")
    error(http.get("/v1/heads/nope"), 404, "NOT_FOUND")
    imagenet = http.get("/v1/heads/imagenet").json()
    assert imagenet["kind"] == "imagenet" and imagenet["backbone"] == TINY and imagenet["note"]
    drift = http.get("/v1/drift", params={"head": "tiny"}).json()["heads"]
    assert drift[0]["head"] == "tiny" and drift[0]["verdict"] == "warming up"
    assert {d["head"] for d in http.get("/v1/drift").json()["heads"]} == {"tiny"}
    error(http.get("/v1/drift", params={"head": "nope"}), 404, "NOT_FOUND")


# -- indexes: upsert, search, thumbnails, map, delete ----------------------------------------------
def test_upsert_search_thumbnails_map_and_delete(served, photos, tmp_path):
    srv, http, data = served
    inside = data / "images"
    inside.mkdir()
    Image.open(photos["coffee"]).save(inside / "coffee.png")
    Image.open(photos["coffee"]).save(inside / "small.jpg", quality=80)
    (inside / "escape.png").symlink_to(photos["chelsea"])  # inside by name, outside in fact
    items = [{"image": b64(png(10 + i)), "metadata": {"label": "even" if i % 2 else "odd"}}
             for i in range(3)]
    r = http.post("/v1/indexes/things/upsert", json={"items": items})
    assert r.json() == {"upserted": 3, "total": 3, "ids": [0, 1, 2]}
    vectors = [{"id": 100, "vector": [1.0] * 256, "metadata": {"label": "odd"}}]
    vectors += [{"id": 200 + i, "vector": np.random.default_rng(i).normal(size=256).tolist(),
                 "metadata": {"label": "path", "path": path}}
                for i, path in enumerate(["images/small.jpg", str(inside / "small.jpg"),
                                          "images/escape.png", str(photos["coffee"]),
                                          "../../etc/passwd", "images/coffee.png"])]
    for part in (vectors[:4], vectors[4:]):  # at most LIMIT_IMAGES items per request
        r = http.post("/v1/indexes/things/upsert", json={"items": part})
        assert r.json()["ids"] == [v["id"] for v in part]
    assert r.json()["total"] == 10

    hits = http.post("/v1/search", json={"index": "things", "image": {"data": b64(png(11))},
                                         "k": 3}).json()["hits"]
    assert hits[0]["id"] == 1 and hits[0]["score"] > 0.999 and hits[0]["thumbnail"]
    hits = http.post("/v1/search", json={"index": "things", "vector": [1.0] * 256, "k": 1,
                                         "where": {"label": "odd"}}).json()["hits"]
    assert hits[0]["id"] == 100 and hits[0]["thumbnail"] is False

    thumb = http.get("/v1/indexes/things/items/1/thumbnail")
    assert thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (48, 48)  # never enlarged
    served_from_path = Image.open(io.BytesIO(
        http.get("/v1/indexes/things/items/200/thumbnail").content))
    assert max(served_from_path.size) == 128  # the data dir's own file, made small
    assert http.get("/v1/indexes/things/items/201/thumbnail").status_code == 200
    for outside in (202, 203, 204):  # a symlink out, a path elsewhere, '..': never opened
        error(http.get(f"/v1/indexes/things/items/{outside}/thumbnail"), 404, "NOT_FOUND")
    assert "over max_bytes_per_image" in error(  # coffee.png, 400 KB: the server's own limit
        http.get("/v1/indexes/things/items/205/thumbnail"), 400, "FAILED_PRECONDITION")
    error(http.get("/v1/indexes/things/items/100/thumbnail"), 404, "NOT_FOUND")
    error(http.get("/v1/indexes/things/items/999/thumbnail"), 404, "NOT_FOUND")
    error(http.get("/v1/indexes/things/items/x/thumbnail"), 400, "INVALID_ARGUMENT")

    m = http.get("/v1/indexes/things/map", params={"limit": 5}).json()
    assert m["shown"] == 5 and m["count"] == 10 and m["method"] == "pca"
    assert {p["label"] for p in m["points"]} <= {"odd", "even", "path"}
    assert sum(m["explained_variance"]) <= 1.0001
    error(http.get("/v1/indexes/things/map", params={"limit": 1}), 400, "INVALID_ARGUMENT")
    error(http.get("/v1/indexes/nope/map"), 404, "NOT_FOUND")

    # overwriting an image with a vector drops its thumbnail; deleting drops the item's
    http.post("/v1/indexes/things/upsert", json={"items": [{"id": 0, "vector": [0.5] * 256}]})
    error(http.get("/v1/indexes/things/items/0/thumbnail"), 404, "NOT_FOUND")
    r = http.request("DELETE", "/v1/indexes/things/items", json={"ids": [1, 1, 12345]})
    assert r.json() == {"deleted": 1, "total": 9}
    assert not list((data / "thumbnails" / "things").rglob("1.jpg"))
    assert {i["name"]: i["count"] for i in http.get("/v1/indexes").json()["indexes"]} == {
        "things": 9}

    bad = [({"items": [{"image": b64(png(1)), "vector": [1.0] * 256}]}, "exactly one"),
           ({"items": [{"id": -1, "vector": [1.0] * 256}]}, "items.0.id"),
           ({"items": [{"vector": [1.0] * 3}]}, "256-d"),
           ({"items": [{"vector": [1.0] * 256, "metadata": {"n": 1}}]}, "metadata")]
    for body, says in bad:
        assert says in error(http.post("/v1/indexes/things/upsert", json=body), 400,
                             "INVALID_ARGUMENT")
    one = {"items": [{"vector": [1.0] * 256}]}
    assert "index name must be" in error(http.post("/v1/indexes/bad%20name/upsert", json=one),
                                         400, "INVALID_ARGUMENT")
    error(http.post("/v1/indexes/..%2Fx/upsert", json=one), 404, "NOT_FOUND")  # no such route
    error(http.post("/v1/search", json={"index": "nope", "vector": [1.0] * 256}), 404,
          "NOT_FOUND")
    error(http.post("/v1/search", json={"index": "things"}), 400, "INVALID_ARGUMENT")
    error(http.request("DELETE", "/v1/indexes/nope/items", json={"ids": [1]}), 404, "NOT_FOUND")
    assert http.get("/v1/indexes").json()["indexes"][0]["count"] == 9  # nothing refused wrote


def test_a_reader_replica_refuses_writes_with_failed_precondition(served):
    srv, http, data = served
    reader = Server(ServeConfig(port=0, http_port=0, data_dir=str(data), default_backbone=TINY,
                                role="reader", auth_token=TOKEN)).start()
    try:
        r = httpx.post(f"http://127.0.0.1:{reader.http_port}/v1/indexes/things/upsert",
                       json={"items": [{"vector": [1.0] * 256}]},
                       headers={"Authorization": f"Bearer {TOKEN}"})
        assert "read-only replica" in error(r, 400, "FAILED_PRECONDITION")
    finally:
        reader.stop(grace=2)


# -- lists, info, OpenAPI, metrics -----------------------------------------------------------------
def test_models_info_openapi_and_metrics(served):
    srv, http, _ = served
    models = http.get("/v1/models").json()
    assert models["object"] == "list"
    tiny = next(m for m in models["data"] if m["id"] == TINY)
    assert tiny["object"] == "model" and tiny["loaded"] and tiny["dim"] == 256
    info = http.get("/v1/info").json()
    assert info["default_backbone"] == TINY and info["max_images_per_request"] == LIMIT_IMAGES
    assert info["role"] == "single" and info["batching"]["max_batch_size"] == 32
    grpc_info = Client(f"127.0.0.1:{srv.port}", token=TOKEN).info()
    assert grpc_info.max_bytes_per_image == info["max_bytes_per_image"]

    spec = httpx.get(f"{http.base_url}/openapi.json").json()
    assert set(spec["paths"]) == {
        "/v1/embeddings", "/v1/classify", "/v1/search", "/v1/indexes/{name}/upsert",
        "/v1/indexes/{name}/items", "/v1/indexes", "/v1/indexes/{name}/map",
        "/v1/indexes/{name}/items/{item_id}/thumbnail", "/v1/models", "/v1/heads",
        "/v1/heads/{name}", "/v1/heads/{name}/figures/{figure}", "/v1/drift", "/v1/info",
        "/healthz", "/readyz"}  # each is called in this file
    schema = spec["components"]["schemas"]["EmbeddingsRequest"]
    assert schema["additionalProperties"] is False and "model" in schema["required"]
    error(http.get("/v1/no-such-thing"), 404, "NOT_FOUND")
    error(http.put("/v1/embeddings", json={}), 405, "INVALID_ARGUMENT")

    metrics_url = f"http://127.0.0.1:{srv.metrics_port}/metrics"
    assert httpx.get(metrics_url).status_code == 401  # the token guards the metrics too
    metrics = httpx.get(metrics_url, headers={"Authorization": f"Bearer {TOKEN}"}).text
    ok = [line for line in metrics.splitlines()
          if line.startswith('embedsvc_requests_total{code="OK",method="http.embeddings"}')]
    assert ok and float(ok[0].split()[-1]) >= 1
    assert 'code="UNAUTHENTICATED",method="http"' in metrics


def test_sixteen_http_and_sixteen_grpc_clients_at_once(served):
    srv, http, _ = served
    images = [png(50 + i) for i in range(16)]
    client = Client(f"127.0.0.1:{srv.port}", token=TOKEN)
    base = str(http.base_url)

    def over_http(n: int):
        with httpx.Client(base_url=base, timeout=60,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as own:
            r = own.post("/v1/embeddings", json={"model": "", "input": [img(images[n])]})
            assert r.status_code == 200, r.text
            return r.json()["data"][0]["embedding"]

    def over_grpc(n: int):
        return list(client.embed([images[n]])[1].vectors[0].values)

    with cf.ThreadPoolExecutor(32) as pool:
        h = [pool.submit(over_http, n) for n in range(16)]
        g = [pool.submit(over_grpc, n) for n in range(16)]
        # the same image, batched with different neighbours: equal up to float32 rounding
        np.testing.assert_allclose([f.result() for f in h], [f.result() for f in g], atol=1e-5)


def test_serve_refuses_one_port_for_two_listeners(tmp_path):
    r = run_cli("serve", "--port", "50999", "--http-port", "50999", "--data-dir", tmp_path,
                timeout=60)
    assert r.returncode == 1 and "port and http_port are both 50999" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not os.listdir(tmp_path)
