"""``photos``: real camera photos as JPEG files of 500-1200 px, for measuring decoding and
resizing where they cost what they cost on users' photos (28-px Fashion-MNIST PNGs hide it).

Built offline from the sample photos the installed packages ship: scikit-image's (always there)
and Debian ``opencv-doc``'s when it is installed. Each image is a seeded random crop (50-100 % of
each side) of one source photo, scaled so that its longer side is 500-1200 px, saved as a
baseline JPEG at quality 85-95 with 4:2:0 chroma, as cameras and phones write them. The class is
the source photo, so a head has something to learn; the same seed writes the same bytes.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field",
                  "immunohistochemistry", "retina")
OPENCV_DOC = Path("/usr/share/doc/opencv-doc/examples/data")
SIDE_RANGE = (500, 1200)
TEST_EVERY = 5  # every fifth image goes to test/


def source_photos() -> dict[str, np.ndarray]:
    """name → RGB uint8 array of every sample photo installed here."""
    import skimage.data
    from PIL import Image

    out = {}
    for name in SKIMAGE_PHOTOS:
        a = getattr(skimage.data, name)()
        out[name] = np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]
    for path in sorted(OPENCV_DOC.glob("*.jpg")) if OPENCV_DOC.is_dir() else []:
        with Image.open(path) as img:
            if min(img.size) >= 256:  # icons and masks are not photos
                out[f"opencv-{path.stem}"] = np.asarray(img.convert("RGB"))
    return out


def draw_crop(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
    """(x, y, width, height, longer side, JPEG quality) of one photo cut from a source of
    ``shape``: drawn for every index, encoded or not, so that any limit writes the same files."""
    h, w = shape[:2]
    ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    side = int(rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1))
    return x, y, cw, ch, side, int(rng.integers(85, 96))


def photo_jpeg(source: np.ndarray, crop: tuple[int, ...]) -> bytes:
    """The crop (``draw_crop``) of ``source`` as a JPEG whose longer side is in SIDE_RANGE."""
    import io

    from PIL import Image

    x, y, cw, ch, side, quality = crop
    img = Image.fromarray(np.ascontiguousarray(source[y:y + ch, x:x + cw]))
    scale = side / max(ch, cw)
    img = img.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
    return buf.getvalue()


def write_photos(out: Path, sources: dict[str, np.ndarray], progress: bool, limit: int | None,
                 seed: int = 0) -> dict[str, int]:
    """``limit`` photos (default 600) cropped from ``sources`` (``source_photos()``) as
    ``out/{train,test}/<source>/<index>.jpg``."""
    names = sorted(sources)
    n = limit or 600
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "test": 0}
    it = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="photos", unit="img")
    wanted = set()
    for i in it:
        name = names[i % len(names)]
        split = "test" if i % TEST_EVERY == TEST_EVERY - 1 else "train"
        path = out / split / name / f"{i:05d}.jpg"
        crop = draw_crop(sources[name].shape, rng)
        if not path.exists():
            atomic_write_bytes(path, photo_jpeg(sources[name], crop))
        wanted.add(path)
        counts[split] += 1
    for old in out.glob("*/*/[0-9][0-9][0-9][0-9][0-9].jpg"):  # from a fetch with a larger limit
        if old not in wanted:
            os.unlink(old)
    return counts
