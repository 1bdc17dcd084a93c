"""Where exported graphs live: one folder per (encoder, weights sha256, input size, tap, torch
version; a text graph takes any length, so its folder says ``tokens`` and the pooling the graph
ends with), under ``$EMBEDSVC_CACHE/runtimes`` (default ``~/.cache/embedsvc/runtimes``).

    fp32.onnx          the exported graph (ONNX Runtime and OpenVINO both read it)
    int8.onnx          int8 (static QDQ for images, dynamic for text), written by ``calibrate``
    calibration.json   its fidelity report (calibrate.py), read by the gate before serving
    openvino-<ver>/    OpenVINO's compiled-model cache, per OpenVINO version

Files are written to a temporary name and renamed, so two processes exporting at once both end
with a whole graph.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from ..versions import library_version


OFF = "off"  # EMBEDSVC_CACHE=off: one-shot commands cache nothing (traced.py, query.py)


def cache_base() -> Path:
    """``$EMBEDSVC_CACHE`` (default ``~/.cache/embedsvc``): every cache embedsvc keeps."""
    base = os.environ.get("EMBEDSVC_CACHE", "")
    return Path(base) if base and base.lower() != OFF else Path.home() / ".cache" / "embedsvc"


def caches_off() -> bool:
    return os.environ.get("EMBEDSVC_CACHE", "").lower() == OFF


def cache_root() -> Path:
    return cache_base() / "runtimes"


def graph_dir(cfg, tap: str) -> Path:
    """The folder of ``cfg``'s (a BackboneConfig or a TextEncoderConfig) graphs for ``tap``."""
    if getattr(cfg, "modality", "image") == "text":
        shape = f"tokens-{cfg.pooling}"
    else:
        _, h, w = cfg.preprocess.input_size
        shape = f"{h}x{w}"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.name)
    key = f"{name}-{cfg.weights_sha256[:16]}-{shape}-{tap}-torch{library_version('torch')}"
    return cache_root() / key


def fp32_graph(encoder, tap: str) -> Path:
    """The fp32 ONNX graph of ``encoder``'s ``tap`` (an image Backbone, or a TextEncoder),
    exported on first use."""
    path = graph_dir(encoder.cfg, tap) / "fp32.onnx"
    if not path.exists():
        with writing(path) as tmp:
            if getattr(encoder, "modality", "image") == "text":
                from .text_graph import export_text_onnx

                export_text_onnx(encoder.cfg, tap, tmp)
            else:
                from .export import export_onnx

                export_onnx(encoder, tap, tmp)
    return path


@contextlib.contextmanager
def writing(path: Path):
    """A temporary path beside ``path``, renamed onto it when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
