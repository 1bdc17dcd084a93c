"""Domain-invariant learning with unlabelled target images: losses on the pooled features of a
source batch and a target batch, added to the source classification loss.

- ``dann``: a domain discriminator on the features behind a gradient reversal layer (Ganin et
  al. 2016): the discriminator learns to tell the domains apart, the backbone receives the
  opposite gradient and learns features that cannot. Its weight ramps from 0 to 1 with
  2 / (1 + exp(-10 p)) - 1 over training progress p, as in the paper: early features are
  noise, and reversing a discriminator's gradient through them only hurts.
- ``coral``: Deep CORAL (Sun & Saenko 2016), the squared Frobenius distance between the two
  batches' feature covariances, / 4 d^2.
- ``mmd``: maximum mean discrepancy with a mixture of RBF kernels whose bandwidths are the
  median pairwise distance times 2^-2..2^2 (Long et al. 2015): no single bandwidth to tune.
- entropy minimisation on the target's predictions (Grandvalet & Bengio 2004), optional: pushes
  target images away from the decision boundaries, once the domains overlap.

``gap.py`` measures MMD in numpy, with permutation tests, for reports and the service; this is
the differentiable torch form a backbone trains through.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .choices import DA_METHODS, check_da

__all__ = ["DA_METHODS", "DomainLoss", "coral_loss", "dann_ramp", "entropy_loss", "mmd_loss",
           "reverse_gradient"]


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lam * grad, None


def reverse_gradient(x: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient flowing back is multiplied by -lam."""
    return _ReverseGradient.apply(x, lam)


def dann_ramp(progress: float) -> float:
    """Ganin et al.'s schedule for the reversal weight: 0 at the start, ~1 at the end."""
    return 2.0 / (1.0 + math.exp(-10.0 * min(max(progress, 0.0), 1.0))) - 1.0


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    d = source.shape[1]

    def cov(x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(dim=0, keepdim=True)
        return x.T @ x / max(x.shape[0] - 1, 1)

    return ((cov(source) - cov(target)) ** 2).sum() / (4 * d * d)


def mmd_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Biased MMD^2 estimate (never negative, lower variance for small batches)."""
    x = torch.cat([source, target])
    d2 = torch.cdist(x, x).pow(2)
    n = source.shape[0]
    median = d2.detach()[~torch.eye(len(x), dtype=torch.bool, device=x.device)].median()
    base = median.clamp_min(1e-8)
    k = sum(torch.exp(-d2 / (base * 2.0 ** e)) for e in range(-2, 3)) / 5
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()


class DomainDiscriminator(nn.Module):
    """Features → logit of "is target", two hidden layers as in DANN."""

    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(0.5),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.5),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class DomainLoss(nn.Module):
    """One of DA_METHODS as a module (DANN's discriminator is trained with the network, and
    saved in its checkpoints): ``loss(source_features, target_features, progress)``."""

    def __init__(self, method: str, dim: int):
        super().__init__()
        self.method = check_da(method)
        self.discriminator = DomainDiscriminator(dim) if method == "dann" else None

    def forward(self, source: torch.Tensor, target: torch.Tensor, progress: float) -> torch.Tensor:
        source, target = source.float(), target.float()
        if self.method == "coral":
            return coral_loss(source, target)
        if self.method == "mmd":
            return mmd_loss(source, target)
        feats = reverse_gradient(torch.cat([source, target]), dann_ramp(progress))
        labels = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).to(feats.device)
        return nn.functional.binary_cross_entropy_with_logits(self.discriminator(feats), labels)
