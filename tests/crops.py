"""A newcomer's photo folder, made from scikit-image's photos: three classes of crops at many
scales, with the atypical files real folders have (an alpha PNG, a 125-px crop, a greyscale
image), fresh crops of the same photos, and crops of photos of subjects the classes lack."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("astronaut", "chelsea", "coffee")
OTHER_SUBJECTS = ("rocket", "camera", "horse")


def crops(img: Image.Image, n: int, rng: np.random.Generator, lo: float = 0.35, hi: float = 0.9):
    w, h = img.size
    for _ in range(n):
        f = rng.uniform(lo, hi)
        cw, ch = int(w * f), int(h * f)
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        yield img.crop((x, y, x + cw, y + ch))


def photo_folders(photo_images: dict[str, Image.Image], root: Path, per_class: int = 30,
                  held_per_class: int = 20, others: int = 5) -> tuple[Path, Path, Path]:
    """(train, held, other) folders under ``root``: train has ``per_class`` crops per class
    plus the three atypical files, held ``held_per_class`` fresh crops per class, other
    ``others`` crops of each of three other subjects (a flat folder)."""
    import skimage.data

    rng = np.random.default_rng(1)
    train, held, other = root / "train", root / "held", root / "other"
    for label in CLASSES:
        img = photo_images[label].convert("RGB")
        for folder, n in ((train, per_class), (held, held_per_class)):
            (folder / label).mkdir(parents=True)
            for i, crop in enumerate(crops(img, n, rng)):
                crop.save(folder / label / f"{i}.jpg", quality=90)
    rgba = np.array(photo_images["astronaut"].convert("RGBA"))
    rgba[:, :200, 3] = 0
    Image.fromarray(rgba).save(train / "astronaut" / "alpha.png")
    photo_images["chelsea"].crop((100, 50, 225, 175)).save(train / "chelsea" / "small.jpg")
    photo_images["coffee"].convert("L").save(train / "coffee" / "grey.jpg")
    other.mkdir()
    for name in OTHER_SUBJECTS:
        arr = getattr(skimage.data, name)()
        img = Image.fromarray(arr.astype(np.uint8) * (255 if arr.dtype == bool else 1)).convert("RGB")
        for i, crop in enumerate(crops(img, others, rng)):
            crop.save(other / f"{name}{i}.jpg", quality=90)
    return train, held, other
