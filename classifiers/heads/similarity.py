"""Heads that compare a query with stored vectors instead of fitting weights: cosine k-NN and
nearest class centroid. Their state is the vectors themselves."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from embedsvc.errors import InvalidInputError

from .features import check_X, check_Xy, softmax


# -- k nearest neighbours -----------------------------------------------------------------------
class KNNHead(ClassifierMixin, BaseEstimator):
    """Cosine k-NN over the training vectors (FAISS inner product on unit vectors), votes
    weighted by exp(similarity / temperature)."""

    kind = "knn"

    def __init__(self, k: int = 20, temperature: float = 0.07):
        self.k = k
        self.temperature = temperature

    @staticmethod
    def _unit(X):
        return X / np.clip(np.linalg.norm(X, axis=1, keepdims=True), 1e-12, None)

    def fit(self, X, y) -> "KNNHead":
        X, y = check_Xy(X, y)
        if self.k < 1:
            raise InvalidInputError(f"k must be >= 1, got {self.k}")
        self.classes_, self.y_ = np.unique(y, return_inverse=True)
        self.vectors_ = self._unit(X).astype(np.float32)
        self._index = None
        return self

    def _search(self, X):
        import faiss

        check_is_fitted(self, "vectors_")
        if getattr(self, "_index", None) is None:
            self._index = faiss.IndexFlatIP(self.vectors_.shape[1])
            self._index.add(self.vectors_)
        q = np.ascontiguousarray(self._unit(check_X(X, self.vectors_.shape[1])))
        return self._index.search(q, min(self.k, len(self.vectors_)))

    def predict_proba(self, X) -> np.ndarray:
        sims, idx = self._search(X)
        w = np.exp((sims - sims[:, :1]) / self.temperature)
        votes = np.zeros((len(idx), len(self.classes_)))
        np.add.at(votes, (np.repeat(np.arange(len(idx)), idx.shape[1]), self.y_[idx].ravel()), w.ravel())
        return votes / votes.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def nearest_similarity(self, X) -> np.ndarray:
        return self._search(X)[0][:, 0]

    def to_state(self):
        return {"vectors": self.vectors_, "y": self.y_.astype(np.int64)}, \
            {"k": self.k, "temperature": self.temperature}

    @classmethod
    def from_state(cls, classes, arrays, params):
        h = cls(k=params["k"], temperature=params["temperature"])
        h.classes_, h.vectors_, h.y_ = classes, arrays["vectors"], arrays["y"]
        h._index = None
        return h


# -- nearest class centroid ----------------------------------------------------------------------
class CentroidHead(ClassifierMixin, BaseEstimator):
    """Nearest class mean by cosine; probabilities softmax(sim / T), T fitted on the training set."""

    kind = "centroid"

    def fit(self, X, y) -> "CentroidHead":
        X, y = check_Xy(X, y)
        self.classes_, inv = np.unique(y, return_inverse=True)
        U = KNNHead._unit(X)
        C = np.stack([U[inv == k].mean(axis=0) for k in range(len(self.classes_))])
        self.centroids_ = KNNHead._unit(C).astype(np.float32)
        sims = U @ self.centroids_.T
        temps = np.logspace(-3, 0, 31)
        nll = [-np.mean(np.log(softmax(sims / t)[np.arange(len(inv)), inv] + 1e-12)) for t in temps]
        self.temperature_ = float(temps[int(np.argmin(nll))])
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "centroids_")
        return KNNHead._unit(check_X(X, self.centroids_.shape[1])) @ self.centroids_.T

    def predict_proba(self, X) -> np.ndarray:
        return softmax(self.decision_function(X) / self.temperature_)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def to_state(self):
        return {"centroids": self.centroids_}, {"temperature": self.temperature_}

    @classmethod
    def from_state(cls, classes, arrays, params):
        h = cls()
        h.classes_, h.centroids_, h.temperature_ = classes, arrays["centroids"], params["temperature"]
        return h
