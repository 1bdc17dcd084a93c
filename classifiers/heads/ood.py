"""Out-of-distribution scores that read as probabilities, for every head kind.

1 - the top class probability is no OOD score for a parametric head: a softmax is confident far
from its training data (a cat photo through a Fashion-MNIST logistic head: ``ankle_boot 0.995``).
So a head keeps a sample of its training embeddings, and an input is scored by its cosine
distance to the ``k``-th nearest of them (deep kNN, Sun et al. 2022: no assumption about the
shape of the classes, and the k-th rather than the nearest neighbour ignores single outliers).

Calibration, conformal: held-out training embeddings (never in the reference sample) give the
distances an in-distribution input has. An input's score is the fraction of those held-out
distances below its own: for in-distribution inputs the score is uniform on [0, 1], so
``--max-ood 0.99`` abstains on ~1% of them and on whatever lies farther than 99% of the
training data; an input farther than every held-out one scores 1.

Cost per request: one (1, D) x (D, R) product over the reference sample (R <= 2,000 rows).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedsvc.embeddings import l2_normalize

MAX_REFERENCE = 2000  # rows kept in the artifact (float16: 5 MB at 1280 dims)
MAX_CALIBRATION = 1000
MIN_TRAINING = 20  # fewer training vectors: no reference, the head falls back to 1 - max p
K = 5


@dataclass(frozen=True)
class OODReference:
    reference: np.ndarray  # (R, D) L2-normalised training embeddings (float16 on disk)
    calibration: np.ndarray  # sorted k-NN distances of held-out training embeddings
    k: int = K

    def __post_init__(self) -> None:
        # float32 in memory: converting per request cost more than the product itself
        object.__setattr__(self, "reference", np.ascontiguousarray(self.reference, np.float32))

    def distances(self, X: np.ndarray) -> np.ndarray:
        """Cosine distance of each row of ``X`` to its k-th nearest reference vector."""
        sims = l2_normalize(np.asarray(X, np.float32)) @ self.reference.T
        k = min(self.k, sims.shape[1])
        kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
        return (1.0 - kth).astype(np.float64)

    def scores(self, X: np.ndarray) -> np.ndarray:
        """Fraction of held-out training distances below each input's: 0 typical .. 1 unlike any."""
        d = self.distances(X)
        return np.searchsorted(self.calibration, d, side="left") / len(self.calibration)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"ood_reference": self.reference.astype(np.float16),
                "ood_calibration": self.calibration}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], k: int) -> "OODReference | None":
        if "ood_reference" not in arrays:
            return None  # a head saved before OOD references: max-probability scores
        return cls(arrays["ood_reference"], arrays["ood_calibration"], k)


def fit_reference(X: np.ndarray, seed: int = 0) -> OODReference | None:
    """A reference sample and its calibration from training embeddings (None when too few)."""
    X = np.asarray(X, np.float32)
    if len(X) < MIN_TRAINING:
        return None
    order = np.random.default_rng(seed).permutation(len(X))
    n_cal = int(min(MAX_CALIBRATION, max(len(X) // 5, 5)))
    cal, ref = order[:n_cal], order[n_cal:n_cal + MAX_REFERENCE]
    reference = l2_normalize(X[ref]).astype(np.float16)  # what is stored: scores as after a reload
    partial = OODReference(reference, np.zeros(1))
    return OODReference(partial.reference, np.sort(partial.distances(X[cal])))
