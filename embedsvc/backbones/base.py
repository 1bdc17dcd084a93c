"""The one interface every backbone answers, whatever library built it.

``forward(x)`` returns pooled pre-logit features (N, D); ``forward_taps`` returns pooled features
of earlier stages too; ``imagenet_classifier()`` exposes the original 1000-class layer where the
weights have one; ``layer_groups()`` lists the stages in input-to-output order for freezing.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import InvalidInputError
from .config import BackboneConfig

PRE_LOGITS = "pre_logits"
STAGE_TAPS = ("early", "middle", "late")


class Backbone(nn.Module):
    """Base wrapper. Subclasses set ``self.model`` and implement ``forward``."""

    cfg: BackboneConfig

    def __init__(self, model: nn.Module, cfg: BackboneConfig):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.eval()

    @property
    def name(self) -> str:
        return self.cfg.name

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_taps(self, x: torch.Tensor, taps: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pooled features for each requested tap, from a single forward pass."""
        unknown = [t for t in taps if t not in self.cfg.taps]
        if unknown:
            raise InvalidInputError(
                f"backbone {self.name!r} has no layer tap {unknown[0]!r}; "
                f"available: {', '.join(self.cfg.taps)}"
            )
        if list(taps) == [PRE_LOGITS]:
            return {PRE_LOGITS: self(x)}
        return self._forward_stage_taps(x, taps)

    def _forward_stage_taps(self, x: torch.Tensor, taps: Sequence[str]) -> dict[str, torch.Tensor]:
        raise InvalidInputError(f"backbone {self.name!r} offers only the pre_logits tap")

    def imagenet_classifier(self) -> nn.Linear | None:
        """The 1000-way ImageNet layer on top of the pre-logits, if these weights have one
        (never for a fine-tuned backbone: its features moved away from that layer)."""
        if "finetuned_from" in self.cfg.extra:
            return None
        return self._imagenet_classifier()

    def _imagenet_classifier(self) -> nn.Linear | None:
        return None

    def unused_parameters(self) -> list[nn.Parameter]:
        """Weights off the path to the pre-logit features (the ImageNet classifier)."""
        head = self.imagenet_classifier()
        return list(head.parameters()) if head is not None else []

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        """Parameter names of ``self.model`` in groups from input to output (stem, ..., head).

        The default is one group per top-level child; adapters refine it where the library
        knows its stages.
        """
        groups = []
        for child_name, child in self.model.named_children():
            names = [f"{child_name}.{p}" for p, _ in child.named_parameters()]
            if names:
                groups.append((child_name, names))
        return groups


def stage_tap_indices(num_levels: int) -> dict[str, int]:
    """Which feature level is 'early', 'middle' and 'late' for a model with ``num_levels``.

    Spread over the pyramid so the taps mean the same thing across architectures: a quarter of
    the way in (edges and textures), half-way (parts and shapes) and the last level.
    """
    last = num_levels - 1
    return {"early": round(last * 0.25), "middle": round(last * 0.5), "late": last}


def global_pool(feature_map: torch.Tensor) -> torch.Tensor:
    """Average over spatial positions; accepts NCHW maps and NLC token sequences."""
    if feature_map.ndim == 4:
        return feature_map.float().mean(dim=(2, 3))
    if feature_map.ndim == 3:
        return feature_map.float().mean(dim=1)
    return feature_map.float()
