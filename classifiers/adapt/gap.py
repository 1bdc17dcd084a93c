"""How far apart two domains are, measured on embeddings: four views of one question.

- **proxy A-distance** 2 (1 - 2 err), err the cross-validated balanced error of a linear
  classifier telling the domains apart (Ben-David et al.): 0 = indistinguishable, 2 = separable.
  Readable on its own; it saturates at 2 for strong shifts. The classifier weighs the sides
  equally: unweighted, it answered "the larger side" for 24 photos against 93 and read 0.
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

**One verdict** (``shift_test``, also the server's drift check): two tests, each at ALPHA / 2
(Bonferroni, so two halves of one folder are called shifted at most ALPHA of the time): the MMD
permutation test, and whether the domain classifier's balanced accuracy beats chance (a normal
approximation of its null, standard error sqrt(1/n_a + 1/n_b) / 4). Either significant: the
sides differ, ``very different`` when the A-distance reaches GAP_LARGE, else ``shifted``;
neither: ``similar``. The measure with the smaller p-value is named as the one that decided. So
a significant test is never contradicted by the verdict, on 24 images as on 24,000.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from embedsvc.errors import InvalidInputError

GAP_LARGE = 1.5  # proxy A-distance from which a significant difference is "very different"
ALPHA = 0.01  # the chance of calling one distribution's two samples different (gap and drift)
VERDICTS = ("similar", "shifted", "very different")
FRECHET_DIMS = 64
PERMUTATIONS = 1000  # p-values down to 0.001, so ALPHA / 2 can be reached
MIN_PER_SIDE = 4


@dataclass(frozen=True)
class ShiftTest:
    """The two tests behind a verdict, and which one decided."""
    mmd2: float
    mmd_p_value: float
    mmd_threshold: float  # MMD^2 above which the permutation test is significant at ALPHA / 2
    domain_error: float
    domain_p_value: float

    @property
    def proxy_a_distance(self) -> float:
        return proxy_a_distance(self.domain_error)

    @property
    def verdict(self) -> str:
        if min(self.mmd_p_value, self.domain_p_value) >= ALPHA / 2:
            return "similar"
        return "very different" if self.proxy_a_distance >= GAP_LARGE else "shifted"

    @property
    def decided_by(self) -> str:
        """Which measure decided, and how sure it is, in words."""
        level = f"{ALPHA / 2:g}"
        if self.domain_p_value < self.mmd_p_value:
            what = (f"the domain classifier (balanced accuracy {1 - self.domain_error:.2f}, "
                    f"p = {self.domain_p_value:.2g})")
        else:
            what = f"the MMD permutation test (p = {self.mmd_p_value:.3g})"
        if self.verdict == "similar":
            return (f"neither test is significant at {level} (MMD p = {self.mmd_p_value:.3g}, "
                    f"domain classifier p = {self.domain_p_value:.2g})")
        return f"{what}, significant at {level}"


def shift_test(a: np.ndarray, b: np.ndarray, seed: int = 0,
               permutations: int = PERMUTATIONS) -> ShiftTest:
    rng = np.random.default_rng(seed)
    stat, null = mmd_null(a, b, rng, permutations)
    err = domain_error(a, b, seed)
    return ShiftTest(stat, permutation_p_value(stat, null),
                     float(np.quantile(null, 1 - ALPHA / 2)), err,
                     domain_p_value(err, len(a), len(b)))


@dataclass(frozen=True)
class Gap:
    n_a: int
    n_b: int
    test: ShiftTest
    frechet: float
    coral: float
    per_class: dict[str, "Gap"] = field(default_factory=dict)

    proxy_a_distance = property(lambda self: self.test.proxy_a_distance)
    domain_error = property(lambda self: self.test.domain_error)
    domain_p_value = property(lambda self: self.test.domain_p_value)
    mmd2 = property(lambda self: self.test.mmd2)
    mmd_p_value = property(lambda self: self.test.mmd_p_value)
    verdict = property(lambda self: self.test.verdict)
    decided_by = property(lambda self: self.test.decided_by)

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("n_a", "n_b", "proxy_a_distance", "domain_error",
                                             "domain_p_value", "mmd2", "mmd_p_value", "frechet",
                                             "coral")}
        out["verdict"], out["decided_by"] = self.verdict, self.decided_by
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
    test = shift_test(a, b, seed)
    per_class = {}
    if labels_a is not None and labels_b is not None:
        la, lb = np.asarray(labels_a).astype(str), np.asarray(labels_b).astype(str)
        for c in sorted(set(la) & set(lb)):
            xa, xb = a[la == c], b[lb == c]
            if min(len(xa), len(xb)) >= min_per_class:
                per_class[c] = measure_gap(xa, xb, seed=seed)
    return Gap(len(a), len(b), test, frechet_distance(a, b), coral_distance(a, b), per_class)


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
    clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
    acc = cross_val_score(clf, X, y, cv=folds, scoring="balanced_accuracy").mean()
    return float(1.0 - acc)


def domain_p_value(err: float, n_a: int, n_b: int) -> float:
    """One-sided p-value of a balanced accuracy ``1 - err`` under chance (0.5), by the normal
    approximation: each side's hit rate is a proportion of its n, so the balanced accuracy's
    standard error is sqrt(0.25 / n_a + 0.25 / n_b) / 2."""
    from math import erfc, sqrt

    se = 0.25 * sqrt(1 / n_a + 1 / n_b)
    return 0.5 * erfc(((1 - err) - 0.5) / se / sqrt(2))


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
    """MMD^2 and its values under shuffled domain labels (the null: one distribution). The
    shuffles are evaluated as block sums of one matrix product with their membership matrix
    (``_mmd2_of``), a fraction of a second for 1,000 of them on 1,000 vectors."""
    K, _ = rbf_kernel(np.concatenate([a, b]).astype(np.float64))
    in_a = np.r_[np.ones(len(a), bool), np.zeros(len(b), bool)]
    null = np.concatenate([
        _mmd2_of(K, np.stack([rng.permutation(in_a) for _ in range(min(200, permutations - lo))],
                             axis=1))
        for lo in range(0, permutations, 200)])
    return mmd2_unbiased(K, in_a), null


def _mmd2_of(K: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 for each column of the (N, P) side-a membership matrix ``Z``."""
    Zf = Z.astype(np.float64)
    m = Zf.sum(0)
    n = len(K) - m
    KZ = K @ Zf
    s_aa = (Zf * KZ).sum(0)
    s_ab = KZ.sum(0) - s_aa  # a's rows against b's columns
    s_bb = K.sum() - s_aa - 2 * s_ab
    diag = np.diag(K)
    t_a = diag @ Zf
    t_b = diag.sum() - t_a
    return (s_aa - t_a) / (m * (m - 1)) + (s_bb - t_b) / (n * (n - 1)) - 2 * s_ab / (m * n)


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
