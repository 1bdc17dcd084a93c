"""Layer freezing on a backbone's stages (stem, stage 1..N, head), as fastai's ``freeze_to``
and Lightning's BackboneFinetuning think of it: freezing is an index into ordered groups.

Frozen parameters get ``requires_grad=False``; the BatchNorm layers inside frozen groups are
kept in eval mode (their running statistics stay the pretrained ones) unless asked otherwise,
through ``train_mode``, which puts the model in training mode except for those.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from embedsvc.backbones.base import Backbone
from embedsvc.errors import InvalidInputError


@dataclass(frozen=True)
class StageState:
    name: str
    trainable: int  # parameters (elements) that will learn
    frozen: int


@dataclass(frozen=True)
class FreezeReport:
    stages: tuple[StageState, ...]

    @property
    def trainable(self) -> int:
        return sum(s.trainable for s in self.stages)

    @property
    def frozen(self) -> int:
        return sum(s.frozen for s in self.stages)

    def table(self) -> str:
        rows = [f"{'stage':<10} {'trainable':>12} {'frozen':>12}"]
        rows += [f"{s.name:<10} {s.trainable:>12,} {s.frozen:>12,}" for s in self.stages]
        rows.append(f"{'total':<10} {self.trainable:>12,} {self.frozen:>12,}")
        return "\n".join(rows)


def _params(backbone: Backbone) -> dict[str, nn.Parameter]:
    return dict(backbone.model.named_parameters())


def stage_report(backbone: Backbone) -> FreezeReport:
    params = _params(backbone)
    stages = []
    for name, names in backbone.layer_groups():
        trainable = sum(params[n].numel() for n in names if params[n].requires_grad)
        frozen = sum(params[n].numel() for n in names if not params[n].requires_grad)
        stages.append(StageState(name, trainable, frozen))
    return FreezeReport(tuple(stages))


def freeze_stages(backbone: Backbone, first_k: int) -> FreezeReport:
    """Freeze the first ``first_k`` groups (0 = everything trains; len(groups) = nothing does);
    the rest are unfrozen."""
    groups = backbone.layer_groups()
    if not 0 <= first_k <= len(groups):
        raise InvalidInputError(f"{backbone.name} has {len(groups)} stage groups "
                                f"({', '.join(n for n, _ in groups)}); cannot freeze {first_k}")
    params = _params(backbone)
    for i, (_, names) in enumerate(groups):
        for n in names:
            params[n].requires_grad_(i >= first_k)
    return stage_report(backbone)


def freeze_by_pattern(backbone: Backbone, pattern: str, freeze: bool = True) -> FreezeReport:
    """Freeze (or unfreeze) every parameter whose name matches the regular expression."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise InvalidInputError(f"bad freeze pattern {pattern!r}: {exc}") from None
    matched = 0
    for name, p in _params(backbone).items():
        if rx.search(name):
            p.requires_grad_(not freeze)
            matched += 1
    if matched == 0:
        raise InvalidInputError(f"freeze pattern {pattern!r} matches no parameter of {backbone.name}")
    return stage_report(backbone)


def frozen_batchnorms(backbone: Backbone) -> list[nn.modules.batchnorm._BatchNorm]:
    """BatchNorm layers all of whose parameters are frozen."""
    out = []
    for m in backbone.model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ps = list(m.parameters(recurse=False))
            if ps and not any(p.requires_grad for p in ps):
                out.append(m)
    return out


def train_mode(backbone: Backbone, update_frozen_bn: bool = False) -> None:
    """``backbone.train()``, except that frozen BatchNorms keep their pretrained statistics."""
    backbone.train()
    if not update_frozen_bn:
        for bn in frozen_batchnorms(backbone):
            bn.eval()
