"""A finished run's accuracy on labelled inputs (decoded images, tokenised texts): its encoder and
classifier, as they load."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from embedsvc.runs import HEAD_DIR, canonical_name
from embedsvc.errors import InvalidInputError
from embedsvc.runtime import plan_device

from .config import FinetuneConfig
from .inputs import inputs_for
from .model import FinetuneNet, predict_outputs


def evaluate_run(run_dir: str | os.PathLike, data, device: str = "auto") -> float:
    """Accuracy of a finished run's encoder + classifier on ``data`` (same classes), loaded as
    the run's inputs are (``inputs_for``: LabelledImages, LabelledTexts)."""
    from classifiers.heads import Head

    run_dir = Path(run_dir)
    inputs = inputs_for(canonical_name(run_dir), FinetuneConfig())
    head = Head.load(run_dir / HEAD_DIR)
    net = FinetuneNet(inputs.backbone, len(head.classes))
    with torch.no_grad():
        net.classifier.weight.copy_(torch.from_numpy(np.asarray(head.estimator.coef_)))
        net.classifier.bias.copy_(torch.from_numpy(np.asarray(head.estimator.intercept_)))
    if head.classes != data.classes:
        raise InvalidInputError(f"run classes {head.classes} differ from the data's {data.classes}")
    plan = plan_device(device)
    net.to(plan.device)
    logits = predict_outputs(net, inputs, data, plan)[1]
    return float((logits.argmax(1) == data.labels).float().mean())
