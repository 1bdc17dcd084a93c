"""Inference runtimes for frozen encoders: torch (eager), ONNX Runtime and OpenVINO, in fp32 or
int8 (static for images; dynamic for text, whose activations have outlier channels that one
static range per tensor cannot hold: cosine 0.95 measured on minilm-l6, text_graph.py).

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


# text encoders: no openvino-int8. OpenVINO runs int8 from static ranges only, and static int8
# of a transformer lost too much (cosine 0.82, 0.95 with the FFN outputs kept in float).
TEXT_RUNTIMES = ("torch", "onnx", "openvino", "onnx-int8")


def check_runtime(runtime: str, modality: str = "image") -> str:
    if runtime not in RUNTIMES:
        raise InvalidInputError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if modality == "text" and runtime not in TEXT_RUNTIMES:
        raise InvalidInputError(f"runtime {runtime!r} has no text form; text encoders run on: "
                                f"{', '.join(TEXT_RUNTIMES)}")
    return runtime
