"""Every runtime against torch fp32, in one run: model-only img/s and fidelity, then the
``embed-dataset`` pipeline on real photos with the fastest one.

1. Photos (``datasets fetch photos``): int8 is calibrated on the train split (``calibrate``,
   which writes its own report), fidelity is measured on the test split.
2. Model only: the same preprocessed batch of ``--batch-size`` photos, ``--seconds`` per runtime;
   embedding cosine to torch fp32 (mean, min) on the test photos.
3. Linear probe: a logistic-regression head trained on ``--per-class`` Fashion-MNIST images per
   class embedded by torch fp32, scored on ``--test`` test images embedded by torch and by each
   runtime (accuracy delta in points).
4. ``embed-dataset`` on all the photos (decode fast) with each runtime, and its ratio to that
   runtime's model-only rate.

    .venv/bin/python bench/runtimes.py [--photos 600] [--per-class 200] [--test 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUNTIMES = ("torch", "onnx", "openvino", "onnx-int8", "openvino-int8")


def child(runtime: str, work: Path, batch_size: int, seconds: float) -> dict:
    """One runtime in a process of its own (thread pools of the other runtimes would compete
    with it): model-only rate, vectors of the test photos and Fashion-MNIST images, and the
    embed-dataset pipeline on the photos."""
    import torch

    from embedsvc.backbones import create_backbone
    from embedsvc.extract import ExtractConfig, FeatureExtractor
    from embedsvc.store import EmbedDatasetConfig, embed_dataset

    inputs = json.loads((work / "inputs.json").read_text())
    fe = FeatureExtractor(create_backbone("effnet-lite0"), ExtractConfig(runtime=runtime))
    test = inputs["test"]
    x = torch.stack([fe.prepare(p)[0] for p in (test * batch_size)[:batch_size]])
    fe.embed_tensor(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fe.embed_tensor(x)
        n += len(x)
    rate = n / (time.perf_counter() - t0)
    for name in ("test", "fm_train", "fm_test"):
        np.save(work / f"{runtime}-{name}.npy", fe.embed(inputs[name]).vectors)
    r = embed_dataset(inputs["photos"], work / f"store-{runtime}", EmbedDatasetConfig(runtime=runtime),
                      progress=False)
    return {"model": rate, "pipeline": r.images_per_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=600)
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--child", nargs=2, metavar=("RUNTIME", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.batch_size, args.seconds)))
        return 0

    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    from embedsvc.backbones import create_backbone
    from embedsvc.datasets import scan_source
    from embedsvc.datasets.fetch import fetch_dataset, load_fashion_mnist
    from embedsvc.runtimes.calibrate import calibrate

    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    os.environ.setdefault("EMBEDSVC_CACHE", str(work / "cache"))  # a cold cache: exports included
    fetch_dataset("photos", work / "photos", limit=args.photos)
    records = scan_source(work / "photos")
    train = [r.path for r in records if r.split == "train"]
    test = [r.path for r in records if r.split == "test"]
    print(f"effnet-lite0, {os.cpu_count()} cores, batch {args.batch_size}; {len(train)} photos "
          f"to calibrate int8, {len(test)} to measure; each runtime in its own process")
    t0 = time.perf_counter()
    report = calibrate(create_backbone("effnet-lite0"), train)
    print(f"calibrate: {time.perf_counter() - t0:.0f} s, report cosine mean {report['cosine_mean']}, "
          f"ImageNet top-1 agreement {report['imagenet_top1_agreement']}")

    x_fm, y_fm = load_fashion_mnist("train")
    idx = np.concatenate([np.flatnonzero(y_fm == c)[:args.per_class] for c in range(10)])
    x_te, y_te = load_fashion_mnist("test")
    (work / "fm").mkdir()
    fm = {"fm_train": [], "fm_test": []}
    for name, xs, ids in (("fm_train", x_fm, idx), ("fm_test", x_te, range(args.test))):
        for i in ids:
            path = work / "fm" / f"{name}{i}.png"
            Image.fromarray(xs[i]).save(path)
            fm[name].append(str(path))
    (work / "inputs.json").write_text(json.dumps({"photos": str(work / "photos"), "test": test, **fm}))

    res = {}
    for rt in RUNTIMES:
        out = subprocess.run([sys.executable, __file__, "--child", rt, str(work),
                              "--batch-size", str(args.batch_size), "--seconds", str(args.seconds)],
                             capture_output=True, text=True, env=os.environ)
        if out.returncode:
            sys.exit(f"{rt} failed:\n{out.stderr[-3000:]}")
        res[rt] = json.loads(out.stdout.strip().splitlines()[-1])
    load = lambda rt, name: np.load(work / f"{rt}-{name}.npy")  # noqa: E731
    head = LogisticRegression(max_iter=2000).fit(load("torch", "fm_train"), y_fm[idx])
    y_test = y_te[:args.test]
    acc_ref = head.score(load("torch", "fm_test"), y_test)
    torch_rate = res["torch"]["model"]
    print(f"\n{'runtime':14s} {'model img/s':>11s} {'x torch':>8s} {'cos mean':>9s} {'cos min':>8s} "
          f"{'probe acc':>10s} {'delta':>7s} {'embed-dataset':>14s} {'/ model':>8s}")
    for rt in RUNTIMES:
        cos = (load(rt, "test") * load("torch", "test")).sum(1)
        acc = head.score(load(rt, "fm_test"), y_test)
        r = res[rt]
        print(f"{rt:14s} {r['model']:11.1f} {r['model'] / torch_rate:7.2f}x {cos.mean():9.4f} "
              f"{cos.min():8.4f} {100 * acc:9.2f}% {100 * (acc - acc_ref):+6.2f}p "
              f"{r['pipeline']:10.1f} img/s {r['pipeline'] / r['model']:7.2f}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
