"""A few query images embedded without torch: what makes ``embedsvc search --image`` start fast.

A one-shot search spent 6 s on 2 cores before its first image, nearly all of it importing torch
(about 2 s) and timm (2.3 s, with torchvision's models and ops) and building the model
(``bench/cli_startup.py`` prints the breakdown). The store's features are reproduced by the
backbone's fp32 ONNX graph to a cosine of 1.0000 (tests/test_runtimes.py; the runtimes may be
mixed, ``provenance.MIXABLE``), and the fast decode path is PIL and numpy alone. So the first
search with an image exports the graph (``runtimes/cache.py``, the folder the ONNX runtime
already uses) and writes ``query.json`` beside it (the transform's resize and crop); every later
one decodes with PIL, normalises with numpy and runs ONNX Runtime, and imports no torch.

Used only where it holds: a store made with ``decode=fast`` and onnxruntime installed. Anything
else (a missing file, ``EMBEDSVC_CACHE=off``) takes the torch path.
"""
from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

from .atomic import atomic_write_bytes
from .backbones.config import PreprocessConfig
from .embeddings import Embeddings, l2_normalize
from .errors import ImageDecodeError
from .images import DEFAULT_MAX_PIXELS, ImageSource, describe, load_upright
from .preprocess import Transform, normalize_array

log = logging.getLogger("embedsvc.query")
QUERY_JSON = "query.json"
QUERY_MAX = 64  # images one call embeds this way; more go to the batched torch extractor


def embedder_for(provenance: dict[str, Any], device: str = "auto", images: int = 1):
    """What embeds ``images`` query images the way ``provenance`` says, soonest: the cached
    graph (CPU, a few images), else ``extract.extractor_for``, whose model then fills the
    cache for the next one-shot command."""
    if device in ("auto", "cpu") and images <= QUERY_MAX:
        if (quick := QueryEmbedder.cached(provenance)) is not None:
            return quick
    from .extract import extractor_for

    fe = extractor_for(provenance, device)
    if device in ("auto", "cpu"):
        QueryEmbedder.prepare(fe)
    return fe


def _graph_dir(provenance: dict[str, Any]):
    from .runtimes.cache import graph_dir

    cfg = SimpleNamespace(name=provenance["backbone"], weights_sha256=provenance["weights_sha256"],
                          preprocess=PreprocessConfig.from_dict(provenance["preprocess"]))
    return graph_dir(cfg, provenance["tap"])


def _usable(provenance: dict[str, Any]) -> bool:
    import importlib.util

    from .runtimes.cache import caches_off

    return (not caches_off()
            and provenance.get("decode") == "fast" and provenance.get("weights_sha256")
            and importlib.util.find_spec("onnxruntime") is not None)


class QueryEmbedder:
    """Embeds images as ``extractor_for(provenance)`` does, from the cached graph."""

    def __init__(self, provenance: dict[str, Any], graph: str, fast_plan: list):
        import onnxruntime as ort

        self.provenance = {**provenance, "runtime": "onnx"}
        self.cfg = PreprocessConfig.from_dict(provenance["preprocess"])
        self.transform = Transform(self.cfg, "fast", fast_plan)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        self.session = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])

    @classmethod
    def cached(cls, provenance: dict[str, Any]) -> "QueryEmbedder | None":
        if not _usable(provenance):
            return None
        d = _graph_dir(provenance)
        try:
            meta = json.loads((d / QUERY_JSON).read_text())
            if not (d / "fp32.onnx").is_file():
                return None
            return cls(provenance, str(d / "fp32.onnx"), meta["fast_plan"])
        except Exception:  # noqa: BLE001 - no cache, or an unreadable one: the torch path
            return None

    @staticmethod
    def prepare(fe) -> None:
        """Export what a later query needs from a torch ``FeatureExtractor`` (best effort)."""
        prov = fe.provenance
        if not _usable(prov) or fe.transform.fast_plan is None:
            return
        try:
            from .backbones import create_backbone
            from .provenance import check_weights
            from .runtimes.cache import fp32_graph

            backbone = fe.backbone
            if not hasattr(backbone, "model"):  # a cached trace holds no exportable model
                backbone = create_backbone(prov["backbone"])
                check_weights(backbone.cfg, prov, "features")
            graph = fp32_graph(backbone, prov["tap"])
            atomic_write_bytes(graph.parent / QUERY_JSON,
                               json.dumps({"fast_plan": fe.transform.fast_plan}).encode())
        except Exception as exc:  # noqa: BLE001 - the next search just takes the torch path
            log.warning("cannot cache the query graph: %s", exc)

    def embed(self, images: Sequence[ImageSource], ids: Sequence[str] | None = None,
              skip_bad: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> Embeddings:
        """As ``FeatureExtractor.embed``: a bad image raises, or with ``skip_bad`` is listed."""
        arrays, kept, skipped = [], [], []
        names = list(ids) if ids is not None else [describe(src) for src in images]
        for src, name in zip(images, names):
            try:
                img, _ = load_upright(src, name, max_pixels, self.transform.draft_to)
                try:
                    arrays.append(self.transform.array(img))
                except Exception as exc:  # noqa: BLE001 - as prepare_image: this image's problem
                    raise ImageDecodeError(name, f"cannot resize ({type(exc).__name__}: {exc})") \
                        from None
            except ImageDecodeError as exc:
                if not skip_bad:
                    raise
                skipped.append((name, exc.reason))
                continue
            kept.append(name)
        if arrays:
            x = normalize_array(np.stack(arrays), self.cfg)
            out = self.session.run(None, {"x": x})[0].astype(np.float32, copy=False)
            out = l2_normalize(out) if self.provenance.get("normalized") else out
        else:
            out = np.zeros((0, int(self.provenance["dim"])), np.float32)
        return Embeddings(out, tuple(kept), self.provenance, tuple(skipped))
