"""PIL image → normalised tensor, derived from a backbone's PreprocessConfig alone."""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch
from PIL import Image

from .backbones.config import PreprocessConfig


@lru_cache(maxsize=32)
def build_transform(cfg: PreprocessConfig) -> Callable[[Image.Image], torch.Tensor]:
    """timm's eval transform for this config (resize shorter side to size/crop_pct, centre crop,
    to tensor, normalise), so a timm model sees exactly what it saw at evaluation time."""
    from timm.data import create_transform

    return create_transform(
        input_size=cfg.input_size,
        is_training=False,
        interpolation=cfg.interpolation,
        mean=cfg.mean,
        std=cfg.std,
        crop_pct=cfg.crop_pct,
        crop_mode=cfg.crop_mode,
    )
