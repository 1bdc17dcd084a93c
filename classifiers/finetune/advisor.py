"""The decision guide "how much data, how similar a domain → which strategy", made executable.

Size (labelled training images):   < 500 → feature extraction (``linear``, or a head on
embeddings); 500 – 5,000 → ``partial`` (the top stages adapt, the rest stay general);
> 5,000 → ``full`` (enough data to move every layer without overfitting).
Domain gap (when a target set is given): measured on frozen embeddings as the proxy A-distance,
2 (1 − 2 ε) with ε the cross-validated error of a classifier telling source from target
(0 = indistinguishable, 2 = fully separable). A large gap means the pretrained features fit the
target less: unfreeze one step more than size alone says, and adapt on target data.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from embedsvc.backbones.registry import DEFAULT_BACKBONE
from embedsvc.errors import InvalidInputError

SMALL, LARGE = 500, 5000  # the guide's boundaries, in labelled images
GAP_MODERATE, GAP_LARGE = 0.5, 1.5  # proxy A-distance
LADDER = ("linear", "partial", "full")
EPOCHS = {"linear": 10, "partial": 15, "full": 10}


@dataclass(frozen=True)
class DomainGap:
    proxy_a_distance: float
    domain_error: float  # cross-validated error of the source-vs-target classifier
    centroid_cosine: float  # cosine similarity of the two mean embeddings
    n_source: int
    n_target: int

    @property
    def level(self) -> str:
        if self.proxy_a_distance >= GAP_LARGE:
            return "large"
        return "moderate" if self.proxy_a_distance >= GAP_MODERATE else "small"


@dataclass(frozen=True)
class Recommendation:
    strategy: str
    reasons: tuple[str, ...]
    epochs: int
    partial_stages: int = 2
    gap: DomainGap | None = None
    per_class: dict[str, int] = field(default_factory=dict)

    def command(self, data: str, backbone: str = DEFAULT_BACKBONE, out: str = "runs/finetuned") -> str:
        extra = f" --partial-stages {self.partial_stages}" if self.strategy == "partial" else ""
        return (f"embedsvc finetune {data} --backbone {backbone} --strategy {self.strategy}{extra} "
                f"--epochs {self.epochs} --val-split 0.1 --out {out}")


def recommend(n_images: int, n_classes: int, gap: DomainGap | None = None,
              per_class: dict[str, int] | None = None) -> Recommendation:
    if n_images < SMALL:
        step, why = 0, (f"{n_images} labelled images is under {SMALL}: too few to move the backbone "
                        f"without overfitting, so keep it frozen and train only a classifier on its "
                        f"features (feature extraction)")
    elif n_images <= LARGE:
        step, why = 1, (f"{n_images} labelled images is between {SMALL} and {LARGE}: enough to adapt "
                        f"the top stages, which hold the task-specific features, while the early "
                        f"general ones stay frozen (partial fine-tuning)")
    else:
        step, why = 2, (f"{n_images} labelled images is over {LARGE}: enough to fine-tune every layer "
                        f"(with lower learning rates towards the input) without overfitting")
    reasons = [why]
    stages = 2
    if gap is not None:
        desc = (f"domain gap to the target: proxy A-distance {gap.proxy_a_distance:.2f} ({gap.level}; "
                f"a classifier tells the two sets apart with {100 * (1 - gap.domain_error):.0f}% accuracy)")
        if gap.level == "large":
            if step < 2:
                step += 1
                reasons.append(desc + ": the pretrained features fit the target less, so unfreeze one "
                               "step more than the data size alone suggests")
            else:
                reasons.append(desc + ": already fine-tuning everything; fine-tune on labelled target "
                               "data where you have it and keep augmentation on")
        elif gap.level == "moderate":
            stages = 3
            reasons.append(desc + ": moderate, so partial runs unfreeze three stage groups instead of two")
        else:
            reasons.append(desc + ": small, the data size decides")
    if per_class:
        smallest = min(per_class, key=per_class.get)
        if per_class[smallest] < 10:
            reasons.append(f"class {smallest!r} has only {per_class[smallest]} images: collect more, or "
                           f"use --class-weight balanced with a head")
    strategy = LADDER[step]
    return Recommendation(strategy, tuple(reasons), EPOCHS[strategy], stages, gap, dict(per_class or {}))


def domain_gap(source: str, target: str, backbone: str = DEFAULT_BACKBONE, max_per_set: int = 300,
               seed: int = 0, progress: bool = True) -> DomainGap:
    """Proxy A-distance between two image sets on the backbone's frozen embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from embedsvc.backbones import create_backbone
    from embedsvc.datasets.sources import scan_source
    from embedsvc.extract import ExtractConfig, FeatureExtractor

    rng = np.random.default_rng(seed)
    fe = FeatureExtractor(create_backbone(backbone), ExtractConfig())
    a_paths = [r.path for r in scan_source(source)]
    b_paths = [r.path for r in scan_source(target)]
    # equal sizes: with unequal sets a classifier that always says "the larger" looks good
    n = min(len(a_paths), len(b_paths), max_per_set)
    if n < 4:
        raise InvalidInputError(f"the domain gap needs at least 4 images in each set, got {n}")

    def sample(paths: list[str]) -> list[str]:
        return [paths[i] for i in np.sort(rng.choice(len(paths), n, replace=False))]

    a = fe.embed(sample(a_paths), skip_bad=True, progress=progress).vectors
    b = fe.embed(sample(b_paths), skip_bad=True, progress=progress).vectors
    X = np.concatenate([a, b])
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    folds = int(min(5, len(a), len(b)))
    acc = cross_val_score(LogisticRegression(C=1.0, max_iter=2000), X, y, cv=folds,
                          scoring="balanced_accuracy").mean()
    err = float(1.0 - acc)
    ca, cb = a.mean(0), b.mean(0)
    cos = float(ca @ cb / (np.linalg.norm(ca) * np.linalg.norm(cb) + 1e-12))
    return DomainGap(max(0.0, 2.0 * (1.0 - 2.0 * err)), err, cos, len(a), len(b))


def advise(data: str, target: str | None = None, backbone: str = DEFAULT_BACKBONE,
           progress: bool = True) -> Recommendation:
    from .data import labelled_records

    records = [r for r in labelled_records(data) if r.split in (None, "train")]
    per_class = dict(sorted(Counter(r.label for r in records).items()))
    gap = domain_gap(data, target, backbone, progress=progress) if target else None
    return recommend(len(records), len(per_class), gap, per_class)
