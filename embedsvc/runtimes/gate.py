"""The int8 gate: an int8 runtime runs only on a graph whose calibration report passed.

The report (``calibrate.py``, ``calibrate_text.py``) records the embedding cosine to torch fp32
on held-out inputs; a graph whose cosine mean is below the threshold it was calibrated with (0.97
by default), or whose texts were not language (the report's ``refusal``), is refused, quoting
why, so a calibration on unlike inputs (blank images, junk text) cannot quietly serve worse
vectors.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInputError
from ..provenance import read_artifact
from .cache import graph_dir

MIN_COSINE = 0.97
REPORT_JSON = "calibration.json"


def check_gate(encoder, tap: str, runtime: str) -> Path:
    """The int8 graph of ``encoder``/``tap`` (an image Backbone or a TextEncoder) if its
    calibration passed; else one clear error."""
    folder = graph_dir(encoder.cfg, tap)
    report_path, graph = folder / REPORT_JSON, folder / "int8.onnx"
    inputs = "texts" if getattr(encoder, "modality", "image") == "text" else "images"
    report = read_artifact(report_path, "int8 calibration report") if report_path.exists() else None
    if report is not None and not report["passed"]:
        why = report.get("refusal") or (
            f"its int8 calibration gave embedding cosine mean {report['cosine_mean']:.4f} (min "
            f"{report['cosine_min']:.4f}) to fp32, below the threshold {report['min_cosine']}")
        raise InvalidInputError(
            f"runtime {runtime!r} refused for {encoder.name!r}: {why}; calibrate again on "
            f"{inputs} like the ones you will embed ({report_path})")
    if report is None or not graph.exists():
        how = "--texts FILE" if inputs == "texts" else "--images DIR"
        raise InvalidInputError(
            f"runtime {runtime!r} needs a calibration of {encoder.name!r} (tap {tap}) on your "
            f"{inputs} first: embedsvc calibrate {encoder.name} {how}")
    return graph
