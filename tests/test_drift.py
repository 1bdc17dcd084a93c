"""Drift of live traffic on a real server: a trained head's window of recent inputs against its
training sample, as a gauge with its threshold and as GetDrift."""
from __future__ import annotations

import io
import re
import time
import urllib.request

import grpc
import numpy as np
import pytest
from PIL import Image

from classifiers.heads.train import TrainHeadConfig, train_head
from embedsvc.datasets.fetch import load_fashion_mnist
from embedsvc.datasets.shifts import shift_images
from embedsvc.service.config import ServeConfig
from embedsvc.service.drift import DriftMonitor
from embedsvc.service.grpc_server import Server
from embedsvc.service.metrics import ServiceMetrics
from embedsvc.v1 import embedsvc_pb2 as pb
from embedsvc.v1 import embedsvc_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow  # real EfficientNet-Lite weights (see README: Tests and CI)
WINDOW = 60


@pytest.fixture(scope="module")
def served(fmnist_store, tmp_path_factory):
    data = tmp_path_factory.mktemp("drift")
    train_head(fmnist_store.root, data / "heads" / "fmnist", TrainHeadConfig(), progress=False)
    srv = Server(ServeConfig(port=0, data_dir=str(data), metrics_port=0, drift_window=WINDOW,
                             drift_interval_s=0.5)).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    yield srv, pb_grpc.EmbeddingServiceStub(channel)
    channel.close()
    srv.stop(grace=5)


def _pngs(images: np.ndarray) -> list[pb.Image]:
    out = []
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append(pb.Image(id=str(i), data=buf.getvalue()))
    return out


def _gauges(srv) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics",
                                  timeout=30).read().decode()
    return {m[1]: float(m[2]) for m in
            re.finditer(r'^(embedsvc_drift\w*)\{head="fmnist"\} (\S+)$', text, re.M)}


def test_the_drift_gauge_rises_past_its_threshold_for_shifted_inputs_only(served):
    srv, stub = served
    x, _ = load_fashion_mnist("test")
    before = stub.GetDrift(pb.GetDriftRequest(head="fmnist")).heads[0]
    assert before.verdict == "warming up"
    for chunk in np.split(x[2000:2000 + WINDOW], 2):  # in-domain images the head never saw
        stub.Classify(pb.ClassifyRequest(images=_pngs(chunk), head="fmnist"))
    stable = stub.GetDrift(pb.GetDriftRequest(head="fmnist")).heads[0]
    assert stable.verdict == "stable" and stable.window == WINDOW, stable
    assert stable.mmd2 < stable.threshold and stable.p_value > 0.01
    g = _gauges(srv)
    assert g["embedsvc_drift"] < g["embedsvc_drift_threshold"]

    dark = shift_images(x[3000:3000 + WINDOW], "dark", 1.0)
    for chunk in np.split(dark, 2):
        stub.Classify(pb.ClassifyRequest(images=_pngs(chunk), head="fmnist"))
    deadline = time.monotonic() + 30  # the background check updates the gauges by itself
    while time.monotonic() < deadline:
        g = _gauges(srv)
        if g["embedsvc_drift"] > g["embedsvc_drift_threshold"]:
            break
        time.sleep(0.2)
    assert g["embedsvc_drift"] > g["embedsvc_drift_threshold"] and g["embedsvc_drift_p_value"] <= 0.01
    drifted = stub.GetDrift(pb.GetDriftRequest()).heads  # every trained head
    assert [(d.head, d.verdict) for d in drifted] == [("fmnist", "drifted")]
    assert drifted[0].mmd2 > 5 * stable.mmd2

    with pytest.raises(grpc.RpcError) as e:
        stub.GetDrift(pb.GetDriftRequest(head="nope"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "fmnist" in e.value.details()
    assert stub.GetDrift(pb.GetDriftRequest(head="imagenet")).heads[0].verdict == "no reference"


def test_a_head_without_a_training_sample_reports_no_reference_and_costs_nothing():
    class Old:
        ood = None

    monitor = DriftMonitor(10, 60.0, ServiceMetrics(), lambda: {"old": Old()})
    try:
        monitor.record("old", Old(), np.ones((4, 8), np.float32))
        assert [r.verdict for r in monitor.reports()] == ["no reference"]
        assert monitor._windows == {}
    finally:
        monitor.close()
