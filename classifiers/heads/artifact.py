"""A trained head on disk, without pickle.

    HEAD/head.json    kind, classes in column order, hyper-parameters, metrics, a summary of the
                      training data, and the provenance of the features it takes (backbone,
                      weights sha256, preprocessing, dim, tap, normalisation)
    HEAD/params.npz   the learned arrays (numeric dtypes only; loaded with allow_pickle=False)
    HEAD/projection.npz  a head of a projected store: the projection its inputs get

Loading reads numbers and JSON only: nothing from the files is executed. A head refuses
features whose provenance differs from its own.
"""
from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedsvc.atomic import atomic_write_bytes
from embedsvc.embeddings import Embeddings
from embedsvc.projection import Projection, load_projection, project_embeddings
from embedsvc.provenance import check_compatible, read_artifact, write_artifact
from embedsvc.errors import InvalidInputError, NotFoundError
from embedsvc.versions import require_same_version

from classifiers.adapt.align import Alignment

from .kinds import HEAD_KINDS
from .ood import OODReference

OWN_ARRAYS = ("ood_", "align_")  # params.npz prefixes that are not the estimator's

FORMAT_VERSION = 1
HEAD_JSON = "head.json"


@dataclass
class Head:
    """A fitted head kind plus what it was trained on."""

    estimator: Any
    provenance: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    ood: OODReference | None = None  # training-embedding sample for OOD scores (ood.py)
    # what moved the training features into a target domain's statistics (adapt/align.py);
    # requests need no transform: the head was fitted in the target's statistics
    alignment: Alignment | None = None
    # trained on a projected store (``embedsvc project``): the projection its inputs get,
    # saved beside it as projection.npz
    projection: Projection | None = None

    @property
    def kind(self) -> str:
        return self.estimator.kind

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.estimator.classes_]

    def check(self, provenance: dict[str, Any]) -> None:
        check_compatible(self.provenance, provenance, f"{self.kind} head")

    def inputs(self, emb: Embeddings) -> Embeddings:
        """``emb`` as this head takes them: projected as its training vectors were (a head of a
        projected store, given its encoder's vectors), refused if made otherwise."""
        if self.projection is not None and not emb.provenance.get("projection"):
            emb = project_embeddings(emb, self.projection, self.provenance)
        self.check(emb.provenance)
        return emb

    def predict_proba(self, emb: Embeddings) -> np.ndarray:
        return self.estimator.predict_proba(self.inputs(emb).vectors)

    @property
    def ood_method(self) -> str:
        return "knn-conformal" if self.ood is not None else "max-probability"

    def ood_scores(self, emb: Embeddings, proba: np.ndarray | None = None) -> np.ndarray:
        """0 = looks like the training data, 1 = unlike it. With a reference sample (every head
        trained since they exist): the calibrated k-NN score of ood.py. Without (older heads, a
        fine-tuning run's classifier): kNN heads 1 - cosine similarity to the nearest training
        vector; others 1 - the highest class probability."""
        if self.ood is not None:
            return self.ood.scores(self.inputs(emb).vectors)
        if hasattr(self.estimator, "nearest_similarity"):
            return 1.0 - self.estimator.nearest_similarity(emb.vectors)
        proba = self.predict_proba(emb) if proba is None else proba
        return 1.0 - proba.max(axis=1)

    # -- persistence ------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        d = Path(directory)
        arrays, params = self.estimator.to_state()
        arrays = {**arrays, **(self.ood.arrays() if self.ood is not None else {}),
                  **(self.alignment.arrays() if self.alignment is not None else {})}
        for name, a in arrays.items():
            if np.asarray(a).dtype == object:
                raise InvalidInputError(f"head array {name!r} is not numeric; refusing to save")
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        meta = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "classes": self.classes,
            "params": params,
            "metrics": self.metrics,
            "training": self.training,
            "ood": {"method": self.ood_method,
                    **(self.ood.describe() if self.ood is not None else {})},
            "alignment": self.alignment.method if self.alignment is not None else None,
        }
        atomic_write_bytes(d / "params.npz", buf.getvalue())
        if self.projection is not None:
            self.projection.save(d)
        write_artifact(d / HEAD_JSON, meta, self.provenance)  # last: commit
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Head":
        d = Path(directory)
        meta = read_artifact(d / HEAD_JSON, "head", FORMAT_VERSION)
        kind = meta.get("kind")
        if kind not in HEAD_KINDS:
            raise InvalidInputError(f"head {str(d)!r} has unknown kind {kind!r}")
        depends_on = getattr(HEAD_KINDS[kind], "private_layout_of", None)
        if depends_on:
            require_same_version(meta, depends_on, f"head {str(d)!r} (kind {kind})")
        arrays = _load_arrays(d / "params.npz")
        classes = np.asarray([str(c) for c in meta["classes"]])
        ood_meta = meta.get("ood") or {}
        ood = OODReference.from_arrays(arrays, int(ood_meta.get("k", 1)),
                                       ood_meta.get("calibrated", "held-out"),
                                       ood_meta.get("detector"))
        estimator = HEAD_KINDS[kind].from_state(
            classes, {k: v for k, v in arrays.items() if not k.startswith(OWN_ARRAYS)}, meta["params"])
        projection = (load_projection(d, meta["provenance"]["projection"])
                      if meta["provenance"].get("projection") else None)
        return cls(estimator, meta["provenance"], meta.get("metrics", {}), meta.get("training", {}),
                   ood, Alignment.from_arrays(meta.get("alignment"), arrays), projection)


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise NotFoundError(f"head parameters {str(path)!r} are missing")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:  # numpy's refusal of object arrays (pickles)
        raise InvalidInputError(
            f"refusing to load {str(path)!r}: it holds pickled objects ({exc})") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInputError(f"{str(path)!r} is not a valid .npz file ({exc})") from None
