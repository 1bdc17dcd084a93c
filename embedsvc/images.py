"""Decoding: bytes, paths or PIL images of any mode → an upright 8-bit RGB PIL image.

Every failure becomes an ``ImageDecodeError`` naming the item, so one bad file can be reported
and skipped without touching the others.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageDecodeError

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image]

# Decompression-bomb guard: 64 MP is far above any backbone's input and below what hurts memory.
DEFAULT_MAX_PIXELS = 64_000_000


def describe(src: ImageSource) -> str:
    """A short name for an input in error messages."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    return f"<PIL {getattr(src, 'mode', '?')} image>"


def load_image(src: ImageSource, name: str | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``src`` fully and return it as an upright RGB image.

    Raises ImageDecodeError for missing files, empty or truncated data, non-images and images
    over ``max_pixels``.
    """
    item = name or describe(src)
    if isinstance(src, Image.Image):
        img = src
    else:
        img = _open(src, item)
    w, h = img.size
    if w * h > max_pixels:
        raise ImageDecodeError(item, f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
    try:
        img.load()  # force the full decode now so truncation is caught here, not in a worker
        img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(item, f"corrupt or truncated image data ({exc})") from exc
    return to_rgb(img)


def _open(src, item: str) -> Image.Image:
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise ImageDecodeError(item, "no such file")
        if not path.is_file():
            raise ImageDecodeError(item, "not a regular file")
        if path.stat().st_size == 0:
            raise ImageDecodeError(item, "empty file (0 bytes)")
        fp = io.BytesIO(path.read_bytes())
    else:
        if len(src) == 0:
            raise ImageDecodeError(item, "empty data (0 bytes)")
        fp = io.BytesIO(bytes(src))
    try:
        with warnings.catch_warnings():
            # PIL warns (and only errors at 2x) about large images; our own limit applies instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(item, "not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(item, str(exc)) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(item, f"unreadable image ({exc})") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB without the classic mistakes.

    - transparency is composited over white (plain ``convert('RGB')`` turns it black);
    - 16-bit and 32-bit integer images are scaled down, not clipped to 255;
    - float images in [0, 1] are scaled up.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if mode == "F" and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        elif arr.size and arr.max() > 255:
            arr = arr / 257.0  # 16-bit range → 8-bit (65535 / 257 = 255)
        gray = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    return img.convert("RGB")
