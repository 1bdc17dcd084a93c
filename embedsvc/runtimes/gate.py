"""The int8 gate: an int8 runtime runs only on a graph whose calibration report passed.

The report (``calibrate.py``) records the embedding cosine to torch fp32 on held-out images; a
graph whose cosine mean is below the threshold it was calibrated with (0.97 by default) is
refused, quoting the figures, so a calibration on unlike images (blank ones, say) cannot quietly
serve worse vectors.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInputError
from ..provenance import read_artifact
from .cache import graph_dir

MIN_COSINE = 0.97
REPORT_JSON = "calibration.json"


def check_gate(backbone, tap: str, runtime: str) -> Path:
    """The int8 graph of ``backbone``/``tap`` if its calibration passed; else one clear error."""
    folder = graph_dir(backbone.cfg, tap)
    report_path, graph = folder / REPORT_JSON, folder / "int8.onnx"
    if not report_path.exists() or not graph.exists():
        raise InvalidInputError(
            f"runtime {runtime!r} needs a calibration of {backbone.name!r} (tap {tap}) on your "
            f"images first: embedsvc calibrate {backbone.name} --images DIR")
    report = read_artifact(report_path, "int8 calibration report")
    if not report["passed"]:
        raise InvalidInputError(
            f"runtime {runtime!r} refused for {backbone.name!r}: its int8 calibration gave embedding "
            f"cosine mean {report['cosine_mean']:.4f} (min {report['cosine_min']:.4f}) to fp32, "
            f"below the threshold {report['min_cosine']}; calibrate again on images like the "
            f"ones you will embed ({report_path})")
    return graph
