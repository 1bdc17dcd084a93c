"""Prometheus metrics of the service, on their own registry (so several servers in one process,
as in tests, do not collide), exposed over HTTP when ``metrics_port`` is set."""
from __future__ import annotations

from typing import Callable

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app,
                               start_http_server)
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("embedsvc_requests_total", "RPCs by method and status code",
                                ("method", "code"), registry=self.registry)
        self.latency = Histogram("embedsvc_request_seconds", "RPC latency by method", ("method",),
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("embedsvc_batch_size", "images per model batch", ("model",),
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.images = Counter("embedsvc_images_total", "images through the models (rate = img/s)",
                              ("model",), registry=self.registry)
        self.queue_depth = Gauge("embedsvc_queue_depth", "images waiting for a batch",
                                 registry=self.registry)
        self.in_flight = Gauge("embedsvc_requests_in_flight", "requests admitted and not yet "
                               "answered (streams not counted)", registry=self.registry)
        self.connections_refused = Counter(
            "embedsvc_connections_refused_total", "HTTP connections refused or closed by a "
            "connection limit (http_connections.py), by reason", ("listener", "reason"),
            registry=self.registry)
        self.drift = Gauge("embedsvc_drift", "MMD^2 between a head's recent inputs and its "
                           "training sample", ("head",), registry=self.registry)
        self.drift_threshold = Gauge("embedsvc_drift_threshold", "embedsvc_drift above this: "
                                     "the MMD permutation test is significant (level 0.005)", ("head",),
                                     registry=self.registry)
        self.drift_p_value = Gauge("embedsvc_drift_p_value", "the smaller p-value of the drift "
                                   "check's two tests (drifted below 0.005)", ("head",), registry=self.registry)

    def observe_batch(self, model: str, size: int) -> None:
        self.batch_size.labels(model).observe(size)
        self.images.labels(model).inc(size)

    def observe_drift(self, report) -> None:
        self.drift.labels(report.head).set(report.mmd2)
        self.drift_threshold.labels(report.head).set(report.threshold)
        self.drift_p_value.labels(report.head).set(report.p_value)

    def watch_queue(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def watch_in_flight(self, requests: Callable[[], float]) -> None:
        self.in_flight.set_function(requests)

    def watch_snapshots(self, snapshots: Callable[[], list[dict]]) -> None:
        """Per index: the snapshot served (a reader) or last published (a writer), read at each
        scrape, so an index that is gone is gone from the metrics too."""
        self.registry.register(_SnapshotCollector(snapshots))

    def serve_http(self, port: int, host: str = "127.0.0.1", token: str | None = None) -> int:
        """Serve /metrics; with ``token``, only to 'Authorization: Bearer TOKEN' (what
        Prometheus sends with ``authorization: {credentials: TOKEN}``): the metrics name the
        indexes and heads, which the API keeps behind the same token."""
        if token is None:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
            return server.server_address[1]
        return _serve_with_token(make_wsgi_app(self.registry), host, port, token)


class _SnapshotCollector:
    def __init__(self, snapshots: Callable[[], list[dict]]):
        self.snapshots = snapshots

    def collect(self):
        seq = GaugeMetricFamily("embedsvc_snapshot_seq", "writes 1..seq are in the index's "
                                "snapshot served (reader) or last published (writer)",
                                labels=("index",))
        applied = GaugeMetricFamily("embedsvc_applied_seq", "writes 1..seq are in effect on "
                                    "this server (a reader: its snapshot's)", labels=("index",))
        at = GaugeMetricFamily("embedsvc_snapshot_published_timestamp_seconds", "when that "
                               "snapshot was written (unix seconds)", labels=("index",))
        for s in self.snapshots():
            seq.add_metric([s["index"]], s["seq"])
            applied.add_metric([s["index"]], s["applied_seq"])
            at.add_metric([s["index"]], s["published_at"])
        yield from (seq, applied, at)


def _serve_with_token(app, host: str, port: int, token: str) -> int:
    import hmac
    import threading
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    expected = f"Bearer {token}".encode()

    def guarded(environ, start_response):
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        if not hmac.compare_digest(given, expected):
            start_response("401 Unauthorized", [("WWW-Authenticate", "Bearer"),
                                                ("Content-Type", "text/plain")])
            return [b"missing or wrong bearer token\n"]
        return app(environ, start_response)

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:  # the process logs JSON; no access lines
            pass

    class Threading(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    server = make_server(host, port, guarded, server_class=Threading, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server.server_address[1]
