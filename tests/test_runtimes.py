"""Exported runtimes (ONNX Runtime, OpenVINO; fp32 and static int8) against torch, the on-disk
graph cache, and the int8 fidelity gate. bench/runtimes.py measures their speed."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from embedsvc.datasets import scan_source
from embedsvc.datasets.fetch import fetch_dataset
from embedsvc.provenance import check_compatible
from embedsvc.errors import IncompatibleError, InvalidInputError
from embedsvc.extract import ExtractConfig, FeatureExtractor
from embedsvc.runtimes.cache import graph_dir

pytestmark = pytest.mark.slow  # real EfficientNet-Lite weights


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDSVC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def photo_paths(tmp_path_factory):
    out = tmp_path_factory.mktemp("photos")
    fetch_dataset("photos", out, limit=60)
    return [r.path for r in scan_source(out)]


def test_static_padding_replaces_every_dynamic_pad_with_the_same_arithmetic(lite0):
    from timm.layers import Conv2dSame

    from embedsvc.runtimes.export import static_padded

    net = copy.deepcopy(lite0.model).eval()
    assert static_padded(net, (3, 224, 224)) == 5
    assert not any(isinstance(m, Conv2dSame) for m in net.modules())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert (net(x) - lite0.model.eval()(x)).abs().max().item() < 1e-4


def test_fp32_runtimes_reproduce_torch_and_are_exported_once(lite0, cache, photo_paths):
    ref = FeatureExtractor(lite0).embed(photo_paths[:16])
    graph = graph_dir(lite0.cfg, "pre_logits") / "fp32.onnx"
    for runtime in ("onnx", "openvino"):
        emb = FeatureExtractor(lite0, ExtractConfig(runtime=runtime)).embed(photo_paths[:16])
        cos = (emb.vectors * ref.vectors).sum(1)
        assert cos.min() > 0.9999, (runtime, cos.min())
        assert emb.provenance["runtime"] == runtime
        check_compatible(ref.provenance, emb.provenance, "a torch store")  # fp32 mixes
    exported = graph.stat().st_mtime_ns
    FeatureExtractor(lite0, ExtractConfig(runtime="onnx"))  # a later process reuses the graph
    assert graph.stat().st_mtime_ns == exported


def test_stage_taps_export_too(lite0, cache, photo_paths):
    ref = FeatureExtractor(lite0, ExtractConfig(tap="middle")).embed(photo_paths[:4]).vectors
    got = FeatureExtractor(lite0, ExtractConfig(tap="middle", runtime="onnx")).embed(photo_paths[:4])
    assert got.vectors.shape == (4, 40) and (got.vectors * ref).sum(1).min() > 0.9999


def test_int8_needs_a_calibration_and_says_how(lite0, cache):
    with pytest.raises(InvalidInputError, match="embedsvc calibrate effnet-lite0 --images"):
        FeatureExtractor(lite0, ExtractConfig(runtime="onnx-int8"))


def test_int8_gate_refuses_a_calibration_on_blank_images(cli, cache, tmp_path, lite0):
    from PIL import Image

    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(12):
        Image.new("RGB", (320, 240), (20 * i,) * 3).save(blank / f"{i}.png")
    r = cli("calibrate", "effnet-lite0", "--images", blank)
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "cosine mean" in errors[0] and "below 0.97" in errors[0]
    report = json.loads((graph_dir(lite0.cfg, "pre_logits") / "calibration.json").read_text())
    assert report["passed"] is False and report["cosine_mean"] < 0.97
    for runtime in ("onnx-int8", "openvino-int8"):
        with pytest.raises(InvalidInputError, match=f"cosine mean {report['cosine_mean']:.4f}"):
            FeatureExtractor(lite0, ExtractConfig(runtime=runtime))


def _has_vnni() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return True  # not Linux: nothing known, expect the usual
    return " avx512_vnni" in flags or " avx_vnni" in flags or " amx_int8" in flags


def test_int8_calibrated_on_photos_passes_and_mixes_only_with_itself(cli, cache, lite0, photo_paths):
    r = cli("calibrate", "effnet-lite0", "--images", photo_paths[0].rsplit("/", 3)[0], "--json")
    if r.returncode == 1 and "int8 refused" in r.stderr and not _has_vnni():
        # Without VNNI, onnxruntime's u8 x s8 kernels saturate their 16-bit sums (its docs say
        # so): on an AVX2-only AMD EPYC the cosine mean was 0.9085 (0.9622 with reduce_range),
        # and the gate refuses int8 there, as it must. The refusal is checked; the rest needs
        # a CPU where int8 holds.
        with pytest.raises(InvalidInputError, match="cosine mean"):
            FeatureExtractor(lite0, ExtractConfig(runtime="onnx-int8"))
        pytest.skip("this CPU has no VNNI: int8 refused by the gate (" +
                    r.stderr.strip().splitlines()[-1][-90:] + ")")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["passed"] and report["cosine_mean"] >= 0.97
    assert report["imagenet_top1_agreement"] is not None and report["held_out"] == 15
    ref = FeatureExtractor(lite0).embed(photo_paths[40:56])
    emb = FeatureExtractor(lite0, ExtractConfig(runtime="onnx-int8")).embed(photo_paths[40:56])
    assert np.mean((emb.vectors * ref.vectors).sum(1)) >= 0.97
    assert emb.provenance["runtime"] == "onnx-int8"
    with pytest.raises(IncompatibleError, match="runtime"):
        check_compatible(ref.provenance, emb.provenance, "a torch store")
