"""Start-up of one-shot commands: where `embedsvc search --image` and `classify` spend their
first seconds, and what the model caches save, measured in one run.

    python bench/cli_startup.py [--runs 3]

Builds a small store (crops of three scikit-image photos), its FAISS index and a head in a
temporary folder, then times in fresh processes:
- the phases of the uncached path (imports, model build, index load, one image, the search);
- `search --image` and `classify` wall time with the caches off (``EMBEDSVC_CACHE=off``: what
  every run did before them) and on (a torch-free ONNX query for search, a traced model without
  timm for classify), median of ``--runs``, and their ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = r"""
import sys, time
t = [time.perf_counter()]
def lap(what):
    now = time.perf_counter(); print(f"  {what:34s} {now - t[0]:6.2f} s"); t[0] = now
import embedsvc.cli; embedsvc.cli.build_parser(); lap("embedsvc.cli and its parser")
import torch; lap("import torch")
import timm; lap("import timm (and torchvision)")
from embedsvc.search import StoreSearcher
s = StoreSearcher(sys.argv[1]); lap("open the store and its index")
from embedsvc.extract import extractor_for
fe = extractor_for(s.store.provenance); lap("build the model, weights, fold")
e = fe.embed([sys.argv[2]]); lap("decode and embed one image")
s.search_vectors(e.vectors, 5); lap("search")
"""


def run(args, env, cwd=None) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "embedsvc", *map(str, args)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    import numpy as np
    import skimage.data
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix="cli-startup-"))
    rng = np.random.default_rng(0)
    for name in ("astronaut", "chelsea", "coffee"):
        img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        (tmp / "photos" / name).mkdir(parents=True)
        w, h = img.size
        for i in range(8):
            f = rng.uniform(0.4, 0.9)
            x, y = rng.integers(0, int(w * (1 - f)) + 1), rng.integers(0, int(h * (1 - f)) + 1)
            img.crop((x, y, x + int(w * f), y + int(h * f))).save(tmp / "photos" / name / f"{i}.jpg")
    query = tmp / "photos" / "coffee" / "3.jpg"
    cache = tmp / "cache"
    on = {**os.environ, "EMBEDSVC_CACHE": str(cache)}
    off = {**os.environ, "EMBEDSVC_CACHE": "off"}
    run(["embed-dataset", tmp / "photos", "--out", tmp / "store", "--quiet"], off)
    run(["index", "build", tmp / "store", "--quiet"], off)
    run(["train-head", tmp / "store", "--out", tmp / "head", "--quiet"], off)

    print(f"one-shot commands on {os.cpu_count()} cores, {a.runs} runs each (median)")
    print("where an uncached `search --image` spends its time (one fresh process):")
    subprocess.run([sys.executable, "-c", PHASES, str(tmp / "store"), str(query)], env=off,
                   check=True)
    search = ["search", tmp / "store", "--image", query, "-k", "5"]
    classify = ["classify", "--head", tmp / "head", query]
    run(search, on), run(classify, on)  # the first run with the cache on writes it
    rows = []
    for what, args in (("search --image", search), ("classify", classify)):
        before = statistics.median(run(args, off) for _ in range(a.runs))
        after = statistics.median(run(args, on) for _ in range(a.runs))
        rows.append((what, before, after))
    print(f"{'command':16s} {'caches off':>11s} {'caches on':>10s} {'ratio':>6s}")
    for what, before, after in rows:
        print(f"{what:16s} {before:10.2f}s {after:9.2f}s {after / before:6.2f}")


if __name__ == "__main__":
    main()
