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
    assert stable.mmd2 < stable.threshold and stable.p_value >= 0.005, stable
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
    assert g["embedsvc_drift"] > g["embedsvc_drift_threshold"] and g["embedsvc_drift_p_value"] < 0.005
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


def test_gap_and_the_servers_drift_check_give_one_verdict_on_a_small_target(
        cli, photo_images, tmp_path):
    """24 darkened, blurred variants of a 93-image folder: `gap` says they differ and names the
    test that decided; the server, given the same 24 through Classify, says drifted; two
    random halves of the folder are similar."""
    import json
    import random
    import shutil

    from PIL import ImageEnhance, ImageFilter

    from crops import photo_folders
    from embedsvc.store import embed_dataset

    train, _, _ = photo_folders(photo_images, tmp_path, held_per_class=0, others=0)
    data = tmp_path / "data"
    embed_dataset(train, tmp_path / "store", progress=False)
    train_head(tmp_path / "store", data / "heads" / "photos", TrainHeadConfig(), progress=False)
    files = sorted(train.rglob("*.*"))
    random.Random(0).shuffle(files)
    dark, halves = tmp_path / "dark", (tmp_path / "h1", tmp_path / "h2")
    for d in (dark, *halves):
        d.mkdir()
    for i, f in enumerate(files):
        shutil.copy(f, halves[i % 2] / f"{i}{f.suffix}")
        if i < 24:
            img = Image.open(f).convert("RGB")
            img = ImageEnhance.Brightness(img).enhance(0.45).filter(ImageFilter.GaussianBlur(2))
            img.save(dark / f"{i}.jpg", quality=90)

    r = cli("gap", tmp_path / "store", dark, "--json", "--png", tmp_path / "g.png", "--quiet")
    assert r.returncode == 0, r.stderr
    shifted = json.loads(r.stdout)
    assert shifted["verdict"] in ("shifted", "very different"), shifted
    assert "significant at 0.005" in shifted["decided_by"]
    r = cli("gap", *halves, "--json", "--png", tmp_path / "h.png", "--quiet")
    same = json.loads(r.stdout)
    # printed after the last cli call: each call discards what was captured before it
    print("gap store vs dark:", {k: shifted[k] for k in ("verdict", "decided_by", "mmd_p_value",
                                                          "domain_p_value")})
    print("gap half vs half:", {k: same[k] for k in ("verdict", "mmd_p_value", "domain_p_value")})
    assert same["verdict"] == "similar", same

    srv = Server(ServeConfig(port=0, data_dir=str(data), drift_window=24,
                             drift_interval_s=60)).start()
    try:
        stub = pb_grpc.EmbeddingServiceStub(grpc.insecure_channel(f"127.0.0.1:{srv.port}"))
        images = [pb.Image(id=p.name, data=p.read_bytes()) for p in sorted(dark.iterdir())]
        stub.Classify(pb.ClassifyRequest(images=images, head="photos"))
        report = stub.GetDrift(pb.GetDriftRequest(head="photos")).heads[0]
    finally:
        srv.stop(grace=5)
    print("server drift:", report.verdict, report.decided_by)
    assert report.verdict == "drifted" and report.window == 24, report
    assert report.p_value < 0.005 and "significant at 0.005" in report.decided_by
