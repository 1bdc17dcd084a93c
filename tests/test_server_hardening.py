"""What a client using only the .proto could do to the server before issue 10, each against a real
server through the generated stubs: stall it, strand a request, make it buffer without bound,
burn seconds and gigabytes on a tiny image, get INTERNAL for bad bytes, read its disk."""
import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
import zlib
import struct

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from embedsvc.service.config import ServeConfig
from embedsvc.service.grpc_server import Server
from embedsvc.v1 import embedsvc_pb2 as pb
from embedsvc.v1 import embedsvc_pb2_grpc as pb_grpc
from hostile import strip_png

pytestmark = pytest.mark.slow  # real EfficientNet-Lite weights (see README: Tests and CI)


def header_only_png(width: int, height: int) -> bytes:
    """A PNG header claiming width x height with no pixel data (refused before decoding)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))


def corrupt_blp() -> bytes:  # Pillow raises BLPFormatError (not an OSError) on it
    b = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).convert("P").save(b, "BLP")
    d = bytearray(b.getvalue())
    d[4] = 0  # compression 0: unknown
    return bytes(d)


def odd_dds() -> bytes:  # Pillow raises NotImplementedError on its pixel-format flags
    b = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(b, "DDS")
    d = bytearray(b.getvalue())
    d[80] = 0
    return bytes(d)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(ServeConfig(port=0, data_dir=str(tmp_path_factory.mktemp("hard")), decode_workers=4,
                             max_streams=16, stream_idle_timeout_s=8, max_concurrent_requests=8)).start()
    yield srv
    srv.stop(grace=5)


@pytest.fixture(scope="module")
def channel(server):
    ch = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield ch
    ch.close()


def _health_ms(channel) -> float:
    t0 = time.perf_counter()
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    return 1000 * (time.perf_counter() - t0)


class IdleStreams:
    """N EmbedStream calls that send no message, each on its own channel."""

    def __init__(self, target: str, n: int):
        self.stop = threading.Event()
        self.channels = [grpc.insecure_channel(target) for _ in range(n)]
        self.calls = []
        for ch in self.channels:
            def never():
                self.stop.wait()
                return
                yield  # noqa: unreachable - makes this a generator that sends nothing
            self.calls.append(pb_grpc.EmbeddingServiceStub(ch).EmbedStream(never()))

    def close(self):
        self.stop.set()
        for c in self.calls:
            c.cancel()
        for ch in self.channels:
            ch.close()


def first_stream_code(target: str) -> grpc.RpcError:
    """Open one EmbedStream that sends nothing and wait for the status it ends with."""
    stream = IdleStreams(target, 1)
    try:
        with pytest.raises(grpc.RpcError) as exc:
            next(stream.calls[0])
        return exc.value
    finally:
        stream.close()


def test_idle_streams_cannot_stall_health_or_other_calls(server, channel, photos):
    idle = IdleStreams(f"127.0.0.1:{server.port}", 16)
    try:
        time.sleep(1.0)
        for _ in range(5):  # a starved check never answers: each must within its deadline
            _health_ms(channel)
        stub = pb_grpc.EmbeddingServiceStub(channel)
        assert stub.GetInfo(pb.GetInfoRequest(), timeout=5).default_backbone == "effnet-lite0"
        resp = stub.Embed(pb.EmbedRequest(images=[pb.Image(id="c", data=photos["coffee"].read_bytes())]),
                          timeout=30)
        assert len(resp.vectors[0].values) == 1280
        # a 17th stream is over max_streams: refused at once, not parked
        assert first_stream_code(f"127.0.0.1:{server.port}").code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        idle.close()


def test_an_idle_stream_is_ended_after_the_idle_timeout(server):
    t0 = time.monotonic()
    ended = first_stream_code(f"127.0.0.1:{server.port}")
    assert ended.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "no message" in ended.details()
    assert time.monotonic() - t0 < 60


@pytest.mark.parametrize("name,data", [("blp", corrupt_blp()), ("dds", odd_dds()),
                                       ("huge", header_only_png(64_000_000, 1))])
def test_any_decoder_failure_is_invalid_argument_on_every_rpc(server, channel, name, data):
    stub = pb_grpc.EmbeddingServiceStub(channel)
    img = pb.Image(id=name, data=data)
    calls = [lambda: stub.Embed(pb.EmbedRequest(images=[img]), timeout=30),
             lambda: stub.Classify(pb.ClassifyRequest(images=[img]), timeout=30),
             lambda: stub.Upsert(pb.UpsertRequest(index="bad", items=[pb.UpsertItem(id=1, image=data)]), timeout=30)]
    for call in calls:
        with pytest.raises(grpc.RpcError) as exc:
            call()
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    assert "bad" not in [i.name for i in stub.ListIndexes(pb.ListIndexesRequest(), timeout=10).indexes]


def test_a_failed_call_leaves_nothing_of_its_request_behind(server, channel):
    """An answered error frees the request at once, not at some later cyclic GC. With the
    collector off, 2 MiB calls that fail on every path (an image that does not decode, in
    each RPC; a message that does not parse) leave under 8 MiB of Python memory behind: each
    used to keep its message and image bytes in gRPC's suspended reader and in the frames
    of an AbortError's traceback, and under load the server's RSS grew by gigabytes."""
    import gc
    import tracemalloc

    stub = pb_grpc.EmbeddingServiceStub(channel)
    junk = os.urandom(2 << 20)
    img = pb.Image(id="junk", data=junk)
    raw_embed = channel.unary_unary(f"/{pb.DESCRIPTOR.services_by_name['EmbeddingService'].full_name}/Embed",
                                    request_serializer=None, response_deserializer=None)
    calls = [lambda: stub.Embed(pb.EmbedRequest(images=[img]), timeout=30),
             lambda: stub.Classify(pb.ClassifyRequest(images=[img]), timeout=30),
             lambda: stub.Search(pb.SearchRequest(index="absent", image=img), timeout=30),
             lambda: stub.Upsert(pb.UpsertRequest(index="junk", items=[pb.UpsertItem(id=1, image=junk)]),
                                 timeout=30),
             lambda: raw_embed(b"\x0a\xff\xff\xff\x7f" + junk, timeout=30)]  # a length past the end
    for call in calls:  # the first of each path's allocations (caches, pools) are not the point
        with pytest.raises(grpc.RpcError):
            call()
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        codes = []
        for _ in range(4):
            for call in calls:
                with pytest.raises(grpc.RpcError) as exc:
                    call()
                codes.append(exc.value.code())
        left = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        gc.enable()
    assert set(codes) <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}, set(codes)
    print(f"{left / 2**20:.2f} MiB left by {len(codes)} failed 2 MiB calls")
    assert left < 8 << 20, f"{left >> 20} MiB of {len(codes)} failed 2 MiB calls still held"


def test_a_stream_answers_a_bad_item_and_goes_on(channel, photos):
    good = photos["coffee"].read_bytes()
    items = [pb.EmbedItem(image=pb.Image(id="a", data=good)), pb.EmbedItem(image=pb.Image(id="blp", data=corrupt_blp())),
             pb.EmbedItem(image=pb.Image(id="dds", data=odd_dds())), pb.EmbedItem(image=pb.Image(id="z", data=good))]
    out = list(pb_grpc.EmbeddingServiceStub(channel).EmbedStream(iter(items), timeout=60))
    assert [r.vector.id for r in out] == ["a", "blp", "dds", "z"]
    assert out[1].error and out[2].error and len(out[3].vector.values) == 1280


def test_extreme_aspect_ratios_cost_what_an_ordinary_image_costs(server, channel):
    """10000x1 used to take 5-8 s and 2.4 GB, 100000x1 MemoryError, now a cropped resize."""
    stub = pb_grpc.EmbeddingServiceStub(channel)
    for w, h in ((10_000, 1), (1, 10_000), (100_000, 1)):
        resp = stub.Embed(pb.EmbedRequest(images=[pb.Image(id=f"{w}x{h}", data=strip_png(w, h))]), timeout=60)
        assert len(resp.vectors[0].values) == 1280


def test_images_over_the_pixel_budget_are_refused_before_decoding(tmp_path):
    srv = Server(ServeConfig(port=0, data_dir=str(tmp_path), max_pixels_per_request=150_000)).start()
    try:
        stub = pb_grpc.EmbeddingServiceStub(grpc.insecure_channel(f"127.0.0.1:{srv.port}"))
        images = [pb.Image(id=str(i), data=strip_png(100_000, 1)) for i in range(2)]
        with pytest.raises(grpc.RpcError) as exc:
            stub.Embed(pb.EmbedRequest(images=images), timeout=30)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit per request" in exc.value.details()
        assert stub.Embed(pb.EmbedRequest(images=images[:1]), timeout=30).vectors
    finally:
        srv.stop(grace=5)


def test_eviction_never_strands_a_request(tmp_path, photos):
    """Two backbones, room for one: requests alternate, each evicting the other's model."""
    srv = Server(ServeConfig(port=0, data_dir=str(tmp_path), max_loaded_backbones=1, decode_workers=8)).start()
    data = photos["astronaut"].read_bytes()
    results = []

    def call(backbone):
        ch = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        try:
            r = pb_grpc.EmbeddingServiceStub(ch).Embed(pb.EmbedRequest(
                images=[pb.Image(id="a", data=data)] * 4, options=pb.EmbedOptions(backbone=backbone)), timeout=240)
            results.append(len(r.vectors))
        except grpc.RpcError as exc:
            results.append(exc.code())
        finally:
            ch.close()

    try:
        threads = [threading.Thread(target=call, args=("effnet-lite0" if i % 2 else "effnet-lite1",))
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not any(t.is_alive() for t in threads)
        assert all(r == 4 or r == grpc.StatusCode.UNAVAILABLE for r in results), results
        assert results.count(4) >= 4, results
    finally:
        t0 = time.monotonic()
        srv.stop(grace=5)
        assert time.monotonic() - t0 < 30


def test_backbone_errors_reveal_no_server_path(channel, photos):
    stub = pb_grpc.EmbeddingServiceStub(channel)
    img = pb.Image(id="c", data=photos["coffee"].read_bytes())
    for name in ("timm:resnet18", "torchvision:resnet18", "finetuned:/etc", "finetuned:../../x"):
        with pytest.raises(grpc.RpcError) as exc:
            stub.Embed(pb.EmbedRequest(images=[img], options=pb.EmbedOptions(backbone=name)), timeout=60)
        assert exc.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
        assert "/root" not in exc.value.details() and "/tmp" not in exc.value.details()
        assert ".cache" not in exc.value.details(), exc.value.details()


def test_a_head_that_fails_to_load_is_listed_as_unavailable(server, channel):
    broken = server.core.data_dir / "heads" / "broken"
    broken.mkdir(parents=True)
    (broken / "head.json").write_text("{not json")
    heads = {h.name: h for h in pb_grpc.EmbeddingServiceStub(channel).ListHeads(pb.ListHeadsRequest(), timeout=10).heads}
    assert heads["imagenet"].available and not heads["broken"].available and heads["broken"].error
    with pytest.raises(grpc.RpcError) as exc:
        pb_grpc.EmbeddingServiceStub(channel).Classify(pb.ClassifyRequest(
            images=[pb.Image(id="x", data=corrupt_blp())], head="broken"), timeout=10)
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "unavailable" in exc.value.details()


def test_unauthenticated_streams_get_unauthenticated(tmp_path):
    srv = Server(ServeConfig(port=0, data_dir=str(tmp_path), auth_token="s3cret")).start()
    try:
        assert first_stream_code(f"127.0.0.1:{srv.port}").code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        srv.stop(grace=5)


SERVER_ENV = {k: v for k, v in (e.split("=", 1) for e in os.environ.get("TEST_SERVER_ENV", "").split(",") if e)}


HEALTH_PROBER = """
import json, sys, time
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(sys.argv[1]))
out, end = [], time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    t0 = time.perf_counter()
    assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    out.append(1000 * (time.perf_counter() - t0))
    time.sleep(0.25)
print(json.dumps(out))
"""


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def test_load_with_idle_streams_and_bad_clients(tmp_path, photos):
    """16 idle streams + 64 clients sending valid and malformed requests to a server process:
    Health answers within 1 s throughout and every valid request succeeds or is refused with
    RESOURCE_EXHAUSTED, and the server's RSS grows by less than its configured memory bound."""
    cfg = tmp_path / "serve.toml"
    cfg.write_text("decode_workers = 4\nmax_pixels_per_image = 4000000\nmax_inflight_bytes = 33554432\n"
                   "max_concurrent_requests = 16\nmax_streams = 16\nstream_idle_timeout_s = 120\n"
                   "[batching]\nmax_batch_size = 8\nmax_queue_size = 16\n")
    bound = ServeConfig.load(cfg).memory_bound
    proc = subprocess.Popen([sys.executable, "-m", "embedsvc", "serve", "--port", "0", "--config", str(cfg),
                             "--data-dir", str(tmp_path / "d")], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **SERVER_ENV})
    try:
        line = proc.stdout.readline()
        assert "serving on" in line, line
        target = line.split(" on ")[1].split()[0]
        good = photos["astronaut"].read_bytes()
        warm = grpc.insecure_channel(target)
        for _ in range(2):  # the model's working memory at its largest batch is part of the baseline
            pb_grpc.EmbeddingServiceStub(warm).Embed(pb.EmbedRequest(images=[pb.Image(data=good)] * 8), timeout=120)
        baseline = _rss(proc.pid)

        idle = IdleStreams(target, 16)
        bad = [corrupt_blp(), odd_dds(), b"junk", header_only_png(64_000_000, 1), os.urandom(2 << 20)]
        stop = threading.Event()
        outcomes, unexpected, peak = [], [], [baseline]

        def client(n):
            # each client on its own connection, as 64 client processes would be (channels
            # of one process with equal options share one; the next test loads one of those)
            ch = grpc.insecure_channel(target, [("grpc.use_local_subchannel_pool", 1)])
            stub = pb_grpc.EmbeddingServiceStub(ch)
            i = 0
            while not stop.is_set():
                valid = (n + i) % 2 == 0
                data = [good] * 4 if valid else [bad[(n + i) % len(bad)]]
                try:
                    stub.Embed(pb.EmbedRequest(images=[pb.Image(data=d) for d in data]), timeout=120)
                    outcomes.append("ok" if valid else "bad-accepted")
                except grpc.RpcError as exc:
                    code = exc.code()
                    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        outcomes.append("refused")
                    elif not valid and code == grpc.StatusCode.INVALID_ARGUMENT:
                        outcomes.append("bad")
                    else:
                        unexpected.append((valid, code, exc.details()))
                i += 1
            ch.close()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(64)]
        for t in threads:
            t.start()
        # Health is probed from its own process: in this one, 64 client threads hold the GIL
        # and would time themselves, not the server
        prober = subprocess.Popen([sys.executable, "-c", HEALTH_PROBER, target, "12"],
                                  stdout=subprocess.PIPE, text=True)
        while prober.poll() is None:
            peak.append(_rss(proc.pid))
            time.sleep(0.25)
        health_ms = json.loads(prober.stdout.read())
        stop.set()
        for t in threads:
            t.join(180)
        idle.close()
        assert not unexpected, unexpected[:5]
        # each check had a 5 s deadline and passed (the prober asserts it); how fast they were
        # is printed, not asserted: a loaded 2-core machine's timings are not the server's
        assert prober.returncode == 0 and len(health_ms) > 20
        assert outcomes.count("ok") > 0 and outcomes.count("bad") > 0 and "bad-accepted" not in outcomes
        print(f"health max {max(health_ms):.0f} ms over {len(health_ms)} checks; outcomes "
              f"{ {k: outcomes.count(k) for k in set(outcomes)} }; RSS +{(max(peak) - baseline) >> 20} MiB "
              f"(bound {bound >> 20} MiB)")
        assert max(peak) - baseline < bound, f"RSS +{(max(peak) - baseline) >> 20} MiB, bound {bound >> 20} MiB"
        warm.close()
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()


def test_client_retries_streams_refused_at_the_connection_limit(tmp_path, photos):
    """80 threads on one Client, whose one connection is allowed 60 streams: the client keeps 60
    open, and gRPC's server refuses a new stream (UNAVAILABLE, RST_STREAM REFUSED_STREAM) while
    the closed ones it is still releasing count against the limit (measured without the retry
    policy: 258 of 5,678 calls in 12 s). With it every call succeeds or is RESOURCE_EXHAUSTED."""
    from embedsvc.client import Client

    srv = Server(ServeConfig(port=0, data_dir=str(tmp_path), decode_workers=2, max_concurrent_requests=16,
                             max_concurrent_streams=60)).start()
    good = photos["astronaut"].read_bytes()
    outcomes, lock, stop = {}, threading.Lock(), threading.Event()
    try:
        with Client(f"127.0.0.1:{srv.port}") as client:
            client.embed([good], timeout=120)

            def call():
                while not stop.is_set():
                    try:
                        client.embed([good] * 4, timeout=120)
                        key = "OK"
                    except grpc.RpcError as exc:
                        key = f"{exc.code().name} {exc.details()}"
                    with lock:
                        outcomes[key] = outcomes.get(key, 0) + 1

            threads = [threading.Thread(target=call) for _ in range(80)]
            for t in threads:
                t.start()
            time.sleep(8)
            stop.set()
            for t in threads:
                t.join(180)
    finally:
        srv.stop(grace=5)
    print(outcomes)
    assert outcomes.get("OK", 0) > 0 and sum(outcomes.values()) > 1000, outcomes
    assert set(outcomes) <= {"OK", *(k for k in outcomes if k.startswith("RESOURCE_EXHAUSTED"))}, outcomes


def _peak_since_reset(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))


def test_a_strip_image_costs_no_more_than_the_per_image_budget(tmp_path):
    """The 78 KB PNG of 1 x 40,000,000 pixels once cost +996 MB through /v1/embeddings and
    +917 MB through upsert. Now it is refused from its header over both, and the tallest strip
    the budget lets in (images.ROW_PIXELS) grows the server's peak RSS by less than the per-image
    budget that ServeConfig.memory_bound counts (6 bytes a pixel of max_pixels_per_image)."""
    import httpx

    from embedsvc.images import ROW_PIXELS

    limit = ServeConfig().max_pixels_per_image
    proc = subprocess.Popen([sys.executable, "-m", "embedsvc", "serve", "--port", "0", "--http-port",
                             "0", "--data-dir", str(tmp_path / "d")], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, **SERVER_ENV})
    try:
        line = proc.stdout.readline()
        http = f"http://127.0.0.1:{line.rsplit('HTTP API and page on :', 1)[1].split(')')[0]}"
        probe = base64.b64encode(strip_png(1, limit)).decode()
        tallest = base64.b64encode(strip_png(1, limit // (1 + ROW_PIXELS))).decode()
        small = base64.b64encode(strip_png(64, 64)).decode()
        for body in ({"model": "", "input": [{"image": small}]},):  # the model's own memory first
            assert httpx.post(f"{http}/v1/embeddings", json=body, timeout=120).status_code == 200
        with open(f"/proc/{proc.pid}/clear_refs", "w") as f:
            f.write("5")  # the peak from now on
        before = _peak_since_reset(proc.pid)
        r = httpx.post(f"{http}/v1/embeddings", json={"model": "", "input": [{"image": probe}]}, timeout=120)
        assert r.status_code == 400 and "rows" in r.json()["error"]["message"], r.text
        r = httpx.post(f"{http}/v1/indexes/strips/upsert", json={"items": [{"image": probe}]},
                       timeout=120)
        assert r.status_code == 400 and "rows" in r.json()["error"]["message"], r.text
        budget = 6 * limit
        for path, body in (("/v1/embeddings", {"model": "", "input": [{"image": tallest}]}),
                           ("/v1/indexes/strips/upsert", {"items": [{"image": tallest}]})):
            with open(f"/proc/{proc.pid}/clear_refs", "w") as f:
                f.write("5")
            before = _peak_since_reset(proc.pid)
            r = httpx.post(f"{http}{path}", json=body, timeout=120)
            assert r.status_code == 200, r.text
            grew = _peak_since_reset(proc.pid) - before
            print(f"{path}: peak RSS +{grew >> 20} MiB for a 1x{limit // (1 + ROW_PIXELS)} "
                  f"strip; budget {budget >> 20} MiB")
            # per request: each decode thread keeps its own malloc arena, so requests decoded
            # by different threads add up, which ServeConfig.memory_bound counts per thread
            assert grew < budget, f"{path}: +{grew >> 20} MiB, budget {budget >> 20} MiB"
    finally:
        proc.terminate()
        proc.wait(60)
