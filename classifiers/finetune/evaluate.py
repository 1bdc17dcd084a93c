"""A finished run's accuracy on decoded images: its backbone and classifier, as they load."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from embedsvc.backbones.run_format import HEAD_DIR, canonical_name
from embedsvc.errors import InvalidInputError
from embedsvc.runtime import plan_device

from .data import LabelledImages
from .model import FinetuneNet, predict_outputs


def evaluate_run(run_dir: str | os.PathLike, data: LabelledImages, device: str = "auto") -> float:
    """Accuracy of a finished run's backbone + classifier on decoded images (same classes)."""
    from classifiers.heads import Head

    from embedsvc.backbones.finetuned import build_finetuned

    run_dir = Path(run_dir)
    backbone = build_finetuned(canonical_name(run_dir))
    head = Head.load(run_dir / HEAD_DIR)
    net = FinetuneNet(backbone, len(head.classes))
    with torch.no_grad():
        net.classifier.weight.copy_(torch.from_numpy(np.asarray(head.estimator.coef_)))
        net.classifier.bias.copy_(torch.from_numpy(np.asarray(head.estimator.intercept_)))
    if head.classes != data.classes:
        raise InvalidInputError(f"run classes {head.classes} differ from the data's {data.classes}")
    plan = plan_device(device)
    net.to(plan.device)
    logits = predict_outputs(net, data.images, plan)[1]
    return float((logits.argmax(1) == data.labels).float().mean())
