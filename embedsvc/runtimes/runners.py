"""Run an exported graph: its inputs in order (an image graph: a normalised float32 batch
(N, 3, H, W); a text graph: token ids and attention mask (N, T)) → (N, D) float32 features.

``load_runner`` is the one way in: it exports on first use, and for an int8 runtime it checks
the calibration's fidelity report first (``gate.check_gate``).
"""
from __future__ import annotations

import threading

import numpy as np

from ..errors import InvalidInputError
from ..versions import library_version
from . import PACKAGES, check_runtime
from .cache import fp32_graph, graph_dir


def load_runner(encoder, tap: str, runtime: str, threads: int):
    """The runner of ``runtime`` for ``encoder``'s ``tap`` (an image Backbone or a TextEncoder)."""
    check_runtime(runtime, getattr(encoder, "modality", "image"))
    _require(runtime)
    if runtime.endswith("-int8"):
        from .gate import check_gate

        path = check_gate(encoder, tap, runtime)
    else:
        path = fp32_graph(encoder, tap)
    if runtime.startswith("onnx"):
        return OnnxRunner(path, threads)
    return OpenVinoRunner(path, graph_dir(encoder.cfg, tap), threads)


def _require(runtime: str) -> None:
    if library_version(PACKAGES[runtime]) is None:
        raise InvalidInputError(f"runtime {runtime!r} needs the {PACKAGES[runtime]!r} package: "
                                f"pip install 'embedsvc[runtimes]'")


class OnnxRunner:
    def __init__(self, path, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # its warnings about unused initialisers are noise here
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, np.int64 if i.type == "tensor(int64)" else np.float32)
                       for i in self.session.get_inputs()]

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        return self.session.run(None, {name: np.ascontiguousarray(a, dtype=dtype)
                                       for (name, dtype), a in zip(self.inputs, arrays)})[0]


class OpenVinoRunner:
    """OpenVINO in its throughput mode: the batch is split over its parallel infer requests
    (streams), which keeps both cores of a small machine busy where one request would not."""

    def __init__(self, path, folder, threads: int):
        import openvino as ov

        core = ov.Core()
        core.set_property({"CACHE_DIR": str(folder / f"openvino-{library_version('openvino')}")})
        config = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_NUM_THREADS": threads}
        if "int8" not in str(path):
            # f32 really: on CPUs with bf16 units OpenVINO would otherwise compute in bf16
            config["INFERENCE_PRECISION_HINT"] = "f32"
        self.compiled = core.compile_model(str(path), "CPU", config)
        self.requests = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.queue = ov.AsyncInferQueue(self.compiled, self.requests)
        self.lock = threading.Lock()

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        n = len(arrays[0])
        bounds = np.array_split(np.arange(n), min(self.requests, n))
        chunks = [[np.ascontiguousarray(a[b[0]:b[-1] + 1]) for a in arrays] for b in bounds if len(b)]
        out: list[np.ndarray | None] = [None] * len(chunks)

        def done(request, i):
            out[i] = request.get_output_tensor(0).data.copy()

        with self.lock:  # one callback and one set of requests per runner
            self.queue.set_callback(done)
            for i, chunk in enumerate(chunks):
                self.queue.start_async(dict(enumerate(chunk)), i)
            self.queue.wait_all()
        return np.concatenate(out)
