"""Domain shifts of the guide's "Domain Adaptation" chapter, applied to grey images: the target
domains that ``bench/domain_shift.py`` and the gap tests adapt to, and that users can fetch as
``fashion-mnist-dark`` / ``-camera`` / ``-background``.

- ``dark``: under-exposure: gamma up, gain down (different lighting);
- ``camera``: Gaussian blur and sensor noise (a different, worse camera);
- ``background``: a smooth random texture behind the object (a different background).

``strength`` in (0, 1] scales each shift; every image gets its own seeded randomness, so a
dataset written twice is the same.
"""
from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError

SHIFTS = ("dark", "camera", "background")
DEFAULT_STRENGTH = 0.7


def shift_images(images: np.ndarray, kind: str, strength: float = DEFAULT_STRENGTH,
                 seed: int = 0) -> np.ndarray:
    """uint8 (N, H, W) grey images → the same images in the shifted domain."""
    if kind not in SHIFTS:
        raise InvalidInputError(f"unknown shift {kind!r}; choose one of {', '.join(SHIFTS)}")
    if not 0 < strength <= 1:
        raise InvalidInputError(f"shift strength must be in (0, 1], got {strength}")
    x = images.astype(np.float64) / 255.0
    rng = np.random.default_rng(seed)
    if kind == "dark":
        out = (1 - 0.8 * strength) * x ** (1 + 1.5 * strength)
    elif kind == "camera":
        out = _blur(x, 1.5 * strength) + rng.normal(0, 0.15 * strength, x.shape)
    else:
        out = x + (1 - x) * 0.8 * strength * _textures(x.shape, rng)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma=(0, sigma, sigma))


def _textures(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Smooth random patterns in [0, 1], one per image: low-passed noise plus stripes."""
    n, h, w = shape
    noise = _blur(rng.random(shape), 2.0)
    lo, hi = noise.min(axis=(1, 2), keepdims=True), noise.max(axis=(1, 2), keepdims=True)
    noise = (noise - lo) / np.maximum(hi - lo, 1e-9)
    yy, xx = np.mgrid[0:h, 0:w]
    angle, freq = rng.uniform(0, np.pi, (n, 1, 1)), rng.uniform(0.3, 0.9, (n, 1, 1))
    stripes = 0.5 + 0.5 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    return 0.5 * noise + 0.5 * stripes
