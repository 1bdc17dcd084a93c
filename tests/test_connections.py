"""Connections that cannot starve the server, against a real server on localhost: silent and
slow clients on both listeners, oversized headers, bodies admitted before they are read by one
rule whatever their transfer encoding, and messages that do not parse."""
from __future__ import annotations

import socket
import threading
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import TINY, wait_for
from embedsvc.service.config import ServeConfig
from embedsvc.service.grpc_server import Server

CAP, HEADER_TIMEOUT = 24, 2.0
INFLIGHT = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(ServeConfig(port=0, http_port=0, data_dir=str(tmp_path_factory.mktemp("conn")),
                             default_backbone=TINY, max_connections=CAP,
                             header_timeout_s=HEADER_TIMEOUT, body_timeout_s=HEADER_TIMEOUT,
                             max_header_bytes=16 << 10, max_inflight_bytes=INFLIGHT,
                             max_message_bytes=4 << 20)).start()
    yield srv
    srv.stop(grace=5)


def _silent(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.settimeout(HEADER_TIMEOUT + 5)
        socks.append(s)
    return socks


def _closed_by_server(s: socket.socket) -> bool:
    """True once the server has closed ``s`` (EOF or reset, after any answer it wrote)."""
    try:
        while s.recv(4096):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_twice_the_cap_of_silent_connections_cannot_stop_health(server):
    """2 x max_connections silent TCP connections on each listener: /healthz (each probe on a
    new connection) and gRPC Health answer within 1 s throughout, and the server closes every
    silent connection within header_timeout_s."""
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
    probes: list[tuple[str, float]] = []
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            t0 = time.perf_counter()
            r = httpx.get(f"http://127.0.0.1:{server.http_port}/healthz", timeout=1.0)
            probes.append(("http", time.perf_counter() - t0))
            assert r.status_code == 200
            t0 = time.perf_counter()
            health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            probes.append(("grpc", time.perf_counter() - t0))
            time.sleep(0.05)

    errors: list[BaseException] = []

    def guarded():
        try:
            probe()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=guarded)
    t.start()
    opened = time.monotonic()
    try:
        silent = _silent(server.http_port, 2 * CAP) + _silent(server.port, 2 * CAP)
        closed = [_closed_by_server(s) for s in silent]  # each waits up to the time-out + 5 s
        elapsed = time.monotonic() - opened
    finally:
        stop.set()
        t.join()
        channel.close()
    assert not errors, errors
    assert all(closed), f"{closed.count(False)} of {len(silent)} silent connections still open"
    assert elapsed < HEADER_TIMEOUT + 5
    # each probe had a 1 s deadline (the requirement), so every one of them answered in time
    assert {kind for kind, _ in probes} == {"http", "grpc"}
    refused = server.core.metrics.registry.get_sample_value
    # each silent HTTP connection past the cap closed an older one; the rest timed out
    assert refused("embedsvc_connections_refused_total",
                   {"listener": "http", "reason": "evicted"}) >= CAP
    assert refused("embedsvc_connections_refused_total",
                   {"listener": "http", "reason": "header_timeout"}) >= 1
    for s in silent:
        s.close()


def _raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def test_slow_headers_and_bodies_are_cut_off(server):
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        try:
            while True:  # a header line every 0.5 s, never the end of the headers
                s.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.5)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert time.monotonic() - t0 < HEADER_TIMEOUT + 3
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
        s.sendall(b"DELETE /v1/indexes/x/items HTTP/1.1\r\nHost: x\r\nContent-Type: "
                  b"application/json\r\nContent-Length: 1000\r\n\r\n{")
        t0 = time.monotonic()
        assert _closed_by_server(s)
        assert time.monotonic() - t0 < HEADER_TIMEOUT + 3


def test_a_huge_header_is_431(server):
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (16 << 20) + b"\r\n\r\n"
    try:
        answer = _raw(server.http_port, big)
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server closed the connection without answering 431")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert httpx.get(f"http://127.0.0.1:{server.http_port}/healthz").status_code == 200


def test_chunked_and_sized_bodies_are_admitted_by_one_rule(server):
    url = f"http://127.0.0.1:{server.http_port}/v1/indexes/none/items"
    body = b'{"ids": [' + b",".join(b"1" for _ in range(1000)) + b"]" + b" " * INFLIGHT + b"}"
    sized = httpx.request("DELETE", url, content=body,
                          headers={"Content-Type": "application/json"})

    def chunks():
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    chunked = httpx.request("DELETE", url, content=chunks(),
                            headers={"Content-Type": "application/json"})
    assert "transfer-encoding" not in sized.request.headers
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    for r in (sized, chunked):  # over max_inflight_bytes: it can never pass, so 413, not 429
        assert r.status_code == 413, r.text
        assert "max_inflight_bytes" in r.json()["error"]["message"]
        assert "retry-after" not in r.headers
    small = b'{"ids": [1, 2, 3]}'
    for content in (small, iter([small[:5], small[5:]])):
        r = httpx.request("DELETE", url, content=content,
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 404, r.text  # admitted, then: no such index
    wait_for(lambda: server.core.admission.bytes == 0, what="every byte given back")


def test_too_many_items_are_refused_before_parsing(server):
    url = f"http://127.0.0.1:{server.http_port}/v1/indexes/none/items"
    many = b'{"ids": [' + b",".join(b"7" for _ in range(server.config.max_items_per_request
                                                       + 1)) + b"]}"
    r = httpx.request("DELETE", url, content=many, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "max_items_per_request" in r.text, r.text
    up = f"http://127.0.0.1:{server.http_port}/v1/indexes/none/upsert"
    items = b",".join(b'{"vector": [1], "metadata": {"a": "{{{"}}'
                      for _ in range(server.config.max_items_per_request))
    r = httpx.post(up, content=b'{"items": [' + items + b"]}",
                   headers={"Content-Type": "application/json"})
    assert r.status_code != 413, r.text  # braces inside strings count for nothing


def test_a_message_that_does_not_parse_is_invalid_argument(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for method in ("Embed", "Upsert", "ListIndexes"):
            call = channel.unary_unary(f"/embedsvc.v1.EmbeddingService/{method}")
            with pytest.raises(grpc.RpcError) as err:
                call(b"\xff\xff\xff\xff\x0f", timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
            assert "not a valid" in err.value.details()
