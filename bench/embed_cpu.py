"""CPU embedding throughput of effnet-lite0 at 224 px: batch 1 and batch 32, with and without
the glibc allocator setting (embedsvc/malloc.py), measured in one run.

Each configuration runs in a fresh process, because mallopt settings cannot be undone inside a
process. Input: real photos (scikit-image) preprocessed once; timed: the backbone forward,
pooling and normalisation (FeatureExtractor.embed_tensor).

    .venv/bin/python bench/embed_cpu.py [--seconds 8]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

BATCHES = (1, 32)


def worker(batch: int, seconds: float) -> dict:
    import skimage.data
    import torch
    from PIL import Image

    from embedsvc.backbones import create_backbone
    from embedsvc.extract import ExtractConfig, FeatureExtractor
    from embedsvc.images import to_rgb
    from embedsvc.malloc import tune_malloc

    tuned = tune_malloc()
    backbone = create_backbone("effnet-lite0")
    fe = FeatureExtractor(backbone, ExtractConfig(batch_size=batch, device="cpu"))
    photos = [to_rgb(Image.fromarray(getattr(skimage.data, n)()))
              for n in ("chelsea", "coffee", "astronaut", "rocket", "camera")]
    x = torch.stack([fe.transform(photos[i % len(photos)]) for i in range(batch)])
    for _ in range(3):  # warm-up: first calls allocate and pick kernels
        fe.embed_tensor(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fe.embed_tensor(x)
        n += batch
    dt = time.perf_counter() - t0
    return {"batch": batch, "malloc_tuned": tuned, "images": n, "seconds": dt,
            "images_per_s": n / dt, "threads": torch.get_num_threads()}


def run_config(batch: int, tuned: bool, seconds: float) -> dict:
    env = dict(os.environ, EMBEDSVC_MALLOC_TUNING="1" if tuned else "0")
    for var in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(var, None)  # measure our setting, not one inherited from the shell
    out = subprocess.run(
        [sys.executable, __file__, "--worker", str(batch), "--seconds", str(seconds)],
        env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"benchmark worker (batch {batch}) failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per configuration")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.seconds)))
        return 0

    print(f"effnet-lite0, 224 px, CPU, {os.cpu_count()} cores; {args.seconds:.0f} s per configuration")
    results = {}
    for batch in BATCHES:
        for tuned in (False, True):
            r = run_config(batch, tuned, args.seconds)
            results[(batch, tuned)] = r
            print(f"  batch {batch:>2}  allocator {'tuned  ' if tuned else 'default'}  "
                  f"{r['images_per_s']:7.1f} img/s  ({r['images']} images in {r['seconds']:.1f} s, "
                  f"{r['threads']} threads{'' if r['malloc_tuned'] == tuned else ', SETTING NOT APPLIED'})")
    print("\nratios (tuned / default allocator):")
    for batch in BATCHES:
        ratio = results[(batch, True)]["images_per_s"] / results[(batch, False)]["images_per_s"]
        print(f"  batch {batch:>2}: {ratio:.2f}x")
    b32 = results[(32, True)]["images_per_s"] / results[(1, True)]["images_per_s"]
    print(f"batch 32 / batch 1 (tuned): {b32:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
