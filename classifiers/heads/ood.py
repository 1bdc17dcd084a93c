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

Some inputs are atypical without being far: a pooled text embedding is nearly a bag of words, so
a review with its words shuffled sits among the reviews. Where the encoder's modality can make
such inputs from the training data (``embedsvc.text.corrupt``), a linear detector is fitted to
tell training embeddings from theirs (outlier exposure) and calibrated the same way on
cross-fitted logits of training embeddings. The two scores are joined by Bonferroni's rule,
``1 - 2 * min(1 - s_knn, 1 - s_detector)``, so an in-distribution input still exceeds a
threshold t with probability at most 1 - t.
"""
from __future__ import annotations

import dataclasses
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
    detector: "AtypicalDetector | None" = None  # outlier exposure, where inputs can be corrupted

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
        """Fraction of calibration distances below each input's (0 typical .. 1 unlike any),
        from the fitted tail above ``TAIL_FROM``; joined with the detector's when there is one."""
        knn = calibrated_scores(self.calibration, self.distances(X))
        if self.detector is None:
            return knn
        det = self.detector.scores(X)
        return np.maximum(0.0, 1.0 - 2.0 * np.minimum(1.0 - knn, 1.0 - det))

    def describe(self) -> dict:
        """What the score can resolve, for head.json, the report and train-head's output."""
        u, share, scale = _tail(self.calibration)
        out = {"k": self.k, "reference": len(self.reference),
               "calibration": len(self.calibration), "calibrated": self.calibrated,
               "step": round(1 / len(self.calibration), 4), "tail_from": round(1 - share, 4),
               "tail_scale": round(scale, 4), "default_max_ood": DEFAULT_MAX_OOD}
        if self.detector is not None:
            out["detector"] = self.detector.describe()
        return out

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
        out = {"ood_reference": self.reference.astype(np.float16),
               "ood_calibration": self.calibration}
        if self.detector is not None:
            out |= {"ood_detector": self.detector.weights,
                    "ood_detector_calibration": self.detector.calibration}
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], k: int,
                    calibrated: str = "held-out", detector: dict | None = None,
                    ) -> "OODReference | None":
        if "ood_reference" not in arrays:
            return None  # a head saved before OOD references: max-probability scores
        found = None
        if "ood_detector" in arrays:
            found = AtypicalDetector(arrays["ood_detector"], arrays["ood_detector_calibration"],
                                     **{k_: v for k_, v in (detector or {}).items()
                                        if k_ in ("negatives", "held_out_auroc")})
        return cls(arrays["ood_reference"], arrays["ood_calibration"], k, calibrated, found)


@dataclass(frozen=True)
class AtypicalDetector:
    """A linear separator of training embeddings (low) from embeddings of inputs made atypical
    on purpose (high); its logits calibrated like k-NN distances."""

    weights: np.ndarray  # (D + 1,): the last one is the intercept
    calibration: np.ndarray  # sorted cross-fitted logits of training embeddings
    negatives: int = 0
    held_out_auroc: float = 0.0  # training vs atypical, each logit from the other fold's fit

    def logits(self, X: np.ndarray) -> np.ndarray:
        X = l2_normalize(np.asarray(X, np.float32))
        return (X @ self.weights[:-1].astype(np.float32) + self.weights[-1]).astype(np.float64)

    def scores(self, X: np.ndarray) -> np.ndarray:
        return calibrated_scores(self.calibration, self.logits(X))

    def describe(self) -> dict:
        return {"negatives": self.negatives, "held_out_auroc": round(self.held_out_auroc, 4),
                "calibration": len(self.calibration)}


def fit_detector(X: np.ndarray, atypical: np.ndarray, seed: int = 0) -> AtypicalDetector:
    """Fit on up to ``MAX_REFERENCE`` training embeddings against ``atypical`` ones; calibrate
    on 2-fold cross-fitted logits of the training embeddings (each scored by the fit that did
    not see it), the AUROC likewise."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    X = l2_normalize(np.asarray(X, np.float32))
    if len(X) > MAX_REFERENCE:
        X = X[rng.choice(len(X), MAX_REFERENCE, replace=False)]
    A = l2_normalize(np.asarray(atypical, np.float32))

    def fit(P, N):
        m = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
        m.fit(np.r_[P, N], np.r_[np.zeros(len(P)), np.ones(len(N))])
        return np.r_[m.coef_[0], m.intercept_[0]]

    fold_x, fold_a = rng.permutation(len(X)) % 2, rng.permutation(len(A)) % 2
    held_x, held_a = np.zeros(len(X)), np.zeros(len(A))
    for f in (0, 1):
        w = fit(X[fold_x != f], A[fold_a != f])
        held_x[fold_x == f] = X[fold_x == f] @ w[:-1] + w[-1]
        held_a[fold_a == f] = A[fold_a == f] @ w[:-1] + w[-1]
    auroc = float(roc_auc_score(np.r_[np.zeros(len(X)), np.ones(len(A))], np.r_[held_x, held_a]))
    return AtypicalDetector(fit(X, A), np.sort(held_x), len(A), auroc)


def _tail(calibration: np.ndarray) -> tuple[float, float, float]:
    """(threshold value, share of calibration values above it, exponential scale)."""
    cal, n = calibration, len(calibration)
    above = max(2, n - int(TAIL_FROM * n))  # the largest values, fitted
    u = float(cal[n - above - 1]) if n > above else float(cal[0])
    excess = cal[n - above:] - u
    scale = float(np.median(excess)) / np.log(2) if len(excess) else 0.0
    return u, above / n, max(scale, 1e-6)


def calibrated_scores(calibration: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Fraction of ``calibration`` (sorted, larger = less typical) below each of ``d``, from an
    exponential tail fitted to the largest above the ``TAIL_FROM`` quantile."""
    u, share, scale = _tail(calibration)
    counted = np.searchsorted(calibration, d, side="left") / len(calibration)
    fitted = 1.0 - share * np.exp(-np.maximum(d - u, 0.0) / scale)
    return np.where(d > u, fitted, counted)


def fit_reference(X: np.ndarray, seed: int = 0,
                  atypical: np.ndarray | None = None) -> OODReference | None:
    """A reference sample and its calibration from training embeddings (None when too few),
    with a detector of ``atypical`` embeddings when given."""
    X = np.asarray(X, np.float32)
    if len(X) < MIN_TRAINING:
        return None
    reference = _knn_reference(X, seed)
    if atypical is None or len(atypical) < MIN_TRAINING:
        return reference
    return dataclasses.replace(reference, detector=fit_detector(X, atypical, seed))


def _knn_reference(X: np.ndarray, seed: int) -> OODReference:
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
