"""Inference runtimes for frozen backbones: torch (eager), ONNX Runtime and OpenVINO, in fp32 or
static int8.

A runtime other than torch runs a graph exported once per (weights sha256, input size, tap,
runtime and its version) and cached on disk (``cache.py``), so later processes load it in
milliseconds. fp32 graphs reproduce torch's features (cosine 1.0000); int8 graphs are calibrated
on the user's own images by ``embedsvc calibrate`` and are refused unless the calibration's
fidelity report passes the gate (``calibrate.py``). Names here are free of torch, so flags and
configs are checked before a model loads.
"""
from __future__ import annotations

from ..errors import InvalidInputError

RUNTIMES = ("torch", "onnx", "openvino", "onnx-int8", "openvino-int8")
DEFAULT_RUNTIME = "torch"
# runtime → the pip distribution it needs (torch is always there)
PACKAGES = {"onnx": "onnxruntime", "onnx-int8": "onnxruntime", "openvino": "openvino",
            "openvino-int8": "openvino"}


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise InvalidInputError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    return runtime
