"""Augmentation presets: the guide's table "kind of domain difference → augmentation", so the
source can be made to look like a target nobody has labelled.

    lighting    brightness (gain), contrast, gamma                  different lighting
    camera      down-then-up sampling, sensor noise, blur, JPEG     different cameras
    background  random erasing (cutout) with noise or flat fills    different backgrounds
    style       colour jitter, grayscale, posterize; MixStyle in    different styles
                the early stages (mixstyle.py)

Every preset works on the uint8 (N, 3, H, W) batches fine-tuning trains on, and draws all its
randomness from the epoch's ``torch.Generator``, so a resumed run sees the same augmented images
(exact resume). Sizes are fractions of the image side: a preset means the same thing at 64 px
as at 224 px. Each image gets a preset with probability ``P_APPLY``: some clean images remain,
and the source domain is not forgotten.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.nn import functional as F

from .choices import PRESETS, parse_presets

__all__ = ["PRESETS", "apply_presets", "parse_presets"]
P_APPLY = 0.8


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _coin(g: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=g)) < p


def lighting(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One image (3, H, W) in [0, 1]: gamma, then gain, then contrast around its mean, covering
    under- and over-exposure (gamma 0.6..2.6, gain 0.2..1.3: down to 2.3 stops dark)."""
    gamma = math.exp(_u(g, math.log(0.6), math.log(2.6)))
    x = x.clamp_min(0) ** gamma * _u(g, 0.2, 1.3)
    mean = x.mean()
    return (x - mean) * _u(g, 0.6, 1.4) + mean


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma < 0.3:
        return x
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[0]
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)
    return y[0]


def camera(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A worse camera: fewer pixels (down by up to 4x, back up bilinearly), sensor noise at the
    sensor's resolution (so it is as coarse as the pixels), lens blur, then JPEG artefacts."""
    _, h, w = x.shape
    factor = _u(g, 1.0, 4.0)
    small = (max(4, round(h / factor)), max(4, round(w / factor)))
    y = F.interpolate(x[None], size=small, mode="area")[0] if factor > 1.05 else x
    noise = torch.randn(y.shape[1:], generator=g) * _u(g, 0.0, 0.15)  # luminance noise
    y = y + noise
    if y.shape[1:] != x.shape[1:]:
        y = F.interpolate(y[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    y = _gaussian_blur(y, _u(g, 0.0, 0.04) * min(h, w))
    if _coin(g, 0.5):
        y = _jpeg(y, int(_u(g, 15, 90)))
    return y


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Through a JPEG encoder and back (Pillow: torchvision's codecs are deprecated)."""
    import io

    import numpy as np
    from PIL import Image

    u8 = (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=quality)
    back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return torch.from_numpy(back.copy()).permute(2, 0, 1).float() / 255


def background(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020) of 1-3 rectangles, each 2-20% of the image with an
    aspect ratio in 1/3..3, filled with noise or a flat grey: the object must be recognised
    whatever surrounds or hides part of it."""
    _, h, w = x.shape
    x = x.clone()
    for _ in range(int(torch.randint(1, 4, (), generator=g))):
        area = _u(g, 0.02, 0.2) * h * w
        ratio = math.exp(_u(g, math.log(1 / 3), math.log(3)))
        eh, ew = min(h, max(1, round(math.sqrt(area * ratio)))), min(w, max(1, round(math.sqrt(area / ratio))))
        top = int(torch.randint(0, h - eh + 1, (), generator=g))
        left = int(torch.randint(0, w - ew + 1, (), generator=g))
        fill = (torch.rand((x.shape[0], eh, ew), generator=g) if _coin(g, 0.5)
                else torch.full((x.shape[0], 1, 1), _u(g, 0, 1)))
        x[:, top:top + eh, left:left + ew] = fill
    return x


def style(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Colour jitter (brightness, contrast, saturation, per-channel gains), sometimes grayscale,
    sometimes posterized to 3-5 bits. The feature-statistics half of the preset is MixStyle."""
    x = x * _u(g, 0.7, 1.3)
    mean = x.mean()
    x = (x - mean) * _u(g, 0.7, 1.3) + mean
    grey = x.mean(dim=0, keepdim=True)
    x = grey + (x - grey) * _u(g, 0.0, 1.6)
    x = x * torch.tensor([_u(g, 0.85, 1.15) for _ in range(x.shape[0])]).view(-1, 1, 1)
    if _coin(g, 0.2):
        x = x.mean(dim=0, keepdim=True).expand_as(x)
    if _coin(g, 0.3):
        levels = 2 ** int(torch.randint(3, 6, (), generator=g))
        x = torch.floor(x.clamp(0, 1) * (levels - 1) + 0.5) / (levels - 1)
    return x


OPS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "lighting": lighting, "camera": camera, "background": background, "style": style}


def apply_presets(batch: torch.Tensor, presets: tuple[str, ...], g: torch.Generator) -> torch.Tensor:
    """uint8 (N, 3, H, W) → uint8, each image through each preset with probability P_APPLY."""
    if not presets:
        return batch
    out = batch.float() / 255
    for i in range(len(out)):
        for name in presets:
            if _coin(g, P_APPLY):
                out[i] = OPS[name](out[i], g).clamp(0, 1)
    return (out * 255 + 0.5).to(torch.uint8)


def preview_grid(image: torch.Tensor, presets: tuple[str, ...], n: int, seed: int,
                 columns: int = 4) -> torch.Tensor:
    """The original (top left) and ``n`` augmented samples of one uint8 (3, H, W) image, as one
    uint8 (3, rows * H, columns * W) grid with 2-px white gutters."""
    g = torch.Generator().manual_seed(seed)
    samples = [image] + [apply_presets(image[None], presets, g)[0] for _ in range(n)]
    _, h, w = image.shape
    rows = -(-len(samples) // columns)
    grid = torch.full((3, rows * (h + 2), columns * (w + 2)), 255, dtype=torch.uint8)
    for k, s in enumerate(samples):
        r, c = divmod(k, columns)
        grid[:, r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = s
    return grid
