"""MixStyle (Zhou, Yang, Qiao & Xiang, ICLR 2021): the feature-statistics half of the ``style``
preset. In the early stages, where channel means and standard deviations carry an image's
style (colour, contrast, texture) rather than its content, each training image's statistics are
mixed with another image's. The network then sees styles between the ones it has, and learns
content that does not depend on them. A no-op at inference.

Attached with forward hooks after the first ``STAGES`` stage groups of any backbone whose stages
are modules (timm's grouping), so no model code changes.
"""
from __future__ import annotations

import torch
from torch import nn

from embedsvc.backbones.base import Backbone

STAGES = 3  # stage groups after the stem that get MixStyle (the paper: after res1..res3)


class MixStyle(nn.Module):
    def __init__(self, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6):
        super().__init__()
        self.p, self.alpha, self.eps = p, alpha, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # randomness from torch's global generator, which the trainer seeds per epoch
        if not self.training or x.dim() != 4 or x.shape[0] < 2 or float(torch.rand(())) > self.p:
            return x
        mu = x.mean(dim=(2, 3), keepdim=True).detach()
        sig = (x.var(dim=(2, 3), keepdim=True) + self.eps).sqrt().detach()
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((x.shape[0], 1, 1, 1)).to(x)
        perm = torch.randperm(x.shape[0]).to(x.device)
        mu_mix = lam * mu + (1 - lam) * mu[perm]
        sig_mix = lam * sig + (1 - lam) * sig[perm]
        return (x - mu) / sig * sig_mix + mu_mix


def early_stage_modules(backbone: Backbone, stages: int = STAGES) -> list[nn.Module]:
    """The modules of the first ``stages`` stage groups after the stem (each group's parameters
    share one module prefix, e.g. ``blocks.0``); groups without one are skipped."""
    found = []
    for _name, names in backbone.layer_groups()[1:1 + stages]:
        parts = [n.split(".")[:-1] for n in names]
        prefix = []
        for level in zip(*parts):
            if len(set(level)) != 1:
                break
            prefix.append(level[0])
        if prefix:
            found.append(backbone.model.get_submodule(".".join(prefix)))
    return found


def attach_mixstyle(backbone: Backbone, mixer: MixStyle, stages: int = STAGES) -> list:
    """Hook ``mixer`` onto the outputs of the early stages; returns the hook handles."""
    return [m.register_forward_hook(lambda _m, _inp, out: mixer(out))
            for m in early_stage_modules(backbone, stages)]
