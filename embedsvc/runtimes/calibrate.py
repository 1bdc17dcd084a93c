"""Static int8 from the user's own images, with a fidelity report and a gate.

``calibrate`` quantises the fp32 graph with ONNX Runtime's static QDQ quantiser (per-channel
int8 weights, uint8 activations, percentile ranges: the combination that kept cosine 0.98+
here, where dynamic int8 and torch's FX quantisation were slow or inaccurate), calibrated on
three quarters of the images, and measures on the other quarter against torch fp32:

- embedding cosine (mean, min);
- top-1 agreement of the backbone's own ImageNet classifier (pre_logits tap only);
- with a labelled store of the same backbone: a logistic-regression probe trained on the store's
  fp32 vectors, its accuracy on held-out rows re-embedded in int8 against their fp32 vectors.

The report is written beside the int8 graph (``calibration.json``); ``gate.check_gate`` reads
it before an int8 runtime runs.
"""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import InvalidInputError
from ..embeddings import l2_normalize
from ..provenance import write_artifact
from ..extract import ExtractConfig, FeatureExtractor
from ..preprocess import normalize
from ..versions import library_version
from .cache import fp32_graph, graph_dir, writing
from .gate import MIN_COSINE, REPORT_JSON
from .runners import OnnxRunner

MAX_CALIBRATION_IMAGES = 256
PROBE_ROWS = 1000  # labelled store rows used by the probe (half train, half test)


def calibrate(backbone, images: Sequence[str], tap: str = "pre_logits", decode: str = "fast",
              store: str | None = None, min_cosine: float = MIN_COSINE) -> dict:
    """Quantise, measure, write ``int8.onnx`` and ``calibration.json``; return the report."""
    if not 0 < min_cosine <= 1:
        raise InvalidInputError(f"min_cosine must be in (0, 1], got {min_cosine}")
    fe = FeatureExtractor(backbone, ExtractConfig(tap=tap, decode=decode, normalize=False,
                                                  device="cpu"))
    tensors, skipped = [], 0
    for path in images:
        try:
            tensors.append(fe.prepare(path)[0])
        except InvalidInputError:
            skipped += 1
    if len(tensors) < 4:
        raise InvalidInputError(f"calibration needs at least 4 readable images, got {len(tensors)}")
    x = normalize(torch.stack(tensors), backbone.cfg.preprocess).numpy()
    held = np.arange(len(x)) % 4 == 3
    calib = x[~held][:MAX_CALIBRATION_IMAGES]
    folder = graph_dir(backbone.cfg, tap)
    t0 = time.perf_counter()
    with writing(folder / "int8.onnx") as tmp:
        _quantize(fp32_graph(backbone, tap), tmp, calib, folder)
        int8 = OnnxRunner(tmp, torch.get_num_threads())
        fp32 = _batched(lambda b: fe.embed_tensor(torch.from_numpy(b), normalize_output=False), x[held])
        q = _batched(int8, x[held])
        report = {
            # the fp32 vectors the int8 graph is measured against
            "provenance": fe.provenance_for(tap, False, int(fp32.shape[1])),
            "images": len(tensors), "unreadable": skipped, "calibrated_on": len(calib),
            "held_out": int(held.sum()), **_cosines(fp32, q),
            "imagenet_top1_agreement": _top1_agreement(backbone, tap, fp32, q),
            "probe": _probe(store, fe, int8) if store else None,
            "min_cosine": min_cosine, "quantiser": f"onnxruntime {library_version('onnxruntime')} "
                                                   f"static QDQ, per-channel s8 weights, u8 activations, percentile",
            "seconds": round(time.perf_counter() - t0, 1),
        }
        report["passed"] = report["cosine_mean"] >= min_cosine
    return write_artifact(folder / REPORT_JSON, report, report["provenance"])


def _quantize(src: Path, dst: Path, calib: np.ndarray, folder: Path) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    size = min(8, len(calib))  # equal batches: the percentile collector stacks them

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": calib[i:i + size]}
                                 for i in range(0, len(calib) - size + 1, size)])

        def get_next(self):
            return next(self.batches, None)

    # the quantiser prints its progress on stdout, which belongs to our results
    with writing(folder / "fp32.pre.onnx") as pre, contextlib.redirect_stdout(sys.stderr):
        quant_pre_process(str(src), str(pre))
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"CalibPercentile": 99.99})


def _batched(run, x: np.ndarray, size: int = 32) -> np.ndarray:
    return np.concatenate([np.asarray(run(x[i:i + size])) for i in range(0, len(x), size)])


def _cosines(a: np.ndarray, b: np.ndarray) -> dict:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {"cosine_mean": round(float(cos.mean()), 4), "cosine_min": round(float(cos.min()), 4)}


def _top1_agreement(backbone, tap: str, fp32: np.ndarray, q: np.ndarray) -> float | None:
    head = backbone.imagenet_classifier() if tap == "pre_logits" else None
    if head is None:
        return None
    w, b = head.weight.detach().cpu().numpy(), head.bias.detach().cpu().numpy()
    return round(float(((fp32 @ w.T + b).argmax(1) == (q @ w.T + b).argmax(1)).mean()), 4)


def _probe(store_path: str, fe, int8) -> dict:
    """A logistic probe trained on the store's fp32 vectors: accuracy on held-out rows with their
    fp32 vectors and with their images re-embedded in int8."""
    from ..provenance import check_compatible
    from ..store import EmbeddingStore

    store = EmbeddingStore.open(store_path)
    check_compatible(store.provenance, {**fe.provenance, "normalized": store.provenance["normalized"]},
                     f"store {store_path!r}")
    meta = store.metadata()
    rows = [i for i, m in enumerate(meta) if m.get("label")][:PROBE_ROWS]
    if len(rows) < 20:
        raise InvalidInputError(f"store {store_path!r} has {len(rows)} labelled rows; the probe needs 20")

    def reembed(test_rows: list[int]) -> np.ndarray:
        x = torch.stack([fe.prepare(meta[i]["path"])[0] for i in test_rows])
        return _batched(int8, normalize(x, fe.backbone.cfg.preprocess).numpy())

    return probe_report(store, rows, reembed)


def probe_report(store, rows: list[int], reembed) -> dict:
    """A logistic probe trained on the even ``rows`` of ``store`` (fp32 vectors), scored on the
    odd ones with their stored vectors and with ``reembed(those rows)`` (int8 features)."""
    from sklearn.linear_model import LogisticRegression

    meta = store.metadata()
    vectors = store.vectors()[rows].astype(np.float32)
    labels = np.array([meta[i]["label"] for i in rows])
    train, test = np.arange(len(rows)) % 2 == 0, np.arange(len(rows)) % 2 == 1
    probe = LogisticRegression(max_iter=2000).fit(vectors[train], labels[train])
    q = reembed([rows[i] for i in np.flatnonzero(test)])
    if store.provenance["normalized"]:
        q = l2_normalize(q)
    fp32_acc = float(probe.score(vectors[test], labels[test]))
    int8_acc = float(probe.score(q, labels[test]))
    return {"rows": len(rows), "fp32_accuracy": round(fp32_acc, 4),
            "int8_accuracy": round(int8_acc, 4), "delta_pt": round(100 * (int8_acc - fp32_acc), 2)}
