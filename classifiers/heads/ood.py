"""Out-of-distribution scores that read as probabilities, for every head kind.

1 - the top class probability is no OOD score for a parametric head: a softmax is confident far
from its training data (a cat photo through a Fashion-MNIST logistic head: ``ankle_boot 0.995``).
So a head keeps a sample of its training embeddings, and an input is scored by its cosine
distance to the ``k``-th nearest of them (deep kNN, Sun et al. 2022: no assumption about the
shape of the classes, and the k-th rather than the nearest neighbour ignores single outliers).

Calibration, conformal: the distances in-distribution inputs have, measured on training
embeddings the reference does not hold. With up to ``MAX_REFERENCE`` training embeddings they are
cross-fitted: every one is in the reference, and its calibration distance is to its k-th nearest
*other* reference vector (leave-one-out), so a head trained on 74 images calibrates on 74
distances, not on the 14 a held-out fifth would leave. Beyond that, a sample is the reference and
up to ``MAX_CALIBRATION`` others calibrate.

An input's score is the fraction of calibration distances below its own, so in-distribution
scores are uniform on [0, 1] and ``--max-ood 0.99`` abstains on ~1% of them. Counting alone
moves in steps of 1/n and stops at the largest calibration distance: with few calibration
images, one atypical training image would decide what can ever be flagged, and everything
beyond it would score the same 1.0. So above the ``TAIL_FROM`` quantile the score comes from an
exponential tail fitted to the largest distances (peaks over a threshold, its scale from their
median excess, which a single outlier does not move): it keeps rising with the distance, an
input far beyond every training image scores closer to 1 than one just past most of them, and
``DEFAULT_MAX_OOD`` can trigger for any head.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedsvc.embeddings import l2_normalize

MAX_REFERENCE = 2000  # rows kept in the artifact (float16: 5 MB at 1280 dims)
MAX_CALIBRATION = 1000  # held-out distances when the training set is larger than the reference
MIN_TRAINING = 20  # fewer training vectors: no reference, the head falls back to 1 - max p
K = 5
TAIL_FROM = 0.8  # scores above this quantile of the calibration distances come from the tail fit
DEFAULT_MAX_OOD = 0.99  # a head's default abstain threshold (the web page's, the README's)


@dataclass(frozen=True)
class OODReference:
    reference: np.ndarray  # (R, D) L2-normalised training embeddings (float16 on disk)
    calibration: np.ndarray  # sorted k-NN distances of held-out training embeddings
    k: int = K
    calibrated: str = "held-out"  # or "leave-one-out" (cross-fitted on the reference itself)

    def __post_init__(self) -> None:
        # float32 in memory: converting per request cost more than the product itself
        object.__setattr__(self, "reference", np.ascontiguousarray(self.reference, np.float32))

    def distances(self, X: np.ndarray) -> np.ndarray:
        """Cosine distance of each row of ``X`` to its k-th nearest reference vector."""
        sims = l2_normalize(np.asarray(X, np.float32)) @ self.reference.T
        k = min(self.k, sims.shape[1])
        kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
        return (1.0 - kth).astype(np.float64)

    def _tail(self) -> tuple[float, float, float]:
        """(threshold distance, share of calibration distances above it, exponential scale)."""
        cal, n = self.calibration, len(self.calibration)
        above = max(2, n - int(TAIL_FROM * n))  # the largest distances, fitted
        u = float(cal[n - above - 1]) if n > above else float(cal[0])
        excess = cal[n - above:] - u
        scale = float(np.median(excess)) / np.log(2) if len(excess) else 0.0
        return u, above / n, max(scale, 1e-6)

    def scores(self, X: np.ndarray) -> np.ndarray:
        """Fraction of calibration distances below each input's (0 typical .. 1 unlike any),
        from the fitted tail above ``TAIL_FROM``."""
        return self.scores_of(self.distances(X))

    def scores_of(self, d: np.ndarray) -> np.ndarray:
        u, share, scale = self._tail()
        counted = np.searchsorted(self.calibration, d, side="left") / len(self.calibration)
        fitted = 1.0 - share * np.exp(-np.maximum(d - u, 0.0) / scale)
        return np.where(d > u, fitted, counted)

    def describe(self) -> dict:
        """What the score can resolve, for head.json, the report and train-head's output."""
        u, share, scale = self._tail()
        return {"k": self.k, "reference": len(self.reference),
                "calibration": len(self.calibration), "calibrated": self.calibrated,
                "step": round(1 / len(self.calibration), 4), "tail_from": round(1 - share, 4),
                "tail_scale": round(scale, 4), "default_max_ood": DEFAULT_MAX_OOD}

    def resolution_note(self, threshold: float) -> str | None:
        """A warning when ``threshold`` lies where no calibration image was counted."""
        n = len(self.calibration)
        if (1 - threshold) * n >= 1:
            return None
        return (f"the OOD score was calibrated on {n} training examples (steps of {1 / n:.3f}); "
                f"a threshold of {threshold:g} lies beyond every one of them, so whether an "
                f"image passes it rests on the fitted tail (label more images for a counted "
                f"threshold)")

    def arrays(self) -> dict[str, np.ndarray]:
        return {"ood_reference": self.reference.astype(np.float16),
                "ood_calibration": self.calibration}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], k: int,
                    calibrated: str = "held-out") -> "OODReference | None":
        if "ood_reference" not in arrays:
            return None  # a head saved before OOD references: max-probability scores
        return cls(arrays["ood_reference"], arrays["ood_calibration"], k, calibrated)


def fit_reference(X: np.ndarray, seed: int = 0) -> OODReference | None:
    """A reference sample and its calibration from training embeddings (None when too few)."""
    X = np.asarray(X, np.float32)
    if len(X) < MIN_TRAINING:
        return None
    order = np.random.default_rng(seed).permutation(len(X))
    if len(X) <= MAX_REFERENCE:  # cross-fitted: each vector against all the others
        reference = l2_normalize(X[order]).astype(np.float16)  # as stored: as after a reload
        ref = OODReference(reference, np.zeros(1), calibrated="leave-one-out")
        sims = ref.reference @ ref.reference.T
        np.fill_diagonal(sims, -np.inf)  # not its own neighbour
        k = min(ref.k, len(X) - 1)
        kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
        return OODReference(ref.reference, np.sort(1.0 - kth.astype(np.float64)),
                            calibrated="leave-one-out")
    n_cal = min(MAX_CALIBRATION, len(X) - MAX_REFERENCE)
    cal, ref = order[:n_cal], order[n_cal:n_cal + MAX_REFERENCE]
    reference = l2_normalize(X[ref]).astype(np.float16)
    partial = OODReference(reference, np.zeros(1))
    return OODReference(partial.reference, np.sort(partial.distances(X[cal])))
