"""The GPU path, in one run: model-only img/s at batch 1 / 32 / 256, ``embed-dataset`` on JPEG
photos end to end, and gRPC at 64 single-image clients (bench/grpc_load.py).

On CUDA the extractor runs channels_last under bf16 (or fp16) autocast, copies uint8 batches from
page-locked memory without blocking, and decodes in threads (decode_ahead); ``--compile`` adds
``torch.compile``. ``--device cpu`` runs the same measurements on the CPU (a smoke run of this
script where no GPU is lent).

    .venv/bin/python bench/gpu.py [--device cuda] [--photos 2000] [--seconds 10] [--compile]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def model_rates(fe, batches: tuple[int, ...], seconds: float, sync) -> dict[int, float]:
    import torch

    rates = {}
    for b in batches:
        x = torch.randint(0, 256, (b, *fe.backbone.cfg.preprocess.input_size), dtype=torch.uint8)
        for _ in range(3):  # warm-up: cuDNN autotuning, compilation
            fe.embed_tensor(x)
        sync()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fe.embed_tensor(x)
            n += b
        sync()
        rates[b] = n / (time.perf_counter() - t0)
    return rates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--compile", action="store_true", help="torch.compile the backbone first")
    args = ap.parse_args()

    import torch

    from embedsvc.backbones import create_backbone
    from embedsvc.datasets.fetch import fetch_dataset
    from embedsvc.extract import ExtractConfig, FeatureExtractor
    from embedsvc.store import EmbedDatasetConfig, embed_dataset

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: no CUDA device here; run it where a GPU is lent (or --device cpu)")
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    fe = FeatureExtractor(create_backbone("effnet-lite0"), ExtractConfig(device=args.device))
    if args.compile:
        fe.net = torch.compile(fe.net)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"effnet-lite0 on {name} ({fe.plan.describe()}), {os.cpu_count()} CPU cores")
    for b, rate in model_rates(fe, (1, 32, 256), args.seconds, sync).items():
        print(f"  model only, batch {b:3d}: {rate:9.1f} img/s")

    with tempfile.TemporaryDirectory() as tmp:
        fetch_dataset("photos", Path(tmp) / "photos", limit=args.photos)
        for batch in (32, 256):
            r = embed_dataset(Path(tmp) / "photos", Path(tmp) / f"store{batch}",
                              EmbedDatasetConfig(device=args.device, batch_size=batch), progress=False)
            print(f"  embed-dataset, {r.added} JPEG photos of 500-1200 px, batch {batch}: "
                  f"{r.images_per_s:7.1f} img/s")
    sys.stdout.flush()
    subprocess.run([sys.executable, str(Path(__file__).with_name("grpc_load.py")),
                    "--clients", str(args.clients), "--seconds", str(args.seconds * 2),
                    "--max-batch-size", "64"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
