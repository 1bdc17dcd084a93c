"""Decoding: bytes, paths or PIL images of any mode → an upright 8-bit RGB PIL image.

Every failure becomes an ``ImageDecodeError`` naming the item, whatever Pillow's decoders raise
(each format plugin has its own exception types: BLPFormatError, NotImplementedError from DDS,
struct.error, MemoryError...), so one bad file can be reported and skipped without touching the
others, and a server never answers INTERNAL for bad bytes.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .datasets.containers import read_input_bytes, split_name
from .errors import ImageDecodeError

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image]

# Decompression-bomb guard: 64 MP is far above any backbone's input and below what hurts memory.
DEFAULT_MAX_PIXELS = 64_000_000
# What a decode costs, measured (bench/decode_memory.py): 6.1 bytes a pixel (the decoded image
# and its RGB conversion), and 24 bytes a row beyond that, since Pillow keeps a pointer per row
# in each of those images: a 1 x 40,000,000 PNG of 78 KB took 1.2 GB, 30 bytes a pixel. So each
# row counts as ROW_PIXELS pixels of the pixel budget (5 x 6 = 30 bytes >= 24): ordinary images
# pay nothing noticeable (a 6000 x 4000 photo: 0.08%), a strip pays what it costs.
ROW_PIXELS = 5


def describe(src: ImageSource) -> str:
    """A short name for an input in error messages."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    return f"<PIL {getattr(src, 'mode', '?')} image>"


def open_image(src: ImageSource, name: str | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read only the header of ``src`` (cheap): the image's size is known, nothing is decoded.
    Refuses sizes over ``max_pixels`` before any pixel is decoded."""
    item = name or describe(src)
    img = src if isinstance(src, Image.Image) else _open(src, item)
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageDecodeError(item, f"{w}x{h} has no pixels")
    if w * h > max_pixels:
        raise ImageDecodeError(item, f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
    cost = decode_cost(img)
    if cost > max_pixels:
        raise ImageDecodeError(item, f"{w}x{h} has {w * h} pixels in {h} rows: decoding it costs "
                                     f"what {cost} pixels do ({ROW_PIXELS} a row), over the "
                                     f"limit of {max_pixels}")
    return img


def decode_cost(img: Image.Image) -> int:
    """What decoding ``img`` costs, in pixels of the budget: its pixels, and ROW_PIXELS for each
    row of each intermediate (an EXIF-turned image is decoded, then transposed: both shapes)."""
    w, h = img.size
    rows = h + (w if _turned(img) else 0)
    return w * h + ROW_PIXELS * rows


def load_image(src: ImageSource, name: str | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``src`` fully and return it as an upright RGB image.

    Raises ImageDecodeError for missing files, empty or truncated data, non-images, images over
    ``max_pixels`` and anything else a decoder raises.
    """
    return load_upright(src, name, max_pixels)[0]


def load_upright(src: ImageSource, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 draft_to: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """``load_image``, and the upright image's full (width, height).

    ``draft_to``: let a JPEG decoder scale down in the DCT domain (1/2, 1/4, 1/8) as long as both
    sides stay >= ``draft_to``: most of the decoding and resizing work of a large photo is never
    done. The size returned is still the full image's, read from the header.
    """
    item = name or describe(src)
    img = open_image(src, item, max_pixels)
    size = upright_size(img)
    if draft_to is not None and not isinstance(src, Image.Image):  # never change a caller's image
        img.draft("RGB", (draft_to, draft_to))
    return decoded(img, item), size


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) after the EXIF orientation, from the header alone."""
    w, h = img.size
    return (h, w) if _turned(img) else (w, h)


def _turned(img: Image.Image) -> bool:
    """Whether the EXIF orientation turns the image by a quarter (width and height swap)."""
    try:
        return img.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - unreadable EXIF: decoded() has reported or ignored it
        return False


_ORIENTATION = 0x0112


def decoded(img: Image.Image, item: str) -> Image.Image:
    """The full decode of an opened image, upright and RGB; every failure is ImageDecodeError."""
    try:
        img.load()  # force the full decode now so truncation is caught here, not in a worker
        return to_rgb(ImageOps.exif_transpose(img))
    except ImageDecodeError:
        raise
    except MemoryError:
        raise ImageDecodeError(item, "not enough memory to decode it") from None
    except Exception as exc:  # noqa: BLE001 - plugins raise anything; bad bytes must stay bad input
        raise ImageDecodeError(item, f"corrupt or unsupported image data "
                                     f"({type(exc).__name__}: {exc})") from None


def _open(src, item: str) -> Image.Image:
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        member = split_name(str(src))  # a member of a tar shard, parquet or Arrow file
        if member is None and not path.exists():
            raise ImageDecodeError(item, "no such file")
        if member is None and not path.is_file():
            raise ImageDecodeError(item, "not a regular file")
        try:
            data = read_input_bytes(str(src))
        except OSError as exc:
            raise ImageDecodeError(item, f"cannot read file ({exc.strerror or exc})") from None
        if not data:
            raise ImageDecodeError(item, "empty file (0 bytes)")
        fp = io.BytesIO(data)
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
    except Exception as exc:  # noqa: BLE001 - see the module docstring
        raise ImageDecodeError(item, f"unreadable image ({type(exc).__name__}: {exc})") from None


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
