"""Feature alignment for heads, no backbone training: move the source training embeddings into
the target domain's statistics, then fit the head on them (the guide's cheapest domain-invariant
method; CORAL, Sun, Feng & Saenko 2016).

- ``coral``: whiten the centred source features with C_s^-1/2, re-colour them with C_t^1/2, add
  the target mean. Both covariances get a ridge of ``REGULARIZATION`` x their mean variance:
  with a few thousand vectors in 1,280 dimensions the sample covariances are singular.
- ``mean-std``: per dimension, (x - mean_s) / std_s * std_t + mean_t (a diagonal CORAL, with
  the same ridge on the variances).

Why the source moves and not the target: whitening a few hundred target vectors amplifies the
noise in their smallest directions, and every request would pay the product. Moved this way the
head is fitted in the target's statistics and takes target embeddings as they come; the
transform stays in the head's artifact (``align_*`` arrays) so the head says what was done to
its training data, and its OOD reference lives in the same, aligned, space.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedsvc.errors import InvalidInputError

ALIGNMENTS = ("coral", "mean-std")
REGULARIZATION = 0.1
MIN_TARGET = 20  # fewer target vectors estimate no covariance worth aligning to
EPS = 1e-6


def check_alignment(method: str) -> str:
    if method not in ALIGNMENTS:
        raise InvalidInputError(f"unknown alignment {method!r}; available: {', '.join(ALIGNMENTS)}")
    return method


@dataclass(frozen=True)
class Alignment:
    """x -> (x - source_mean) @ matrix + target_mean (``coral``), or with the diagonal ``scale``
    in place of the matrix (``mean-std``)."""

    method: str
    source_mean: np.ndarray
    target_mean: np.ndarray
    linear: np.ndarray  # (D, D) matrix for coral, (D,) per-dimension scale for mean-std

    def apply(self, X: np.ndarray) -> np.ndarray:
        Z = np.asarray(X, np.float64) - self.source_mean
        Z = Z @ self.linear if self.linear.ndim == 2 else Z * self.linear
        return (Z + self.target_mean).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"align_source_mean": self.source_mean.astype(np.float32),
                "align_target_mean": self.target_mean.astype(np.float32),
                "align_linear": self.linear.astype(np.float32)}

    @classmethod
    def from_arrays(cls, method: str | None, arrays: dict[str, np.ndarray]) -> "Alignment | None":
        if method is None or "align_linear" not in arrays:
            return None
        return cls(check_alignment(method), arrays["align_source_mean"].astype(np.float64),
                   arrays["align_target_mean"].astype(np.float64),
                   arrays["align_linear"].astype(np.float64))


def _ridge(variances: np.ndarray) -> np.ndarray:
    """Variances plus REGULARIZATION x their mean: a dimension nearly constant on one side must
    not be stretched by orders of magnitude (a few outliers would then dominate the head)."""
    return variances + REGULARIZATION * max(float(variances.mean()), EPS)


def _matrix_power(C: np.ndarray, power: float) -> np.ndarray:
    w, V = np.linalg.eigh(C)
    return (V * np.maximum(w, EPS) ** power) @ V.T


def fit_alignment(method: str, source: np.ndarray, target: np.ndarray) -> Alignment:
    """The transform that gives ``source`` the statistics of ``target`` (rows are vectors)."""
    check_alignment(method)
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
        raise InvalidInputError(f"cannot align {source.shape} source vectors to {target.shape} target ones")
    for name, X in (("source", source), ("target", target)):
        if len(X) < MIN_TARGET:
            raise InvalidInputError(f"alignment needs at least {MIN_TARGET} {name} vectors, got {len(X)}")
    ms, mt = source.mean(axis=0), target.mean(axis=0)
    if method == "mean-std":
        vs, vt = _ridge(source.var(axis=0)), _ridge(target.var(axis=0))
        linear = np.sqrt(vt / vs)
    else:
        Cs, Ct = np.cov(source, rowvar=False), np.cov(target, rowvar=False)
        np.fill_diagonal(Cs, _ridge(np.diag(Cs)))
        np.fill_diagonal(Ct, _ridge(np.diag(Ct)))
        linear = _matrix_power(Cs, -0.5) @ _matrix_power(Ct, 0.5)
    return Alignment(method, ms, mt, linear)
