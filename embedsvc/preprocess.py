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

Two decode modes (``DECODE_MODES``), recorded in every provenance as ``decode``:

- ``exact``: decode every pixel, resize the whole image, crop: timm's eval transform, bit for bit.
- ``fast`` (the default): a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps
  both sides >= the resize target, and only the region the centre crop keeps is resized, straight
  to the model's input size (Pillow's ``resize(box=...)``: the same filter at the same sampling
  positions). On 500-1200 px photos this is 2.3x less CPU per image than ``exact``; the
  embeddings keep a cosine of 0.998 mean to the exact ones (tests/test_fast_decode.py holds it
  >= 0.995), which is why vectors of the two modes may be mixed (``provenance.check_compatible``).

Not torch's uint8 resize, although it is faster on one thread: called from decode threads, each
thread's OpenMP team spin-waits between calls on the cores the model needs (on 2 cores the
pipeline ran at 30 img/s with it against 57 with Pillow). Pillow has no thread pool.
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch  # imported where a tensor is made: a query embedded with ONNX needs none

from .backbones.config import PreprocessConfig, check_decode


class Transform:
    """RGB PIL image → uint8 tensor (3, H, W) for one PreprocessConfig and decode mode.
    ``draft_to`` is what the decoder may scale a JPEG down to (None: decode every pixel)."""

    def __init__(self, cfg: PreprocessConfig, decode: str, fast_plan: list | None = None):
        """``fast_plan``: what ``fast_plan`` returned for this config before (a cached model's,
        ``traced.py``): the fast path without building timm's transform, or importing timm."""
        check_decode(decode)
        self.resample = _RESAMPLE[cfg.interpolation]
        if fast_plan is not None and decode == "fast":
            (size, crop), self.draft_to = fast_plan
            self.geometry, self.plan = None, (tuple(size), tuple(crop))
            return
        from timm.data import create_transform

        full = create_transform(input_size=cfg.input_size, is_training=False,
                                interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std,
                                crop_pct=cfg.crop_pct, crop_mode=cfg.crop_mode)
        self.geometry = [t for t in full.transforms
                         if type(t).__name__ not in ("MaybeToTensor", "ToTensor", "Normalize")]
        self.plan = _resize_crop_plan(self.geometry) if decode == "fast" else None
        self.draft_to = _resize_target(self.geometry, cfg) if decode == "fast" else None

    @property
    def fast_plan(self) -> list | None:
        """The fast path's resize and crop, as JSON, for ``Transform(..., fast_plan=)``."""
        if self.plan is None:
            return None
        return [[list(self.plan[0]), list(self.plan[1])], self.draft_to]

    def __call__(self, img: Image.Image) -> "torch.Tensor":
        import torch

        return torch.from_numpy(self.array(img))

    def array(self, img: Image.Image) -> np.ndarray:
        """The model input as a uint8 (3, H, W) array."""
        img = _bounded(img)
        if self.plan is not None:
            img = _resize_crop(img, *self.plan, self.resample)
        else:
            for t in self.geometry:
                img = t(img)
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


@lru_cache(maxsize=32)
def build_transform(cfg: PreprocessConfig, decode: str = "exact") -> Transform:
    """The cached Transform of ``cfg``; ``exact`` is timm's eval transform, bit for bit."""
    return Transform(cfg, decode)


_RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def _resize_crop_plan(geometry) -> tuple | None:
    """(resize size spec, crop (h, w)) when the geometry is torchvision's Resize then CenterCrop
    (timm's square ``center`` and ``squash`` modes); None for anything else, which then runs
    the exact geometry (on the draft-decoded image)."""
    from torchvision.transforms import CenterCrop, Resize

    if len(geometry) != 2 or type(geometry[0]) is not Resize or type(geometry[1]) is not CenterCrop:
        return None
    size = geometry[0].size
    size = (size,) if isinstance(size, int) else tuple(size)
    return (size, tuple(geometry[1].size)) if len(size) in (1, 2) and geometry[0].max_size is None else None


def _resize_target(geometry, cfg: PreprocessConfig) -> int:
    """The largest side the first resize produces: a draft at least this large loses nothing
    the exact resize would keep."""
    size = getattr(geometry[0], "size", None) if geometry else None
    if isinstance(size, int):
        return size
    if size:
        return int(max(size))
    return int(np.ceil(max(cfg.input_size[1:]) / cfg.crop_pct))


def _resize_crop(img: Image.Image, size: tuple, crop: tuple, resample: int) -> Image.Image:
    """torchvision's ``CenterCrop(crop)(Resize(size)(img))`` computed as one resize of the
    source region the crop keeps: the same output size rule and crop offsets, and the output
    pixels sample the same source positions."""
    w, h = img.size
    if len(size) == 2:  # (h, w): squash
        nh, nw = size
    elif w <= h:
        nw, nh = size[0], int(size[0] * h / w)
    else:
        nw, nh = int(size[0] * w / h), size[0]
    ch, cw = crop
    if nh < ch or nw < cw:  # CenterCrop would pad: leave that to torchvision
        from torchvision.transforms.functional import center_crop

        return center_crop(img.resize((nw, nh), resample), [ch, cw])
    top, left = int(round((nh - ch) / 2.0)), int(round((nw - cw) / 2.0))
    sx, sy = w / nw, h / nh
    box = (left * sx, top * sy, min(w, (left + cw) * sx), min(h, (top + ch) * sy))
    return img.resize((cw, ch), resample, box=box)


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


def normalize_array(batch: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """``normalize`` for a uint8 numpy batch: the same float32 operations in the same order."""
    mean = np.asarray(cfg.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(cfg.std, np.float32).reshape(1, -1, 1, 1)
    return (batch.astype(np.float32) / np.float32(255.0) - mean) / std


def normalize(batch: "torch.Tensor", cfg: PreprocessConfig) -> "torch.Tensor":
    """uint8 (N, 3, H, W) → float32 model input; float input is returned as it is."""
    import torch

    if batch.dtype != torch.uint8:
        return batch
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    return batch.float().div_(255.0).sub_(mean).div_(std)
