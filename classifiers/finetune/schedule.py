"""When each part of the network trains, and how fast: pure functions of (epoch, step), so a
resumed run recomputes exactly the freeze state and learning rate it stopped at instead of
trusting saved scheduler objects (the resume bug of several training libraries).

Groups are numbered from the top: depth 0 is the new classifier, depth 1 the last backbone stage
group, ..., depth n the stem. ``trainable_depth`` says how many of them train (1 = only the
classifier, n + 1 = everything).
"""
from __future__ import annotations

import math

from .config import FinetuneConfig


def trainable_depth(cfg: FinetuneConfig, strategy: str, epoch: int, num_backbone_groups: int) -> int:
    """Number of groups, counted from the classifier down, that train during ``epoch`` (0-based)."""
    everything = num_backbone_groups + 1
    if strategy == "linear":
        return 1
    if strategy == "partial":
        return min(everything, 1 + cfg.partial_stages)
    if strategy == "full":
        return everything
    if strategy == "gradual":  # the classifier first, then one more group every E epochs
        return min(everything, 1 + epoch // cfg.unfreeze_every)
    if strategy == "lp-ft":  # linear probe, then everything from that head
        return 1 if epoch < cfg.probe_epochs else everything
    raise ValueError(f"no schedule for strategy {strategy!r}")  # `auto` is resolved before


def lr_multiplier(cfg: FinetuneConfig, depth: int) -> float:
    """Discriminative learning rates: the classifier gets the base rate, the last backbone group
    ``backbone_lr_ratio`` of it, and each group further down a factor ``layer_decay`` less
    (ULMFiT's discriminative fine-tuning, BEiT's layer decay)."""
    if depth == 0:
        return 1.0
    return cfg.backbone_lr_ratio * cfg.layer_decay ** (depth - 1)


def lr_factor(cfg: FinetuneConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up over ``warmup_epochs`` then cosine decay to zero at the last step."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
