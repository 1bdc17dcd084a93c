"""Vectors with the provenance of the model that made them."""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IncompatibleError
from .atomic import atomic_write_bytes

# The provenance keys that must agree for two sets of vectors to be comparable; ``decode`` and
# ``runtime`` up to MIXABLE.
BINDING_KEYS = ("backbone", "modality", "weights_sha256", "preprocess", "tokenizer_sha256",
                "max_length", "pooling", "dim", "tap", "normalized", "decode", "runtime")

# key → (values that may be mixed, the value of a provenance without the key). Mixable values make
# vectors close enough that no store, index or head can tell:
# - decode: fast vs exact measured cosine 0.998 mean on 500-1200 px photos and the same
#   logistic-head accuracy (preprocess.py; tests/test_fast_decode.py fails below 0.995, and then
#   this rule must go);
# - runtime: the fp32 runtimes reproduce torch's features (cosine 1.0000, tests/test_runtimes.py);
#   int8 ones (cosine ~0.99) mix with nothing but themselves.
# - modality: never mixed (no encoder here declares a space shared by images and text); every
#   provenance from before text encoders is an image's.
MIXABLE = {"decode": ({"fast", "exact"}, "exact"), "runtime": ({"torch", "onnx", "openvino"}, "torch"),
           "modality": (set(), "image")}


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero). One function, so vectors made by the
    library, a store and the server are bitwise the same."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Embeddings:
    """``vectors`` (N, D) float32, one row per entry of ``ids``; ``skipped`` lists (id, reason)
    for inputs that could not be decoded; ``truncated`` the ids of inputs cut to fit the
    encoder (text longer than its token limit); ``tokens`` what the texts cost."""

    vectors: np.ndarray
    ids: tuple[str, ...]
    provenance: dict[str, Any]
    skipped: tuple[tuple[str, str], ...] = field(default=())
    truncated: tuple[str, ...] = field(default=())
    tokens: int = 0  # tokens the encoder read (texts, after truncation); 0 for images

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (.npy) and ``path`` + ``.json`` (ids, provenance, skipped), atomically."""
        path = Path(path)
        if path.suffix != ".npy":
            path = path.with_suffix(path.suffix + ".npy") if path.suffix else path.with_suffix(".npy")
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(self.vectors, dtype=np.float32))
        atomic_write_bytes(path, buf.getvalue())
        meta = {"ids": list(self.ids), "provenance": self.provenance,
                "skipped": [list(s) for s in self.skipped], "truncated": list(self.truncated)}
        atomic_write_bytes(sidecar(path), json.dumps(meta, indent=2).encode())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Embeddings":
        path = Path(path)
        meta = json.loads(sidecar(path).read_text())
        vectors = np.load(path, allow_pickle=False)
        return cls(vectors, tuple(meta["ids"]), meta["provenance"],
                   tuple(tuple(s) for s in meta.get("skipped", ())),
                   tuple(meta.get("truncated", ())))


def sidecar(npy_path: Path) -> Path:
    return npy_path.with_name(npy_path.name + ".json")


def check_compatible(expected: dict[str, Any], actual: dict[str, Any], what: str) -> None:
    """Refuse features that were not made the way ``expected`` says (open_clip's probe rule)."""
    for key in BINDING_KEYS:
        if key in MIXABLE:  # absent: the value every artifact had before the key existed
            mixable, before = MIXABLE[key]
            want, got = expected.get(key) or before, actual.get(key) or before
            if want != got and not {want, got} <= mixable:
                raise IncompatibleError(f"{what} expects {key}={want!r} but the embeddings have "
                                        f"{key}={got!r}")
            continue
        if key in expected and expected.get(key) != actual.get(key):
            raise IncompatibleError(
                f"{what} expects {key}={expected.get(key)!r} but the embeddings have "
                f"{key}={actual.get(key)!r}"
            )


def check_weights(cfg, expected: dict[str, Any], what: str) -> None:
    """Refuse a loaded backbone (its ``BackboneConfig``) whose weights are not the ones
    ``expected`` (a provenance: store, head, index, run parent) was made with."""
    want = expected["weights_sha256"]
    if cfg.weights_sha256 != want:
        raise IncompatibleError(
            f"{what} {'were' if what.endswith('s') else 'was'} made with {expected['backbone']} "
            f"weights {want[:12]}…, but the loaded weights are {cfg.weights_sha256[:12]}…")
