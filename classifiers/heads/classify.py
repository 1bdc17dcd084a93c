"""Images or texts → a trained head's answers: label, probability, top-k, out-of-distribution score,
and ``unknown`` when the head is not sure enough."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from embedsvc.embeddings import Embeddings
from embedsvc.errors import InvalidInputError
from embedsvc.encoders import query_encoder
from embedsvc.query import QUERY_MAX, QueryEmbedder

from .artifact import Head

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Classification:
    id: str
    label: str  # UNKNOWN when abstaining
    probability: float
    top: tuple[tuple[str, float], ...]
    ood_score: float
    abstained: bool


def classify_embeddings(head: Head, emb: Embeddings, top: int = 5,
                        abstain_below: float | None = None,
                        max_ood: float | None = None) -> list[Classification]:
    """Abstain (label ``unknown``) when the top probability is below ``abstain_below`` or the
    OOD score above ``max_ood``."""
    if top < 1:
        raise InvalidInputError(f"top must be >= 1, got {top}")
    for name, value in (("abstain_below", abstain_below), ("max_ood", max_ood)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise InvalidInputError(f"{name} must be in [0, 1], got {value}")
    proba = head.predict_proba(emb)
    ood = head.ood_scores(emb, proba)
    classes = head.classes
    out = []
    for id_, p, o in zip(emb.ids, proba, ood):
        order = np.argsort(-p, kind="stable")[:top]
        best = float(p[order[0]])
        abstain = ((abstain_below is not None and best < abstain_below)
                   or (max_ood is not None and o > max_ood))
        out.append(Classification(
            id=id_, label=UNKNOWN if abstain else classes[order[0]], probability=best,
            top=tuple((classes[j], float(p[j])) for j in order), ood_score=float(o),
            abstained=abstain))
    return out


class HeadClassifier:
    """A saved head plus the encoder its features come from, ready for its inputs (images or
    texts, as its provenance says)."""

    def __init__(self, head: Head | str | os.PathLike, device: str = "auto"):
        self.head = head if isinstance(head, Head) else Head.load(head)
        self.device = device
        self._extractor = None

    def extractor(self, images: int = QUERY_MAX + 1):
        """The head's feature extractor; for a few images, a cached graph without torch when
        there is one (``embedsvc/query.py``: a one-shot ``classify`` starts in a second)."""
        if self._extractor is None or (images > QUERY_MAX and
                                       isinstance(self._extractor, QueryEmbedder)):
            self._extractor = query_encoder(self.head.provenance, self.device, images)
        return self._extractor

    def classify(self, images: Sequence, ids: Sequence[str] | None = None,
                 top: int = 5, abstain_below: float | None = None,
                 skip_bad: bool = False, max_ood: float | None = None,
                 ) -> tuple[list[Classification], Embeddings]:
        images = list(images)
        emb = self.extractor(len(images)).embed(images, ids=ids, skip_bad=skip_bad)
        return classify_embeddings(self.head, emb, top, abstain_below, max_ood), emb
