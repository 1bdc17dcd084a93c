"""Every runtime against torch fp32, in one run: model-only img/s and fidelity, then the
``embed-dataset`` pipeline on real photos with the fastest one.

1. Photos (``datasets fetch photos``): int8 is calibrated on the train split (``calibrate``,
   which writes its own report), fidelity is measured on the test split.
2. Model only: the same preprocessed batch of ``--batch-size`` photos, ``--seconds`` per runtime;
   embedding cosine to torch fp32 (mean, min) on the test photos.
3. Linear probe: a logistic-regression head trained on ``--per-class`` Fashion-MNIST images per
   class embedded by torch fp32, scored on ``--test`` test images embedded by torch and by each
   runtime (accuracy delta in points).
4. ``embed-dataset`` on the photos: torch, and the fastest runtime.

    .venv/bin/python bench/runtimes.py [--photos 600] [--per-class 200] [--test 1000]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUNTIMES = ("torch", "onnx", "openvino", "onnx-int8", "openvino-int8")


def model_rate(fe, x, seconds: float) -> float:
    fe.embed_tensor(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fe.embed_tensor(x)
        n += len(x)
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=600)
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()

    import torch
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    from embedsvc.backbones import create_backbone
    from embedsvc.datasets import scan_source
    from embedsvc.datasets.fetch import fetch_dataset, load_fashion_mnist
    from embedsvc.extract import ExtractConfig, FeatureExtractor
    from embedsvc.runtimes.calibrate import calibrate
    from embedsvc.store import EmbedDatasetConfig, embed_dataset

    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)
    os.environ.setdefault("EMBEDSVC_CACHE", str(root / "cache"))  # a cold cache: exports included
    backbone = create_backbone("effnet-lite0")
    fetch_dataset("photos", root / "photos", limit=args.photos)
    records = scan_source(root / "photos")
    train = [r.path for r in records if r.split == "train"]
    test = [r.path for r in records if r.split == "test"]
    print(f"effnet-lite0, {os.cpu_count()} cores, batch {args.batch_size}; {len(train)} photos "
          f"to calibrate int8, {len(test)} to measure")
    t0 = time.perf_counter()
    report = calibrate(backbone, train)
    print(f"calibrate: {time.perf_counter() - t0:.0f} s, report cosine mean {report['cosine_mean']}, "
          f"ImageNet top-1 agreement {report['imagenet_top1_agreement']}")

    x_fm, y_fm = load_fashion_mnist("train")
    idx = np.concatenate([np.flatnonzero(y_fm == c)[:args.per_class] for c in range(10)])
    x_te, y_te = load_fashion_mnist("test")
    fm_train = [Image.fromarray(x_fm[i]) for i in idx]
    fm_test = [Image.fromarray(x_te[i]) for i in range(args.test)]

    fes = {rt: FeatureExtractor(backbone, ExtractConfig(runtime=rt)) for rt in RUNTIMES}
    batch = torch.stack([fes["torch"].prepare(p)[0] for p in (test * args.batch_size)[:args.batch_size]])
    ref = fes["torch"].embed(test).vectors
    head = LogisticRegression(max_iter=2000).fit(fes["torch"].embed(fm_train).vectors, y_fm[idx])
    acc_ref = head.score(fes["torch"].embed(fm_test).vectors, y_te[:args.test])
    rate = {}
    print(f"\n{'runtime':14s} {'img/s':>7s} {'x torch':>8s} {'cos mean':>9s} {'cos min':>8s} "
          f"{'probe acc':>10s} {'delta':>7s}")
    for rt, fe in fes.items():
        rate[rt] = model_rate(fe, batch, args.seconds)
        cos = (fe.embed(test).vectors * ref).sum(1)
        acc = head.score(fe.embed(fm_test).vectors, y_te[:args.test])
        print(f"{rt:14s} {rate[rt]:7.1f} {rate[rt] / rate['torch']:7.2f}x {cos.mean():9.4f} "
              f"{cos.min():8.4f} {100 * acc:9.2f}% {100 * (acc - acc_ref):+6.2f}p", flush=True)

    best = max(RUNTIMES, key=lambda r: rate[r])
    print(f"\nembed-dataset on {len(records)} photos (decode fast):")
    for rt in dict.fromkeys(("torch", best)):
        out = root / f"store-{rt}"
        r = embed_dataset(root / "photos", out, EmbedDatasetConfig(runtime=rt), progress=False)
        print(f"  {rt:14s} {r.images_per_s:6.1f} img/s   pipeline / model-only = "
              f"{r.images_per_s / rate[rt]:.2f}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
