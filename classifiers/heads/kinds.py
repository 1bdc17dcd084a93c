"""Head kinds: scikit-learn estimators (fit / predict / predict_proba) whose learned state is
plain arrays, so a head is saved as .npz + JSON and loaded without unpickling anything.

Every kind keeps ``classes_`` (labels in column order of ``predict_proba``), and answers
``to_state() -> (arrays, params)`` / ``from_state(arrays, params)``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from embedsvc.errors import InvalidInputError

from . import KIND_NAMES
from .features import check_X, check_Xy, softmax
from .similarity import CentroidHead, KNNHead

C_GRID = tuple(float(c) for c in np.logspace(-3, 2, 6))  # 0.001 .. 100, as CLIP linear probes


DEAD_SCALE = 1e-3  # relative to the median feature scale


class _Standardized:
    """Feature standardisation kept inside the head (mean / scale arrays)."""

    def _fit_scaler(self, X: np.ndarray) -> np.ndarray:
        self.mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        # a dimension (nearly) constant in training is left unscaled: dividing by float round-off
        # would blow up whatever a shifted input puts there by orders of magnitude
        live = scale[scale > 0]
        floor = max(1e-12, DEAD_SCALE * float(np.median(live))) if live.size else 1e-12
        self.scale_ = np.where(scale > floor, scale, 1.0).astype(np.float32)
        return self._scale(X)

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) / self.scale_


class _PlattOvR:
    """Per-class Platt scaling of one-vs-rest decision values, fitted on cross-validated
    decision values (data the classifier was not fitted on), as CalibratedClassifierCV does."""

    def _fit_platt(self, make_model, Z: np.ndarray, y: np.ndarray, cv: int, seed: int) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        folds = min(cv, int(np.bincount(np.unique(y, return_inverse=True)[1]).min()))
        if folds >= 2:
            splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
            dec = cross_val_predict(make_model(), Z, y, cv=splitter, method="decision_function")
        else:  # too few examples per class to hold any out
            dec = make_model().fit(Z, y).decision_function(Z)
        dec = _two_columns(dec)
        self.platt_a_ = np.ones(len(self.classes_), np.float32)
        self.platt_b_ = np.zeros(len(self.classes_), np.float32)
        for k, c in enumerate(self.classes_):
            lr = LogisticRegression(C=1e4).fit(dec[:, k:k + 1], (y == c).astype(int))
            self.platt_a_[k], self.platt_b_[k] = lr.coef_[0, 0], lr.intercept_[0]

    def _platt_proba(self, dec: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-(_two_columns(dec) * self.platt_a_ + self.platt_b_)))
        return p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)


def _two_columns(dec: np.ndarray) -> np.ndarray:
    """Binary classifiers give one decision column; make it one per class."""
    dec = np.asarray(dec, dtype=np.float64)
    return np.stack([-dec, dec], axis=1) if dec.ndim == 1 else dec


# -- logistic regression ------------------------------------------------------------------------
class LogRegHead(_Standardized, ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression; C picked by stratified cross-validation over a log grid."""

    kind = "logreg"

    def __init__(self, Cs: tuple[float, ...] = C_GRID, cv: int = 3, class_weight: str | None = None,
                 max_iter: int = 1000, random_state: int = 0):
        self.Cs = Cs
        self.cv = cv
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y) -> "LogRegHead":
        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

        X, y = check_Xy(X, y)
        Z = self._fit_scaler(X)
        folds = min(self.cv, int(np.bincount(np.unique(y, return_inverse=True)[1]).min()))
        if folds >= 2 and len(self.Cs) > 1:
            model = LogisticRegressionCV(Cs=list(self.Cs), cv=folds, class_weight=self.class_weight,
                                         max_iter=self.max_iter, random_state=self.random_state,
                                         l1_ratios=(0.0,), scoring="accuracy",
                                         use_legacy_attributes=False)
            model.fit(Z, y)
            self.C_ = float(np.ravel(model.C_)[0])
        else:  # too few examples per class to cross-validate: take the middle of the grid
            self.C_ = float(self.Cs[len(self.Cs) // 2])
            model = LogisticRegression(C=self.C_, class_weight=self.class_weight,
                                       max_iter=self.max_iter).fit(Z, y)
        self.classes_ = model.classes_
        self.coef_ = model.coef_.astype(np.float32)
        self.intercept_ = model.intercept_.astype(np.float32)
        if len(self.classes_) == 2:  # sklearn keeps one row for binary; make it two-column
            self.coef_ = np.vstack([-self.coef_, self.coef_]) / 2
            self.intercept_ = np.array([-self.intercept_[0], self.intercept_[0]], np.float32) / 2
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_")
        return self._scale(check_X(X, self.coef_.shape[1])) @ self.coef_.T + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self.decision_function(X))

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def to_state(self):
        return ({"mean": self.mean_, "scale": self.scale_, "coef": self.coef_,
                 "intercept": self.intercept_},
                {"C": self.C_, "class_weight": self.class_weight})

    @classmethod
    def from_linear(cls, classes, weight: np.ndarray, bias: np.ndarray) -> "LogRegHead":
        """A softmax layer trained elsewhere (a fine-tuning run's classifier) as a head: raw
        features, no scaling."""
        weight = np.asarray(weight, np.float32)
        h = cls()
        h.classes_, h.C_ = np.asarray([str(c) for c in classes]), None  # not fitted here
        h.mean_ = np.zeros(weight.shape[1], np.float32)
        h.scale_ = np.ones(weight.shape[1], np.float32)
        h.coef_, h.intercept_ = weight, np.asarray(bias, np.float32)
        return h

    @classmethod
    def from_state(cls, classes, arrays, params):
        h = cls(class_weight=params.get("class_weight"))
        h.classes_, h.C_ = classes, params["C"]
        h.mean_, h.scale_ = arrays["mean"], arrays["scale"]
        h.coef_, h.intercept_ = arrays["coef"], arrays["intercept"]
        return h


# -- linear SVM with calibrated probabilities ----------------------------------------------------
class LinearSVMHead(_PlattOvR, _Standardized, ClassifierMixin, BaseEstimator):
    """One-vs-rest linear SVM with Platt-calibrated probabilities."""

    kind = "linear-svm"

    def __init__(self, C: float = 0.01, cv: int = 3, class_weight: str | None = None,
                 random_state: int = 0):
        self.C = C
        self.cv = cv
        self.class_weight = class_weight
        self.random_state = random_state

    def _svc(self):
        from sklearn.svm import LinearSVC

        return LinearSVC(C=self.C, class_weight=self.class_weight, random_state=self.random_state,
                         max_iter=5000)

    def fit(self, X, y) -> "LinearSVMHead":
        X, y = check_Xy(X, y)
        Z = self._fit_scaler(X)
        svc = self._svc().fit(Z, y)
        self.classes_ = svc.classes_
        self.coef_ = svc.coef_.astype(np.float32)
        self.intercept_ = svc.intercept_.astype(np.float32)
        self._fit_platt(self._svc, Z, y, self.cv, self.random_state)
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_")
        Z = self._scale(check_X(X, self.coef_.shape[1]))
        return _two_columns((Z @ self.coef_.T + self.intercept_).squeeze(1)
                            if self.coef_.shape[0] == 1 else Z @ self.coef_.T + self.intercept_)

    def predict_proba(self, X) -> np.ndarray:
        return self._platt_proba(self.decision_function(X))

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def to_state(self):
        return ({"mean": self.mean_, "scale": self.scale_, "coef": self.coef_,
                 "intercept": self.intercept_, "platt_a": self.platt_a_, "platt_b": self.platt_b_},
                {"C": self.C, "class_weight": self.class_weight})

    @classmethod
    def from_state(cls, classes, arrays, params):
        h = cls(C=params["C"], class_weight=params.get("class_weight"))
        h.classes_ = classes
        for name in ("mean", "scale", "coef", "intercept", "platt_a", "platt_b"):
            setattr(h, f"{name}_", arrays[name])
        return h


# -- RBF SVM ------------------------------------------------------------------------------------
class RBFSVMHead(_PlattOvR, _Standardized, ClassifierMixin, BaseEstimator):
    """Kernel SVM (RBF), one-vs-rest decision values, Platt-calibrated probabilities. The fitted
    libsvm model is kept as its arrays (support vectors, dual coefficients, intercepts) and
    rebuilt on load."""

    kind = "svm"
    # rebuilt from scikit-learn's private SVC attributes: refused under another version
    private_layout_of = "sklearn"
    _ARRAYS = ("support_", "support_vectors_", "_n_support", "dual_coef_", "intercept_",
               "_dual_coef_", "_intercept_", "class_weight_", "n_iter_", "_probA", "_probB")

    def __init__(self, C: float = 10.0, gamma: str | float = "scale", cv: int = 3,
                 class_weight: str | None = None, random_state: int = 0):
        self.C = C
        self.gamma = gamma
        self.cv = cv
        self.class_weight = class_weight
        self.random_state = random_state

    def _svc(self, gamma=None):
        from sklearn.svm import SVC

        return SVC(C=self.C, kernel="rbf", gamma=self.gamma if gamma is None else gamma,
                   class_weight=self.class_weight, decision_function_shape="ovr")

    def fit(self, X, y) -> "RBFSVMHead":
        X, y = check_Xy(X, y)
        Z = self._fit_scaler(X)
        self.svc_ = self._svc().fit(Z, y)
        self.classes_ = self.svc_.classes_
        self._fit_platt(self._svc, Z, y, self.cv, self.random_state)
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "svc_")
        return self.svc_.decision_function(self._scale(check_X(X, self.svc_.shape_fit_[1])))

    def predict_proba(self, X) -> np.ndarray:
        return self._platt_proba(self.decision_function(X))

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(_two_columns(self.decision_function(X)), axis=1)]

    def to_state(self):
        arrays = {"mean": self.mean_, "scale": self.scale_, "platt_a": self.platt_a_,
                  "platt_b": self.platt_b_, "svc_shape_fit": np.asarray(self.svc_.shape_fit_)}
        arrays.update({f"svc{name}": np.asarray(getattr(self.svc_, name)) for name in self._ARRAYS})
        return arrays, {"C": self.C, "gamma_value": float(self.svc_._gamma),
                        "class_weight": self.class_weight}

    @classmethod
    def from_state(cls, classes, arrays, params):
        h = cls(C=params["C"], class_weight=params.get("class_weight"))
        h.classes_, h.mean_, h.scale_ = classes, arrays["mean"], arrays["scale"]
        h.platt_a_, h.platt_b_ = arrays["platt_a"], arrays["platt_b"]
        svc = h._svc(gamma=params["gamma_value"])
        for name in cls._ARRAYS:
            setattr(svc, name, arrays[f"svc{name}"])
        svc.classes_ = classes
        svc._gamma = params["gamma_value"]
        svc.shape_fit_ = tuple(int(v) for v in arrays["svc_shape_fit"])
        svc._sparse = False
        svc.fit_status_ = 0
        svc.n_features_in_ = svc.shape_fit_[1]
        h.svc_ = svc
        return h


HEAD_KINDS: dict[str, type] = {c.kind: c for c in
                               (LogRegHead, LinearSVMHead, RBFSVMHead, KNNHead, CentroidHead)}
if tuple(HEAD_KINDS) != KIND_NAMES:
    raise ImportError("classifiers.heads.KIND_NAMES must list every head kind, in this order")


def make_head(kind: str, class_weight: str | None = None, **params: Any):
    if kind not in HEAD_KINDS:
        raise InvalidInputError(f"unknown head kind {kind!r}; available: {', '.join(HEAD_KINDS)}")
    cls = HEAD_KINDS[kind]
    if class_weight is not None:
        if "class_weight" not in cls().get_params():
            raise InvalidInputError(f"head kind {kind!r} does not take class weights")
        params["class_weight"] = class_weight
    return cls(**params)
