"""The gRPC service, through the generated stubs, on a real server on a free localhost port."""
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import run_cli, wait_for
from embedsvc.client import Client
from embedsvc.errors import ResourceExhaustedError
from embedsvc.extract import FeatureExtractor
from embedsvc.errors import DeadlineExceededError
from embedsvc.service.batcher import MAX_PASSED_OVER, DynamicBatcher
from embedsvc.service.config import BatchingConfig, ServeConfig
from embedsvc.service.grpc_server import Server
from embedsvc.v1 import embedsvc_pb2 as pb
from embedsvc.v1 import embedsvc_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow  # real EfficientNet-Lite weights (see README: Tests and CI)

CAT_CLASSES = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("serve")
    srv = Server(ServeConfig(port=0, data_dir=str(data), max_images_per_request=8, metrics_port=0,
                             max_bytes_per_image=2 << 20,
                             batching=BatchingConfig(max_batch_size=16, max_queue_delay_ms=20))).start()
    yield srv
    srv.stop(grace=5)


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield pb_grpc.EmbeddingServiceStub(channel)
    channel.close()


def _img(path, id_=None):
    return pb.Image(id=id_ or path.stem, data=path.read_bytes())


def test_embed_matches_the_library_and_carries_provenance(stub, photos, lite0):
    resp = stub.Embed(pb.EmbedRequest(images=[_img(photos["chelsea"]), _img(photos["coffee"])]))
    got = np.array([v.values for v in resp.vectors], dtype=np.float32)
    want = FeatureExtractor(lite0).embed([photos["chelsea"], photos["coffee"]]).vectors
    assert [v.id for v in resp.vectors] == ["chelsea", "coffee"]
    assert np.abs(got - want).max() < 1e-5
    p = resp.provenance
    assert p.backbone == "effnet-lite0" and p.dim == 1280 and p.normalized and p.tap == "pre_logits"
    assert p.weights_sha256 == lite0.cfg.weights_sha256 and resp.timing.total_ms > 0
    raw = stub.Embed(pb.EmbedRequest(images=[_img(photos["chelsea"])], options=pb.EmbedOptions(raw=True, tap="late")))
    assert len(raw.vectors[0].values) == 320 and not raw.provenance.normalized


def test_classify_with_the_builtin_imagenet_head(stub, photos):
    resp = stub.Classify(pb.ClassifyRequest(images=[_img(photos["chelsea"]), _img(photos["coffee"])], top_k=5))
    tops = {r.id: [t.label for t in r.top] for r in resp.results}
    assert CAT_CLASSES & set(tops["chelsea"]) and {"espresso", "cup"} & set(tops["coffee"])
    unsure = stub.Classify(pb.ClassifyRequest(images=[_img(photos["chelsea"])], abstain_below=0.99))
    assert unsure.results[0].label == "unknown" and unsure.results[0].abstained


def test_a_head_dropped_into_the_data_dir_is_served_without_restart(server, stub, fmnist_store, tmp_path,
                                                                   photos):
    assert "fmnist" not in [h.name for h in stub.ListHeads(pb.ListHeadsRequest()).heads]
    p = run_cli("train-head", fmnist_store.root, "--kind", "centroid", "--out", tmp_path / "fmnist",
                "--quiet", "--register", server.core.data_dir, timeout=600)
    assert p.returncode == 0 and "registered as head 'fmnist'" in p.stdout, p.stderr
    heads = {h.name: h for h in stub.ListHeads(pb.ListHeadsRequest()).heads}
    assert heads["fmnist"].kind == "centroid" and len(heads["fmnist"].classes) == 10
    row = next(r for r in fmnist_store.metadata() if r["split"] == "test" and r["label"] == "sneaker")
    with open(row["path"], "rb") as f:
        sneaker = f.read()
    resp = stub.Classify(pb.ClassifyRequest(images=[pb.Image(id="s", data=sneaker)], head="fmnist"))
    assert resp.results[0].label == "sneaker"
    # the head's calibrated OOD score: a cat photo is "unknown" above max_ood_score
    resp = stub.Classify(pb.ClassifyRequest(images=[pb.Image(id="s", data=sneaker),
                                                    _img(photos["chelsea"], "cat")],
                                            head="fmnist", max_ood_score=0.99))
    (shoe, cat) = resp.results
    assert shoe.label == "sneaker" and not shoe.abstained
    assert cat.label == "unknown" and cat.abstained and cat.ood_score > 0.99
    with pytest.raises(grpc.RpcError) as e:
        stub.Classify(pb.ClassifyRequest(images=[_img(photos["chelsea"])], head="fmnist",
                                         max_ood_score=2.0))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_ood_score" in e.value.details()


def test_a_head_of_other_weights_is_a_failed_precondition(server, stub, fmnist_store, tmp_path, photos):
    import json as _json

    from classifiers.heads import TrainHeadConfig, train_head

    train_head(fmnist_store.root, tmp_path / "foreign", TrainHeadConfig(kind="centroid"), progress=False)
    meta = _json.loads((tmp_path / "foreign" / "head.json").read_text())
    meta["provenance"]["weights_sha256"] = "0" * 64
    (tmp_path / "foreign" / "head.json").write_text(_json.dumps(meta))
    shutil.copytree(tmp_path / "foreign", server.core.data_dir / "heads" / "foreign")
    with pytest.raises(grpc.RpcError) as exc:
        stub.Classify(pb.ClassifyRequest(images=[_img(photos["chelsea"])], head="foreign"))
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "000000000000" in exc.value.details()


def test_listings_info_health_and_reflection(server, stub):
    models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
    assert models["effnet-lite0"].loaded and models["effnet-lite0"].dim == 1280
    info = stub.GetInfo(pb.GetInfoRequest())
    assert info.default_backbone == "effnet-lite0" and info.batching.max_batch_size == 16
    assert info.max_images_per_request == 8 and "cpu" in info.device
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "embedsvc.v1.EmbeddingService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
            health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in answer.list_services_response.service}
    assert {"embedsvc.v1.EmbeddingService", "grpc.health.v1.Health"} <= names
    channel.close()


def test_64_concurrent_clients_are_batched_together(server, photos):
    data = photos["rocket"].read_bytes()
    before = server.core.info()["batching"]
    barrier = threading.Barrier(64)

    def one(i):
        with Client(f"127.0.0.1:{server.port}") as c:
            barrier.wait()
            vecs, _ = c.embed([data], ids=[f"c{i}"], timeout=120)
            return vecs.shape

    with ThreadPoolExecutor(64) as pool:
        shapes = list(pool.map(one, range(64)))
    assert shapes == [(1, 1280)] * 64
    after = server.core.info()["batching"]
    assert after["images"] - before["images"] == 64
    assert after["batches"] - before["batches"] < 64 and after["largest_batch"] > 1
    # the same, as Prometheus sees it: some batches were larger than one image
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=30).read().decode()
    metric = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line.startswith("embedsvc_") and " " in line}
    model = "effnet-lite0/pre_logits"
    total = metric[f'embedsvc_batch_size_count{{model="{model}"}}']
    single = metric[f'embedsvc_batch_size_bucket{{le="1.0",model="{model}"}}']
    assert total > single, (total, single)
    assert metric['embedsvc_requests_total{code="OK",method="Embed"}'] >= 64


@pytest.mark.parametrize("request_,code,text", [
    (pb.EmbedRequest(images=[pb.Image(id="junk", data=b"not an image")]), grpc.StatusCode.INVALID_ARGUMENT, "junk"),
    (pb.EmbedRequest(), grpc.StatusCode.INVALID_ARGUMENT, "no images"),
    (pb.EmbedRequest(images=[pb.Image(id=str(i), data=b"x") for i in range(9)]), grpc.StatusCode.INVALID_ARGUMENT, "limit is 8"),
    (pb.EmbedRequest(images=[pb.Image(id="big", data=b"\0" * (3 << 20))]), grpc.StatusCode.INVALID_ARGUMENT, "big"),
    (pb.EmbedRequest(images=[pb.Image(id="a", data=b"x")], options=pb.EmbedOptions(backbone="nope")), grpc.StatusCode.NOT_FOUND, "available"),
    (pb.EmbedRequest(images=[pb.Image(id="a", data=b"x")], options=pb.EmbedOptions(tap="nope")), grpc.StatusCode.INVALID_ARGUMENT, "tap"),
])
def test_bad_requests_get_their_status_and_the_server_keeps_serving(stub, photos, request_, code, text):
    with pytest.raises(grpc.RpcError) as exc:
        stub.Embed(request_)
    assert exc.value.code() == code and text in exc.value.details()
    ok = stub.Embed(pb.EmbedRequest(images=[_img(photos["coffee"])]))
    assert len(ok.vectors[0].values) == 1280


def test_bomb_and_unknown_head(stub, tmp_path):
    from PIL import Image

    Image.new("L", (9000, 9000)).save(tmp_path / "bomb.png")
    with pytest.raises(grpc.RpcError) as exc:
        stub.Embed(pb.EmbedRequest(images=[pb.Image(id="bomb", data=(tmp_path / "bomb.png").read_bytes())]))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "exceeds the limit" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        stub.Classify(pb.ClassifyRequest(images=[pb.Image(id="a", data=b"x")], head="nope"))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND and "imagenet" in exc.value.details()


def test_embed_stream_answers_in_order_with_per_item_errors(stub, photos):
    items = [pb.EmbedItem(image=_img(photos["chelsea"], "a")), pb.EmbedItem(image=pb.Image(id="bad", data=b"??")),
             pb.EmbedItem(image=_img(photos["coffee"], "c"))]
    out = list(stub.EmbedStream(iter(items)))
    assert [r.vector.id for r in out] == ["a", "bad", "c"]
    assert out[1].error and not out[1].vector.values and len(out[2].vector.values) == 1280


def test_token_auth(tmp_path, photos):
    srv = Server(ServeConfig(port=0, data_dir=str(tmp_path), auth_token="s3cret")).start()
    try:
        target = f"127.0.0.1:{srv.port}"
        with pytest.raises(grpc.RpcError) as exc:
            Client(target).embed([photos["coffee"]], timeout=60)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as exc:
            Client(target, token="wrong").info(timeout=60)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        vecs, _ = Client(target, token="s3cret").embed([photos["coffee"]], timeout=60)
        assert vecs.shape == (1, 1280)
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(target))
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        srv.stop(grace=5)


def test_batcher_refuses_when_full_and_drops_expired_requests():
    release = threading.Event()

    def slow(x):
        release.wait(10)
        return x.flatten(1).float().numpy()

    b = DynamicBatcher(slow, torch.stack, BatchingConfig(max_batch_size=1, max_queue_delay_ms=0,
                                                         max_queue_size=2))
    t = torch.zeros(1, 2, 2, dtype=torch.uint8)
    first = b.submit(t)  # taken by the worker, blocked in slow()
    wait_for(lambda: b.queue_depth == 0, what="the worker took the first item")
    expired = b.submit(t, deadline=time.monotonic() - 1)
    b.submit(t)
    with pytest.raises(ResourceExhaustedError, match="retry later"):
        b.submit(t)
    release.set()
    assert first.result(10).shape == (4,)
    with pytest.raises(DeadlineExceededError):
        expired.result(10)
    b.close()
    assert b.stats()["expired"] == 1


def test_upsert_search_delete_and_persistence(tmp_path, photos):
    data = tmp_path / "data"
    srv = Server(ServeConfig(port=0, data_dir=str(data))).start()
    target = f"127.0.0.1:{srv.port}"
    try:
        with Client(target) as c:
            with pytest.raises(grpc.RpcError) as exc:
                c.search("photos", vector=[0.1] * 1280, timeout=60)
            assert exc.value.code() == grpc.StatusCode.NOT_FOUND
            r = c.upsert("photos", [
                {"id": 1, "image": photos["chelsea"], "metadata": {"label": "cat"}},
                {"id": 2, "image": photos["coffee"], "metadata": {"label": "coffee"}},
                {"id": 3, "image": photos["rocket"], "metadata": {"label": "rocket"}},
            ], timeout=120)
            assert r.upserted == 3 and r.total == 3
            hits = c.search("photos", image=photos["chelsea"], k=2, timeout=60)
            assert hits[0]["id"] == 1 and hits[0]["metadata"] == {"label": "cat"} and hits[0]["score"] > 0.99
            assert [h["id"] for h in c.search("photos", image=photos["chelsea"], k=3,
                                              where={"label": "rocket"}, timeout=60)] == [3]
            vec, _ = c.embed([photos["coffee"]], timeout=60)
            assert c.search("photos", vector=vec[0], k=1, timeout=60)[0]["id"] == 2
            # a vector upsert replaces id 3; a wrong-sized one is refused and writes nothing
            c.upsert("photos", [{"id": 3, "vector": vec[0], "metadata": {"label": "coffee-2"}}], timeout=60)
            with pytest.raises(grpc.RpcError) as exc:
                c.upsert("photos", [{"id": 9, "vector": [1.0, 2.0]}], timeout=60)
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "1280-d" in exc.value.details()
            assert c.delete("photos", [2, 77], timeout=60).deleted == 1
            assert [(i.name, i.count) for i in c.indexes(timeout=60)] == [("photos", 2)]
    finally:
        srv.stop(grace=5)
    srv = Server(ServeConfig(port=0, data_dir=str(data))).start()  # a restart keeps every write
    try:
        with Client(f"127.0.0.1:{srv.port}") as c:
            hits = c.search("photos", image=photos["coffee"], k=5, timeout=60)
            assert [h["id"] for h in hits][:1] == [3] and {h["id"] for h in hits} == {1, 3}
            assert hits[0]["metadata"] == {"label": "coffee-2"}
    finally:
        srv.stop(grace=5)


def wait_until_admitted(metrics_url: str, method: str, n: int, timeout: float = 60) -> None:
    """Until the server has admitted ``n`` calls of ``method`` (in flight now, or answered)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
        seen = 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "embedsvc_requests_in_flight" or (
                        s.name == "embedsvc_requests_total" and s.labels.get("method") == method):
                    seen += s.value
        if seen >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"the server admitted {seen:.0f} of {n} {method} calls in {timeout} s")


def test_sigterm_drains_in_flight_requests_and_keeps_acknowledged_upserts(tmp_path, photos):
    import os
    import signal
    import subprocess
    import sys

    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "embedsvc", "serve", "--port", "0",
                             "--metrics-port", "0", "--data-dir", str(data)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "serving on" in line, line
        target = line.split(" on ")[1].split()[0]
        metrics_url = f"http://127.0.0.1:{line.split('metrics on :')[1].split('/')[0]}/metrics"
        with Client(target) as c:
            c.upsert("kept", [{"id": 7, "image": photos["chelsea"], "metadata": {"label": "cat"}}],
                     timeout=120)
        payload = photos["rocket"].read_bytes()
        results = []
        ready = threading.Barrier(9)

        def call():
            with Client(target) as c:
                grpc.channel_ready_future(c.channel).result(timeout=60)
                ready.wait(60)
                try:
                    results.append(c.embed([payload] * 4, timeout=120)[0].shape)
                except grpc.RpcError as exc:
                    results.append(exc.code())

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        ready.wait(60)
        wait_until_admitted(metrics_url, "Embed", 8)
        os.kill(proc.pid, signal.SIGTERM)
        for t in threads:
            t.join(120)
        assert proc.wait(60) == 0
        assert results.count((4, 1280)) == 8, results
    finally:
        if proc.poll() is None:
            proc.kill()
    srv = Server(ServeConfig(port=0, data_dir=str(data))).start()
    try:
        with Client(f"127.0.0.1:{srv.port}") as c:
            assert c.search("kept", image=photos["chelsea"], k=1, timeout=60)[0]["id"] == 7
    finally:
        srv.stop(grace=5)


def test_async_client_and_command_line_client(server, photos):
    import asyncio
    import json as _json

    from embedsvc.client import AsyncClient

    async def go():
        async with AsyncClient(f"127.0.0.1:{server.port}") as c:
            vecs = await c.embed([photos["chelsea"], photos["coffee"]], timeout=60)
            labels = await c.classify([photos["coffee"]], top_k=3, timeout=60)
            return vecs, labels

    vecs, labels = asyncio.run(go())
    assert vecs.shape == (2, 1280) and {"espresso", "cup"} & {l for l, _ in labels[0]["top"]}
    target = f"127.0.0.1:{server.port}"
    run = lambda *a: run_cli("client", *a)  # noqa: E731
    p = run("classify", photos["chelsea"], "--server", target, "--top", "5")
    assert p.returncode == 0, p.stderr
    assert {"tabby, tabby cat", "tiger cat", "Egyptian cat"} & {t["label"] for t in _json.loads(p.stdout)[0]["top"]}
    p = run("upsert", photos["rocket"], photos["coffee"], "--server", target, "--index", "cli", "--label", "x",
            "--first-id", "0")
    assert p.returncode == 0 and _json.loads(p.stdout) == {"upserted": 2, "total": 2, "ids": [0, 1],
                                                             "skipped": []}, p.stderr
    p = run("search", "--server", target, "--index", "cli", "--image", photos["coffee"], "-k", "1")
    assert p.returncode == 0 and _json.loads(p.stdout)[0]["id"] == 1, p.stderr
    p = run("search", "--server", target, "--index", "missing", "--image", photos["coffee"])
    assert p.returncode == 1 and "NOT_FOUND" in p.stderr


def test_tls(tmp_path, photos):
    import subprocess

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    srv = Server(ServeConfig(host="localhost", port=0, data_dir=str(tmp_path / "d"),
                             tls_cert=str(cert), tls_key=str(key))).start()
    try:
        with Client(f"localhost:{srv.port}", root_certificates=cert.read_bytes()) as c:
            assert c.embed([photos["coffee"]], timeout=60)[0].shape == (1, 1280)
        with Client(f"localhost:{srv.port}") as plain:  # no TLS: the handshake fails
            with pytest.raises(grpc.RpcError):
                plain.info(timeout=10)
    finally:
        srv.stop(grace=5)


def test_oversized_message_is_refused_and_the_server_lives_on(tmp_path, photos):
    srv = Server(ServeConfig(port=0, data_dir=str(tmp_path), max_message_bytes=1 << 20)).start()
    try:
        with Client(f"127.0.0.1:{srv.port}") as c:
            with pytest.raises(grpc.RpcError) as exc:
                c.embed([b"\0" * (2 << 20)], timeout=60)
            assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert c.embed([photos["coffee"]], timeout=60)[0].shape == (1, 1280)
    finally:
        srv.stop(grace=5)


def _passes_behind_a_busy_model(costs: list[int], packed: bool) -> list[list[int]]:
    """The passes a batcher (budget 600 tokens, 8 inputs) runs for ``costs`` queued behind a
    busy model; every answer is checked to reach its caller."""
    release, passes = threading.Event(), []

    def run(batch):
        release.wait(10)
        passes.append(list(batch))
        return np.array(batch, np.float32)[:, None]

    b = DynamicBatcher(run, list, BatchingConfig(max_batch_size=8, max_queue_delay_ms=0,
                                                 max_batch_tokens=600), packed=packed)
    first = b.submit(1, cost=1)  # the model is busy with it while the rest queue up
    wait_for(lambda: b.queue_depth == 0, what="the worker took the first input")
    futures = [b.submit(c, cost=c) for c in costs]
    release.set()
    assert [f.result(10)[0] for f in futures] == costs and first.result(10)[0] == 1
    b.close()
    assert sorted(c for p in passes[1:] for c in p) == sorted(costs)
    return passes[1:]


def test_batcher_bounds_a_batch_by_its_padded_tokens_and_runs_it_as_length_groups():
    """Texts of 20-30 and 250 tokens queued behind a busy model: no pass holds more than
    max_batch_tokens once padded to its longest input, short and long texts run apart (a
    batch padded to 250 would cost each short text 250), and every answer reaches its caller."""
    passes = _passes_behind_a_busy_model([20, 250, 30, 250, 25, 250, 22, 24], packed=False)
    assert all(len(p) * max(p) <= 600 for p in passes), passes
    assert all(max(p) < 100 or min(p) == 250 for p in passes), passes  # never mixed


def test_a_packing_batcher_runs_its_whole_pool_bounded_by_the_tokens_themselves():
    """For an encoder that packs its inputs (no padding), a pass holds texts of any lengths
    together, up to max_batch_tokens of their own tokens."""
    passes = _passes_behind_a_busy_model([20, 250, 30, 250, 25, 250, 22, 24], packed=True)
    assert all(sum(p) <= 600 for p in passes), passes
    assert passes[0] == [20, 250, 30, 250, 25], passes  # mixed lengths, up to the budget


def test_batcher_keeps_short_texts_pooled_behind_long_ones_but_never_starves_them():
    """A short text waiting beside a stream of long ones (each pass brings another, always the
    better-filled group) runs within MAX_PASSED_OVER passes, and on its own (never padded to
    250); every answer reaches its caller."""
    release, passes, more = threading.Event(), [], []

    def run(costs):
        release.wait(10)
        passes.append(list(costs))
        if len(passes) < 3 * MAX_PASSED_OVER:
            more.append(b.submit(250, cost=250))  # the next long text arrives during this pass
        return np.array(costs, np.float32)[:, None]

    b = DynamicBatcher(run, list, BatchingConfig(max_batch_size=8, max_queue_delay_ms=0))
    first = b.submit(250, cost=250)
    wait_for(lambda: b.queue_depth == 0, what="the worker took the first input")
    short = b.submit(20, cost=20)
    release.set()
    assert short.result(10)[0] == 20 and first.result(10)[0] == 250
    wait_for(lambda: len(passes) >= 3 * MAX_PASSED_OVER, what="the long texts ran")
    b.close()
    assert [f.result(10)[0] for f in more] == [250] * len(more)
    ran_short = next(n for n, p in enumerate(passes) if 20 in p)
    assert passes[ran_short] == [20], passes
    # passed over while long texts kept coming (a plain batcher runs it in pass 1), then run
    assert ran_short == MAX_PASSED_OVER + 1, passes
