"""An encoder (an image backbone, or a text encoder's ``TextBackbone``) with a new classifier on
its features, and its parameters grouped from the top (classifier) down to the stem or the
embeddings, the order in which strategies unfreeze them."""
from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from embedsvc.runtime import DevicePlan


class FinetuneNet(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(backbone.cfg.dim, num_classes)
        # trained with the classifier, never exported: DANN's domain discriminator, when set
        self.adapter: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.backbone(x)))

    def groups_from_top(self) -> list[tuple[str, list[nn.Parameter]]]:
        """[("classifier", ...), (last stage group, ...), ..., ("stem", ...)].

        Weights off the path to the features (an ImageNet classifier, a text model's pooler)
        are left out and frozen: they never get a gradient."""
        unused = {id(p) for p in self.backbone.unused_parameters()}
        params = dict(self.backbone.model.named_parameters())
        groups = []
        for name, names in self.backbone.layer_groups():
            ps = [params[n] for n in names if id(params[n]) not in unused]
            if ps:
                groups.append((name, ps))
        for p in params.values():
            if id(p) in unused:
                p.requires_grad_(False)
        top = list(self.classifier.parameters())
        if self.adapter is not None:
            top += list(self.adapter.parameters())
        return [("classifier", top)] + groups[::-1]


def set_trainable_depth(groups: list[tuple[str, list[nn.Parameter]]], depth: int) -> None:
    """The first ``depth`` groups from the top train; the rest are frozen."""
    for d, (_, ps) in enumerate(groups):
        for p in ps:
            p.requires_grad_(d < depth)


def no_weight_decay(p: nn.Parameter) -> bool:
    """Biases and normalisation scales are not decayed (the usual AdamW practice)."""
    return p.ndim <= 1


def to_input(x: torch.Tensor, pre, plan: DevicePlan) -> torch.Tensor:
    """uint8 images → the normalised input on the run's device (channels-last where it helps)."""
    from embedsvc.preprocess import normalize

    x = normalize(x.to(plan.device, non_blocking=True), pre)
    return x.contiguous(memory_format=torch.channels_last) if plan.channels_last else x


@torch.inference_mode()
def predict_outputs(net: FinetuneNet, inputs, data, plan: DevicePlan, batch_size: int = 128,
                    progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of ``data`` (the run's ``inputs``: finetune/inputs.py), in eval
    mode, on the CPU."""
    net.eval()
    feats, logits = [], []
    for start in tqdm(range(0, len(data), batch_size), desc="eval", disable=not progress, leave=False):
        x = inputs.to_input(inputs.take(data, torch.arange(start, min(start + batch_size, len(data)))),
                            plan)
        with plan.autocast():
            f = net.backbone(x)
            logits.append(net.classifier(f).float().cpu())
        feats.append(f.float().cpu())
    if not logits:
        return torch.zeros(0, net.classifier.in_features), torch.zeros(0, net.classifier.out_features)
    return torch.cat(feats), torch.cat(logits)
