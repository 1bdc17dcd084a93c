"""Fine-tuning towards a target domain: target inputs (images or texts) in every step, the domain
loss, and how a run picks its epoch without target labels.

Each step's batch holds ``batch_size - n_t`` source inputs and ``n_t = round(batch_size *
target_ratio)`` target inputs, forwarded together (BatchNorm sees both domains, as in DANN).
Labelled target inputs (``--target-labelled``) join the classification loss: the guide's
strategy 1, with few target labels oversampled against many source ones. Unlabelled ones
(``--target-data``) only feed the domain loss (``--da``) and the optional entropy term.

Model selection without target labels: Ben-David et al.'s bound, target error <= source error
+ 1/2 A-distance + (the error of the best joint hypothesis, unknown and taken as constant), with
both measurable terms estimated every epoch: the source validation error, and the proxy
A-distance between held-out source and target features (a cross-validated linear domain
classifier, gap.py). An epoch that keeps the source task and makes the domains harder to tell
apart wins. Source accuracy alone would pick the epoch before the adaptation did anything;
target entropy alone rewards a network that is confidently wrong.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from classifiers.adapt.gap import domain_error, proxy_a_distance
from classifiers.adapt.losses import DomainLoss, entropy_loss
from embedsvc.datasets.sources import scan_source
from embedsvc.embeddings import l2_normalize
from embedsvc.errors import InvalidInputError

from .data import labelled_records

SELECTION_TARGET = 500  # target inputs whose features the selection criterion uses


@dataclass
class Target:
    data: object  # the run's inputs (LabelledImages, LabelledTexts); labels -1 when unlabelled
    labelled: bool

    def __len__(self) -> int:
        return len(self.data)


def load_target(path: str, labelled: bool, inputs, classes: list[str], progress: bool,
                max_items: int) -> Target:
    """The target inputs, loaded as the run's ``inputs`` load its data (finetune/inputs.py);
    labelled ones must use the source's class names."""
    if labelled:
        records = labelled_records(path)
        unknown = sorted({r.label for r in records} - set(classes))
        if unknown:
            raise InvalidInputError(f"target labels {unknown[:5]} are not among the source classes "
                                    f"({', '.join(classes)})")
        return Target(inputs.load(records, classes, progress, max_items), True)
    records = scan_source(path)
    if not records:
        raise InvalidInputError(f"{path}: no target {inputs.unit}s")
    # labels, if the folder has them, are ignored: this target is for unsupervised adaptation
    unlabelled = [dataclasses.replace(r, label=None) for r in records]
    return Target(inputs.load(unlabelled, classes, progress, max_items), False)


def target_count(batch_size: int, ratio: float) -> int:
    """Target inputs per step; at least one of each domain."""
    return int(min(batch_size - 1, max(1, round(batch_size * ratio))))


def target_batches(target: Target, n: int, seed: int, epoch: int, inputs,
                   augmented: bool) -> Iterator[tuple[object, torch.Tensor]]:
    """Endless batches of ``n`` target inputs for one epoch, reshuffled whenever the target runs
    out (a small target is oversampled), a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch + 50_000)
    order = torch.zeros(0, dtype=torch.int64)
    while True:
        while len(order) < n:
            order = torch.cat([order, torch.randperm(len(target), generator=g)])
        idx, order = order[:n], order[n:]
        yield inputs.augment(inputs.take(target.data, idx), g, augmented, ()), target.data.labels[idx]


def adapted_loss(net, both, n: int, y: torch.Tensor, yt: torch.Tensor,
                 labelled: bool, loss_fn, domain: DomainLoss | None, da_weight: float,
                 entropy_weight: float, progress: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(total loss, source logits, domain loss) of one mixed step: ``both`` is the model input
    of the ``n`` source inputs followed by the target ones."""
    feats = net.backbone(both)
    logits = net.classifier(net.dropout(feats)).float()
    loss = loss_fn(logits, torch.cat([y, yt])) if labelled else loss_fn(logits[:n], y)
    d = torch.zeros((), device=loss.device)
    if domain is not None:
        d = domain(feats[:n], feats[n:], progress)
        loss = loss + da_weight * d
    if entropy_weight and not labelled:
        loss = loss + entropy_weight * entropy_loss(logits[n:])
    return loss, logits[:n], float(d.detach())


def selection_sample(target: Target, seed: int):
    n = min(len(target), SELECTION_TARGET)
    return target.data.subset(np.sort(np.random.default_rng(seed).permutation(len(target))[:n]))


def bound_terms(source_features: torch.Tensor, source_error: float,
                target_features: torch.Tensor, seed: int) -> dict[str, float]:
    """The measurable part of the target-error bound (see the module docstring)."""
    a = proxy_a_distance(domain_error(l2_normalize(source_features.numpy()),
                                      l2_normalize(target_features.numpy()), seed))
    return {"a_distance": a, "bound": source_error + a / 2}
