"""How far apart two domains are, measured on embeddings: four views of one question.

- **proxy A-distance** 2 (1 - 2 err), err the cross-validated balanced error of a linear
  classifier telling the domains apart (Ben-David et al.): 0 = indistinguishable, 2 = separable.
  Readable on its own, so the verdict uses it; it saturates at 2 for strong shifts.
- **MMD^2** with an RBF kernel whose width is the median pairwise distance (the median
  heuristic), unbiased estimate, and a **permutation p-value** (how often shuffling the domain
  labels gives as large a value): the test statistic, which keeps growing where the A-distance
  has saturated.
- **Fréchet distance** between Gaussians fitted to the two sides (FID's formula), in the pooled
  sample's top principal components (at most ``FRECHET_DIMS``): with a few hundred vectors of
  1280 dimensions the full covariances are singular, and their square roots noise.
- **CORAL distance** ||C_a - C_b||_F^2 / (4 d^2), Deep CORAL's loss: the second-order gap that
  a CORAL head alignment removes.

Per class too, where both sides carry labels: a shift that moves one class onto another shows
there first.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from embedsvc.errors import InvalidInputError

GAP_MODERATE, GAP_LARGE = 0.5, 1.5  # proxy A-distance: similar < moderate <= shifted < large
P_SHIFTED = 0.05  # MMD permutation p-value below which a moderate A-distance is a shift
VERDICTS = ("similar", "shifted", "very different")
FRECHET_DIMS = 64
PERMUTATIONS = 200
MIN_PER_SIDE = 4


@dataclass(frozen=True)
class Gap:
    n_a: int
    n_b: int
    proxy_a_distance: float
    domain_error: float  # cross-validated balanced error of the domain classifier
    mmd2: float
    mmd_p_value: float
    frechet: float
    coral: float
    per_class: dict[str, "Gap"] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.proxy_a_distance >= GAP_LARGE:
            return "very different"
        if self.proxy_a_distance >= GAP_MODERATE and self.mmd_p_value < P_SHIFTED:
            return "shifted"
        return "similar"

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("n_a", "n_b", "proxy_a_distance", "domain_error",
                                             "mmd2", "mmd_p_value", "frechet", "coral")}
        out["verdict"] = self.verdict
        if self.per_class:
            out["per_class"] = {c: g.to_dict() for c, g in self.per_class.items()}
        return out


def measure_gap(a: np.ndarray, b: np.ndarray, labels_a=None, labels_b=None, seed: int = 0,
                min_per_class: int = 10) -> Gap:
    """The gap between two embedding samples (rows are vectors); per class for the labels that
    both sides have at least ``min_per_class`` times."""
    a, b = _checked(a, "a"), _checked(b, "b")
    if a.shape[1] != b.shape[1]:
        raise InvalidInputError(f"the two sides have {a.shape[1]}- and {b.shape[1]}-dimensional "
                                f"vectors; embed both with the same backbone and tap")
    rng = np.random.default_rng(seed)
    a_err = domain_error(a, b, seed)
    mmd2, p = mmd_test(a, b, rng)
    per_class = {}
    if labels_a is not None and labels_b is not None:
        la, lb = np.asarray(labels_a).astype(str), np.asarray(labels_b).astype(str)
        for c in sorted(set(la) & set(lb)):
            xa, xb = a[la == c], b[lb == c]
            if min(len(xa), len(xb)) >= min_per_class:
                per_class[c] = measure_gap(xa, xb, seed=seed)
    return Gap(len(a), len(b), proxy_a_distance(a_err), a_err, mmd2, p, frechet_distance(a, b),
               coral_distance(a, b), per_class)


def _checked(x, side: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < MIN_PER_SIDE:
        raise InvalidInputError(f"side {side} needs at least {MIN_PER_SIDE} vectors, got "
                                f"{len(x) if x.ndim == 2 else x.shape}")
    if not np.isfinite(x).all():
        raise InvalidInputError(f"side {side} has NaN or infinite values")
    return x


def proxy_a_distance(domain_err: float) -> float:
    return max(0.0, 2.0 * (1.0 - 2.0 * domain_err))


def domain_error(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """Cross-validated balanced error of a logistic regression telling ``a`` from ``b``
    (balanced: with unequal sides, always answering "the larger" must not look good)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    X = np.concatenate([a, b])
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    folds = StratifiedKFold(int(min(5, len(a), len(b))), shuffle=True, random_state=seed)
    acc = cross_val_score(LogisticRegression(C=1.0, max_iter=2000), X, y, cv=folds,
                          scoring="balanced_accuracy").mean()
    return float(1.0 - acc)


def rbf_kernel(X: np.ndarray, Y: np.ndarray | None = None, sigma: float | None = None):
    """exp(-|x - y|^2 / (2 sigma^2)); sigma None: the median pairwise distance of ``X``."""
    Y = X if Y is None else Y
    d2 = np.maximum((X * X).sum(1)[:, None] + (Y * Y).sum(1)[None, :] - 2 * X @ Y.T, 0.0)
    if sigma is None:
        off = d2[~np.eye(len(X), dtype=bool)] if Y is X else d2.ravel()
        sigma = float(np.sqrt(np.median(off))) or 1.0
    return np.exp(-d2 / (2 * sigma * sigma)), sigma


def mmd2_unbiased(K: np.ndarray, in_a: np.ndarray) -> float:
    """Unbiased MMD^2 from the pooled kernel matrix and a boolean mask of side a."""
    m, n = int(in_a.sum()), int((~in_a).sum())
    kaa, kbb, kab = K[np.ix_(in_a, in_a)], K[np.ix_(~in_a, ~in_a)], K[np.ix_(in_a, ~in_a)]
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1))
                 + (kbb.sum() - np.trace(kbb)) / (n * (n - 1)) - 2 * kab.mean())


def mmd_test(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
             permutations: int = PERMUTATIONS) -> tuple[float, float]:
    """(MMD^2, permutation p-value) with the median-heuristic RBF kernel on the pooled sample."""
    stat, null = mmd_null(a, b, rng, permutations)
    return stat, permutation_p_value(stat, null)


def mmd_null(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
             permutations: int = PERMUTATIONS) -> tuple[float, np.ndarray]:
    """MMD^2 and its values under shuffled domain labels (the null: one distribution)."""
    K, _ = rbf_kernel(np.concatenate([a, b]).astype(np.float64))
    in_a = np.r_[np.ones(len(a), bool), np.zeros(len(b), bool)]
    null = np.array([mmd2_unbiased(K, rng.permutation(in_a)) for _ in range(permutations)])
    return mmd2_unbiased(K, in_a), null


def permutation_p_value(stat: float, null: np.ndarray) -> float:
    return float((1 + (null >= stat).sum()) / (1 + len(null)))


def frechet_distance(a: np.ndarray, b: np.ndarray, dims: int = FRECHET_DIMS) -> float:
    """|mu_a - mu_b|^2 + Tr(C_a + C_b - 2 (C_a C_b)^1/2) in the pooled top principal components."""
    pooled = np.concatenate([a, b])
    k = int(min(dims, a.shape[1], len(a) - 1, len(b) - 1))
    _, _, vt = np.linalg.svd(pooled - pooled.mean(0), full_matrices=False)
    pa, pb = a @ vt[:k].T, b @ vt[:k].T
    ca, cb = np.cov(pa, rowvar=False), np.cov(pb, rowvar=False)
    root_a = _sqrt_psd(ca)
    cross = _sqrt_psd(root_a @ cb @ root_a)  # Tr((C_a C_b)^1/2), symmetric and stable
    d = pa.mean(0) - pb.mean(0)
    return float(max(0.0, d @ d + np.trace(ca) + np.trace(cb) - 2 * np.trace(cross)))


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def coral_distance(a: np.ndarray, b: np.ndarray) -> float:
    d = a.shape[1]
    diff = np.cov(a, rowvar=False) - np.cov(b, rowvar=False)
    return float((diff * diff).sum() / (4 * d * d))
