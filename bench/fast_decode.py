"""Fidelity and cost of ``--decode fast`` against ``--decode exact``, in one run.

1. Real photos (500-1200 px JPEGs cut from the installed sample photos): per-image decode +
   preprocessing time of each mode on one thread, and the cosine between the embeddings.
2. Fashion-MNIST as camera-sized JPEGs (each 28-px image upscaled to ``--side`` px, quality 90,
   4:2:0 chroma, so the DCT-domain scaling of the fast mode is at work): a logistic-regression
   head trained on ``--per-class`` exact-decoded images per class, scored on ``--test`` images
   decoded exactly and fast; and a head trained and scored on fast-decoded images.

    .venv/bin/python bench/fast_decode.py [--photos 200] [--per-class 200] [--test 1000]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def fmnist_jpegs(out: Path, split: str, per_class: int | None, n: int | None, side: int):
    from PIL import Image

    from embedsvc.datasets.fetch import load_fashion_mnist

    x, y = load_fashion_mnist(split)
    if per_class is not None:
        idx = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)])
    else:
        idx = np.arange(n)
    paths = []
    for i in idx:
        p = out / f"{split}_{i:05d}.jpg"
        Image.fromarray(x[i]).convert("RGB").resize((side, side), Image.BICUBIC).save(
            p, quality=90, subsampling=2)
        paths.append(str(p))
    return paths, y[idx]


def prepare_rate(fe, paths: list[str]) -> float:
    """Images per second of decode + preprocessing alone, one thread."""
    t0 = time.perf_counter()
    for p in paths:
        fe.prepare(p)
    return len(paths) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--side", type=int, default=560, help="Fashion-MNIST JPEG side in px")
    args = ap.parse_args()

    from sklearn.linear_model import LogisticRegression

    from embedsvc.backbones import create_backbone
    from embedsvc.datasets import scan_source
    from embedsvc.datasets.fetch import fetch_dataset
    from embedsvc.extract import ExtractConfig, FeatureExtractor

    backbone = create_backbone("effnet-lite0")
    fe = {m: FeatureExtractor(backbone, ExtractConfig(decode=m)) for m in ("exact", "fast")}
    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)
    print(f"effnet-lite0, {os.cpu_count()} cores")

    fetch_dataset("photos", root / "photos", limit=args.photos)
    photos = [r.path for r in scan_source(root / "photos")]
    rate = {m: prepare_rate(fe[m], photos) for m in fe}
    vec = {m: fe[m].embed(photos).vectors for m in fe}
    cos = (vec["exact"] * vec["fast"]).sum(1)
    print(f"\n{len(photos)} photos of 500-1200 px: decode + preprocess on 1 thread")
    print(f"  exact : {rate['exact']:6.1f} img/s\n  fast  : {rate['fast']:6.1f} img/s   "
          f"(fast / exact = {rate['fast'] / rate['exact']:.2f}x)")
    print(f"  embedding cosine fast vs exact: mean {cos.mean():.4f}  min {cos.min():.4f}")

    (root / "fm").mkdir()
    train, y_train = fmnist_jpegs(root / "fm", "train", args.per_class, None, args.side)
    test, y_test = fmnist_jpegs(root / "fm", "test", None, args.test, args.side)
    print(f"\nFashion-MNIST as {args.side}-px JPEGs: {len(train)} train, {len(test)} test")
    tr = {m: fe[m].embed(train).vectors for m in fe}
    te = {m: fe[m].embed(test).vectors for m in fe}
    cos = (te["exact"] * te["fast"]).sum(1)
    print(f"  embedding cosine fast vs exact: mean {cos.mean():.4f}  min {cos.min():.4f}")
    acc = {}
    for train_mode in ("exact", "fast"):
        head = LogisticRegression(max_iter=2000, C=1.0).fit(tr[train_mode], y_train)
        for test_mode in ("exact", "fast"):
            acc[train_mode, test_mode] = 100 * head.score(te[test_mode], y_test)
            print(f"  head trained {train_mode:5s}, tested {test_mode:5s}: "
                  f"{acc[train_mode, test_mode]:.2f}%")
    print(f"  accuracy fast - exact (head trained exact): "
          f"{acc['exact', 'fast'] - acc['exact', 'exact']:+.2f} pt")
    print(f"  accuracy all-fast - all-exact: {acc['fast', 'fast'] - acc['exact', 'exact']:+.2f} pt")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
