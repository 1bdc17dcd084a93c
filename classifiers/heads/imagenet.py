"""The built-in ``imagenet`` head: a backbone's own 1000-way classifier as a head on its
un-normalised pre-logit embeddings, so prediction follows the same path as any trained head
(image → backbone → vector → head → answer)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from embedsvc.backbones.base import PRE_LOGITS, Backbone
from embedsvc.embeddings import Embeddings
from embedsvc.provenance import Provenance, check_compatible
from embedsvc.errors import IncompatibleError, InvalidInputError, NotFoundError

NAME = "imagenet"


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class descriptions in index order, from timm (no download)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(info.num_classes()))


@dataclass(frozen=True)
class Prediction:
    id: str
    top: tuple[tuple[str, float], ...]  # (label, probability), best first

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def probability(self) -> float:
        return self.top[0][1]


@dataclass(frozen=True)
class ImageNetHead:
    weight: np.ndarray  # (1000, D)
    bias: np.ndarray  # (1000,)
    classes: tuple[str, ...]
    provenance: dict[str, Any]  # what the input embeddings must match

    @classmethod
    def from_backbone(cls, backbone: Backbone) -> "ImageNetHead":
        layer = backbone.imagenet_classifier()
        if layer is None:
            raise NotFoundError(
                f"backbone {backbone.name!r} has no ImageNet classifier, so no {NAME!r} head"
            )
        provenance = Provenance.of_encoder(backbone.cfg.provenance(), PRE_LOGITS, False).to_dict()
        return cls(
            weight=layer.weight.detach().cpu().numpy().astype(np.float32),
            bias=layer.bias.detach().cpu().numpy().astype(np.float32),
            classes=imagenet_class_names(),
            provenance=provenance,
        )

    def predict_proba(self, embeddings: Embeddings) -> np.ndarray:
        # the backbone's own classifier reads features of any decode mode and runtime (for int8,
        # `embedsvc calibrate` reports how often its top-1 label stays the same)
        loose = {k: embeddings.provenance.get(k) for k in ("decode", "runtime")}
        check_compatible({**self.provenance, **loose}, embeddings.provenance, f"the {NAME!r} head")
        x = np.asarray(embeddings.vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.weight.shape[1]:
            raise IncompatibleError(
                f"the {NAME!r} head takes (N, {self.weight.shape[1]}) features, got {x.shape}"
            )
        logits = x @ self.weight.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def ood_scores(self, embeddings: Embeddings, proba: np.ndarray | None = None) -> np.ndarray:
        """1 - the top class probability (the same contract as trained heads)."""
        proba = self.predict_proba(embeddings) if proba is None else proba
        return 1.0 - proba.max(axis=1)

    def predict(self, embeddings: Embeddings, top: int = 5) -> list[Prediction]:
        if not 1 <= top <= len(self.classes):
            raise InvalidInputError(f"top must be in [1, {len(self.classes)}], got {top}")
        proba = self.predict_proba(embeddings)
        order = np.argsort(-proba, axis=1, kind="stable")[:, :top]
        return [
            Prediction(id_, tuple((self.classes[j], float(row[j])) for j in idx))
            for id_, row, idx in zip(embeddings.ids, proba, order)
        ]
