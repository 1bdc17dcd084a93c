"""Compact encodings of vectors a client receives (``encoding_format`` on /v1/embeddings,
``EmbedOptions.encoding`` over gRPC): int8 and binary codes, computed from each vector alone,
so a vector's code never depends on what else was in its request.

- ``int8``: each value times 127 over the vector's largest magnitude, rounded (an "absmax"
  scale of its own). Compare int8 vectors by cosine: the scales differ from vector to vector,
  and cosine ignores them. The cosine of a code with its float vector, measured: at least
  0.99994 over 1,000 all-MiniLM-L6-v2 vectors (lines of the README), 0.99986 over the 26
  photos shipped in scikit-image (effnet-lite0).
- ``binary``: one bit a dimension, set where the value is > 0, packed 8 to a byte, first
  dimension in the highest bit (``numpy.packbits``; sentence-transformers' "ubinary"). Compare
  by Hamming distance. Sign bits only mean something for centred features: an image backbone's
  pooled activations are all >= 0, so every bit would be 1; such a vector is refused, and
  ``dimensions`` (a PCA projection, which centres) gives vectors whose bits carry the angle.

Store indexes and collections keep their own codes (``index/sign_codes.py``, FAISS SQ8), with
ranges calibrated on their own rows; these are for clients that store vectors elsewhere.
"""
from __future__ import annotations

import numpy as np

from .errors import InvalidInputError

ENCODINGS = ("float", "int8", "binary")


def check_encoding(encoding: str) -> str:
    if encoding not in ENCODINGS:
        raise InvalidInputError(f"encoding must be one of {', '.join(ENCODINGS)}; got {encoding!r}")
    return encoding


def encode(vectors: np.ndarray, encoding: str, ids=None) -> np.ndarray:
    """(n, d) float32 → float32 as given, (n, d) int8, or (n, ceil(d/8)) uint8."""
    check_encoding(encoding)
    x = np.asarray(vectors, np.float32)
    if encoding == "float":
        return x
    if encoding == "int8":
        peak = np.abs(x).max(axis=1, keepdims=True)
        return np.rint(x * (127.0 / np.where(peak > 0, peak, 1.0))).astype(np.int8)
    unsigned = (x >= 0).all(axis=1)
    if unsigned.any():
        j = int(np.flatnonzero(unsigned)[0])
        what = f"input {ids[j]!r}" if ids is not None else f"vector #{j}"
        raise InvalidInputError(f"{what}: every value is >= 0 (pooled activations), so its sign "
                                f"bits would all be 1; binary codes need centred vectors: ask "
                                f"for dimensions (a PCA projection) or int8")
    return np.packbits(x > 0, axis=1)
