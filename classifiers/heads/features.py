"""Checks and small maths shared by every head kind: features are finite 2-d float32 rows."""
from __future__ import annotations

import numpy as np

from embedsvc.errors import InvalidInputError


def check_X(X, dim: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise InvalidInputError(f"features must be 2-d (n, dim), got shape {X.shape}")
    if dim is not None and X.shape[1] != dim:
        raise InvalidInputError(f"head was trained on {dim}-d features, got {X.shape[1]}-d")
    if not np.isfinite(X).all():
        raise InvalidInputError("features contain NaN or infinity")
    return X


TWO_CLASSES = "a head needs at least 2 classes in its training data"  # train-head, advise


def check_Xy(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = check_X(X)
    y = np.asarray(y)
    if y.shape != (len(X),):
        raise InvalidInputError(f"{len(X)} feature rows but labels of shape {y.shape}")
    if len(np.unique(y)) < 2:
        raise InvalidInputError(TWO_CLASSES)
    return X, y.astype(str)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
