"""A backbone with a new classifier on its pre-logit features, and its parameters grouped from
the top (classifier) down to the stem, the order in which strategies unfreeze them."""
from __future__ import annotations

import torch
from torch import nn

from embedsvc.backbones.base import Backbone


class FinetuneNet(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(backbone.cfg.dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.backbone(x)))

    def groups_from_top(self) -> list[tuple[str, list[nn.Parameter]]]:
        """[("classifier", ...), (last stage group, ...), ..., ("stem", ...)].

        The backbone's own ImageNet classifier is left out (and frozen): it is not on the path
        to the pre-logit features, so it never gets a gradient."""
        old_head = self.backbone.imagenet_classifier()
        unused = {id(p) for p in old_head.parameters()} if old_head is not None else set()
        params = dict(self.backbone.model.named_parameters())
        groups = []
        for name, names in self.backbone.layer_groups():
            ps = [params[n] for n in names if id(params[n]) not in unused]
            if ps:
                groups.append((name, ps))
        for p in params.values():
            if id(p) in unused:
                p.requires_grad_(False)
        return [("classifier", list(self.classifier.parameters()))] + groups[::-1]


def set_trainable_depth(groups: list[tuple[str, list[nn.Parameter]]], depth: int) -> None:
    """The first ``depth`` groups from the top train; the rest are frozen."""
    for d, (_, ps) in enumerate(groups):
        for p in ps:
            p.requires_grad_(d < depth)


def no_weight_decay(p: nn.Parameter) -> bool:
    """Biases and normalisation scales are not decayed (the usual AdamW practice)."""
    return p.ndim <= 1
