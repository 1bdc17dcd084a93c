"""Write real labelled datasets as PNG class folders, from data already on this machine.

- ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` (IDX files); 60,000 train + 10,000 test.
- ``digits``: scikit-learn's bundled ``load_digits`` (1,797 8x8 images), split 80/20, stratified.
- ``fashion-mnist-dark`` / ``-camera`` / ``-background``: the same images in the shifted domains
  of ``shifts.py`` (under-exposed; blurred and noisy; on a textured background).
- ``photos``: JPEG photos of 500-1200 px cropped from the sample photos installed packages ship
  (``photos.py``); 600 unless ``limit`` says otherwise.
- ``sentiment-movies`` / ``-tweets`` / ``-amazon`` / ``-nyt``: human-rated text snippets, written
  as ``manifest.jsonl`` with a fixed split (``text/sentiment.py``); ``20newsgroups`` and
  ``reuters-r8``: topic classification, their official splits (``text/topics.py``).

Nothing is downloaded. Writing is idempotent: existing files are kept, so an interrupted fetch
can simply be run again.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import numpy as np

from ..errors import InvalidInputError, NotFoundError

FASHION_MNIST_DIR = Path(os.environ.get("EMBEDSVC_FASHION_MNIST_DIR",
                                        "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankle_boot")


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic, dims, then big-endian data."""
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00":
        raise ValueError(f"{path} is not an IDX file")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[data[2]]
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)


def _idx_file(stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (FASHION_MNIST_DIR / name).is_file():
            return FASHION_MNIST_DIR / name
    raise NotFoundError(
        f"Fashion-MNIST not found in {FASHION_MNIST_DIR} ({stem}[.gz]); install it with: "
        "apt-get install dataset-fashion-mnist"
    )


def load_fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int (N,)) for 'train' or 'test'."""
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_idx_file(f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_idx_file(f"{prefix}-labels-idx1-ubyte")).astype("int64")
    return images, labels


def load_digits_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    # 0..16 intensities → 0..255 so the PNGs look like the digits they are
    images = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    xtr, xte, ytr, yte = train_test_split(images, d.target, test_size=0.2, random_state=0,
                                          stratify=d.target)
    return {"train": (xtr, ytr), "test": (xte, yte)}


def refuse_other_data(out: Path, split: str, class_names) -> None:
    if (out / split).is_dir():
        foreign = sorted(p.name for p in (out / split).iterdir() if p.name not in class_names)
        if foreign:
            raise InvalidInputError(f"{str(out)!r} holds other data ({split}/{foreign[0]}); "
                                    f"choose an empty or earlier --out of this dataset")


def _write_split(out: Path, split: str, images: np.ndarray, labels: np.ndarray,
                 class_names: tuple[str, ...], progress: bool) -> int:
    from PIL import Image

    refuse_other_data(out, split, class_names)
    for name in class_names:
        (out / split / name).mkdir(parents=True, exist_ok=True)
    written = 0
    it = range(len(images))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"{split}", unit="img")
    for i in it:
        path = out / split / class_names[labels[i]] / f"{i:05d}.png"
        if not path.exists():
            tmp = path.with_name(f".{path.name}.tmp")
            Image.fromarray(images[i]).save(tmp, format="PNG")
            os.replace(tmp, path)  # a killed fetch never leaves a half-written PNG
            written += 1
    # an earlier fetch with another --limit left images this one does not have
    expected = {(class_names[labels[i]], f"{i:05d}.png") for i in range(len(images))}
    for name in class_names:
        for p in (out / split / name).glob("[0-9][0-9][0-9][0-9][0-9].png"):
            if (name, p.name) not in expected:
                p.unlink()
    return written


def _fashion(out: Path, progress: bool, limit: int | None) -> dict[str, int]:
    counts = {}
    for split in ("train", "test"):
        x, y = load_fashion_mnist(split)
        if limit:
            x, y = x[:limit], y[:limit]
        _write_split(out, split, x, y, FASHION_MNIST_CLASSES, progress)
        counts[split] = len(x)
    return counts


def _shifted_fashion(kind: str) -> Callable[[Path, bool, int | None], dict[str, int]]:
    def write(out: Path, progress: bool, limit: int | None) -> dict[str, int]:
        from .shifts import shift_images

        counts = {}
        for seed, split in enumerate(("train", "test")):
            x, y = load_fashion_mnist(split)
            if limit:
                x, y = x[:limit], y[:limit]
            _write_split(out, split, shift_images(x, kind, seed=seed), y, FASHION_MNIST_CLASSES,
                         progress)
            counts[split] = len(x)
        return counts
    return write


def _digits(out: Path, progress: bool, limit: int | None) -> dict[str, int]:
    counts = {}
    for split, (x, y) in load_digits_split().items():
        if limit:
            x, y = x[:limit], y[:limit]
        _write_split(out, split, x, y, tuple(str(i) for i in range(10)), progress)
        counts[split] = len(x)
    return counts


def _photos(out: Path, progress: bool, limit: int | None) -> dict[str, int]:
    from .photos import source_photos, write_photos

    sources = source_photos()
    for split in ("train", "test"):
        refuse_other_data(out, split, tuple(sources))
    return write_photos(out, sources, progress, limit)


def _text(module: str, name: str) -> Callable[[Path, bool, int | None], dict[str, int]]:
    """A text dataset: ``embedsvc.text.<module>.write_dataset(name, ...)``, imported when used."""
    def write(out: Path, progress: bool, limit: int | None) -> dict[str, int]:
        from importlib import import_module

        return import_module(f"..text.{module}", __package__).write_dataset(name, out, limit)
    return write


DATASETS: dict[str, Callable[[Path, bool, int | None], dict[str, int]]] = {
    "fashion-mnist": _fashion,
    "digits": _digits,
    "photos": _photos,
    # the guide's three domain shifts (shifts.py), for adapting to and measuring gaps
    "fashion-mnist-dark": _shifted_fashion("dark"),
    "fashion-mnist-camera": _shifted_fashion("camera"),
    "fashion-mnist-background": _shifted_fashion("background"),
    # text: the four domains of the VADER snippets, a sentiment source and its shifted targets
    **{f"sentiment-{d}": _text("sentiment", d) for d in ("movies", "tweets", "amazon", "nyt")},
    "20newsgroups": _text("topics", "20newsgroups"),
    "reuters-r8": _text("topics", "reuters-r8"),
}


def fetch_dataset(name: str, out: str | os.PathLike, progress: bool = False,
                  limit: int | None = None) -> dict[str, int]:
    """Write dataset ``name`` as ``out/<split>/<class>/<index>.png`` (``.jpg`` for photos; for
    text, ``out/manifest.jsonl``); returns counts per split. ``limit`` keeps the first N items
    of each split (for quick experiments and tests); for ``photos`` it is the number of photos."""
    if name not in DATASETS:
        raise NotFoundError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    return DATASETS[name](Path(out), progress, limit)
