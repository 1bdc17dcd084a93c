"""Embedding throughput on real images: a naive loop against embed-dataset's pipeline.

(a) naive: one image at a time, PIL → tensor → model, no batching, default allocator, in its
    own process — what a notebook does;
(b) pipeline: ``embed_dataset`` (threaded decode overlapped with the batched model, allocator
    tuned, shards committed to a store);
(c) model only: the same backbone forward on already-preprocessed batches of the same size,
    the ceiling the pipeline can reach.

    .venv/bin/python bench/embed_throughput.py [--n 2000] [--batch-size 32] [--src FOLDER | --photos]

``--photos``: N camera-sized JPEGs (500-1200 px, ``embedsvc datasets fetch photos``) instead of
the 28-px Fashion-MNIST PNGs, where decoding and resizing cost what they cost on users' photos.
``--src``: the first N images of a folder or manifest (all three modes see the same N).
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


def naive(paths: list[str]) -> dict:
    import torch
    from PIL import Image

    from timm.data import create_transform, resolve_model_data_config

    from embedsvc.backbones import create_backbone

    model = create_backbone("effnet-lite0").eval()
    tf = create_transform(**resolve_model_data_config(model.model), is_training=False)
    t0 = time.perf_counter()
    with torch.no_grad():
        for p in paths:
            x = tf(Image.open(p).convert("RGB"))[None]
            torch.nn.functional.normalize(model(x), dim=1).numpy()
    dt = time.perf_counter() - t0
    return {"images": len(paths), "seconds": dt}


def pipeline(src: str, batch: int, workers: int | None, decode: str) -> dict:
    from embedsvc.store import EmbedDatasetConfig, embed_dataset

    with tempfile.TemporaryDirectory() as out:
        r = embed_dataset(src, Path(out) / "store",
                          EmbedDatasetConfig(batch_size=batch, workers=workers, decode=decode),
                          progress=False)
    return {"images": r.added, "seconds": r.seconds}


def model_only(paths: list[str], batch: int) -> dict:
    import torch

    from embedsvc.backbones import create_backbone
    from embedsvc.extract import ExtractConfig, FeatureExtractor
    from embedsvc.images import load_image

    fe = FeatureExtractor(create_backbone("effnet-lite0"), ExtractConfig(batch_size=batch))
    x = torch.stack([fe.transform(load_image(p)) for p in paths[:batch]])
    fe.embed_tensor(x)  # warm-up
    n, t0 = 0, time.perf_counter()
    while n < len(paths):
        fe.embed_tensor(x)
        n += batch
    return {"images": n, "seconds": time.perf_counter() - t0}


def _child(mode: str, args, env_extra: dict) -> dict:
    env = dict(os.environ, **env_extra)
    cmd = [sys.executable, __file__, "--child", mode, "--src", args.src, "--n", str(args.n),
           "--batch-size", str(args.batch_size), "--decode", args.decode]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{mode} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="decode threads (default: auto)")
    ap.add_argument("--decode", choices=("fast", "exact"), default="fast",
                    help="the pipeline's decode mode")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--src", help="image folder or manifest (default: the first N Fashion-MNIST "
                                   "train images)")
    src.add_argument("--photos", action="store_true", help="N JPEG photos of 500-1200 px")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        from embedsvc.datasets import scan_source

        paths = [r.path for r in scan_source(args.src)][: args.n]
        res = {"naive": lambda: naive(paths),
               "pipeline": lambda: pipeline(args.src, args.batch_size, args.workers, args.decode),
               "model": lambda: model_only(paths, args.batch_size)}[args.child]()
        print(json.dumps(res))
        return 0

    tmp = tempfile.TemporaryDirectory()
    if args.photos:
        from embedsvc.datasets.fetch import fetch_dataset

        fetch_dataset("photos", tmp.name, progress=True, limit=args.n)
        args.src = tmp.name
    elif not args.src:
        from embedsvc.datasets.fetch import FASHION_MNIST_CLASSES, load_fashion_mnist
        from PIL import Image

        x, y = load_fashion_mnist("train")
        for i in range(args.n):
            d = Path(tmp.name) / FASHION_MNIST_CLASSES[y[i]]
            d.mkdir(exist_ok=True)
            Image.fromarray(x[i]).save(d / f"{i:05d}.png")
        args.src = tmp.name
    else:  # the first N of the user's source, as a manifest every mode reads
        from embedsvc.datasets import scan_source

        manifest = Path(tmp.name) / "first_n.csv"
        paths = [r.path for r in scan_source(args.src)][: args.n]
        manifest.write_text("path\n" + "".join(f"{p}\n" for p in paths))
        args.src, args.n = str(manifest), len(paths)
    print(f"{args.n} real images from {args.src}, effnet-lite0 at 224 px, {os.cpu_count()} cores, "
          f"batch {args.batch_size}, decode {args.decode}, decode threads: "
          f"{'auto' if args.workers is None else args.workers}")
    r = {
        "naive": _child("naive", args, {"EMBEDSVC_MALLOC_TUNING": "0"}),
        "pipeline": _child("pipeline", args, {}),
        "model": _child("model", args, {}),
    }
    rate = {k: v["images"] / v["seconds"] for k, v in r.items()}
    print(f"  (a) naive loop, 1 image at a time : {rate['naive']:7.1f} img/s")
    print(f"  (b) embed-dataset pipeline        : {rate['pipeline']:7.1f} img/s")
    print(f"  (c) model only, batch {args.batch_size:<3}         : {rate['model']:7.1f} img/s")
    print(f"pipeline / naive      = {rate['pipeline'] / rate['naive']:.2f}x")
    print(f"pipeline / model-only = {rate['pipeline'] / rate['model']:.2f} "
          f"(overhead {100 * (1 - rate['pipeline'] / rate['model']):.0f}%)")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
