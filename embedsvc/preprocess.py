"""PIL image → model input, derived from a backbone's PreprocessConfig alone.

Split in two so the per-image part stays cheap: ``build_transform`` does the geometry on the PIL
image (resize the shorter side to size / crop_pct, centre-crop) and returns a uint8 CHW tensor;
``normalize`` scales and normalises a whole batch at once, on the model's device. The arithmetic
is timm's (x / 255 - mean) / std, element for element, so the result is the same as timm's eval
transform while costing a fraction per image (and a quarter of the bytes to a GPU).

The work per image is bounded by the output size whatever the aspect ratio: the shorter side is
resized to size / crop_pct, so a 10000x1 strip would become a 2,560,000x256 intermediate (GBs of
memory for a 115-byte PNG). Images longer than ``MAX_EXACT_ASPECT`` times their width are first
centre-cropped to that ratio: the final centre crop lies far inside what is kept, so the result
differs from the uncropped transform by at most a sub-pixel shift, and ordinary photos (up to 8:1
panoramas) take the exact path unchanged.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .backbones.config import PreprocessConfig


@lru_cache(maxsize=32)
def build_transform(cfg: PreprocessConfig) -> Callable[[Image.Image], torch.Tensor]:
    """RGB PIL image → uint8 tensor (3, H, W), resized and cropped exactly as timm's eval
    transform does."""
    from timm.data import create_transform

    full = create_transform(input_size=cfg.input_size, is_training=False,
                            interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std,
                            crop_pct=cfg.crop_pct, crop_mode=cfg.crop_mode)
    geometry = [t for t in full.transforms if type(t).__name__ not in ("MaybeToTensor", "ToTensor", "Normalize")]

    def transform(img: Image.Image) -> torch.Tensor:
        img = _bounded(img)
        for t in geometry:
            img = t(img)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)

    return transform


MAX_EXACT_ASPECT = 8


def _bounded(img: Image.Image) -> Image.Image:
    """Centre-crop the longer side to MAX_EXACT_ASPECT times the shorter (see the module doc)."""
    w, h = img.size
    short = min(w, h)
    if max(w, h) <= MAX_EXACT_ASPECT * short:
        return img
    keep = MAX_EXACT_ASPECT * short
    if w > h:
        left = (w - keep) // 2
        return img.crop((left, 0, left + keep, h))
    top = (h - keep) // 2
    return img.crop((0, top, w, top + keep))


def normalize(batch: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """uint8 (N, 3, H, W) → float32 model input; float input is returned as it is."""
    if batch.dtype != torch.uint8:
        return batch
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    return batch.float().div_(255.0).sub_(mean).div_(std)
