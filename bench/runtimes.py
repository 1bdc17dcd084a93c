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

With ``--text``, the same for minilm-l6 on the VADER movie snippets (``datasets fetch
sentiment-movies``): int8 calibrated (``calibrate --texts``) on --calibrate train snippets; model
only = every test snippet, tokenised beforehand, in length-sorted padded batches of 32 (the
dataset's length mix, as ``embed`` and ``embed-dataset`` batch it); cosine to torch fp32 on the
test snippets; a logistic probe trained on --per-class x 2 train snippets (torch fp32), scored on
the test snippets embedded by each runtime; ``embed-dataset`` of the test snippets.

    .venv/bin/python bench/runtimes.py [--photos 600] [--per-class 200] [--test 1000]
    .venv/bin/python bench/runtimes.py --text [--per-class 1000] [--calibrate 1000]
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
TEXT_RUNTIMES = ("torch", "onnx", "openvino", "onnx-int8")  # runtimes.TEXT_RUNTIMES


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


def run_children(runtimes, work: Path, options: list[str]) -> dict:
    """Each runtime's ``child`` in a process of its own, in turn: its JSON answer."""
    res = {}
    for rt in runtimes:
        out = subprocess.run([sys.executable, __file__, "--child", rt, str(work), *options],
                             capture_output=True, text=True, env=os.environ)
        if out.returncode:
            sys.exit(f"{rt} failed:\n{out.stderr[-3000:]}")
        res[rt] = json.loads(out.stdout.strip().splitlines()[-1])
    return res


def table(runtimes, res: dict, work: Path, y_train, y_test, names: tuple[str, str, str],
          unit: str) -> None:
    """One row per runtime: model-only rate and its ratio to torch, cosine to torch fp32 on the
    ``names[2]`` vectors, a probe trained on torch's ``names[0]`` vectors scored on each
    runtime's ``names[1]`` vectors, and the embed-dataset rate."""
    from sklearn.linear_model import LogisticRegression

    load = lambda rt, name: np.load(work / f"{rt}-{name}.npy")  # noqa: E731
    train, test, compared = names
    head = LogisticRegression(max_iter=2000).fit(load("torch", train), y_train)
    acc_ref = head.score(load("torch", test), y_test)
    torch_rate = res["torch"]["model"]
    print(f"\n{'runtime':14s} {'model ' + unit:>11s} {'x torch':>8s} {'cos mean':>9s} "
          f"{'cos min':>8s} {'probe acc':>10s} {'delta':>7s} {'embed-dataset':>15s} {'/ model':>8s}")
    for rt in runtimes:
        cos = (load(rt, compared) * load("torch", compared)).sum(1)
        acc = head.score(load(rt, test), y_test)
        r = res[rt]
        print(f"{rt:14s} {r['model']:11.1f} {r['model'] / torch_rate:7.2f}x {cos.mean():9.4f} "
              f"{cos.min():8.4f} {100 * acc:9.2f}% {100 * (acc - acc_ref):+6.2f}p "
              f"{r['pipeline']:10.1f} {unit} {r['pipeline'] / r['model']:7.2f}")


def text_child(runtime: str, work: Path, seconds: float) -> dict:
    """As ``child``, for minilm-l6 on the movie snippets."""
    from embedsvc.encoders import EncodeOptions, open_encoder
    from embedsvc.store import EmbedDatasetConfig, embed_dataset

    inputs = json.loads((work / "inputs.json").read_text())
    enc = open_encoder("minilm-l6", options=EncodeOptions(runtime=runtime, device="cpu"))
    tokens = enc.prepare_many(inputs["test"])
    enc.encode_sorted(tokens[:64])
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        enc.encode_sorted(tokens)
        n += len(tokens)
    rate = n / (time.perf_counter() - t0)
    for name in ("train", "test"):
        np.save(work / f"{runtime}-{name}.npy", enc.embed(inputs[name]).vectors)
    r = embed_dataset(inputs["manifest"], work / f"store-{runtime}",
                      EmbedDatasetConfig(backbone="minilm-l6", runtime=runtime), progress=False)
    return {"model": rate, "pipeline": r.images_per_s}


def text_main(args, work: Path) -> int:
    import random

    from embedsvc.datasets.fetch import fetch_dataset
    from embedsvc.encoders import open_encoder
    from embedsvc.runtimes.calibrate_text import calibrate_text

    fetch_dataset("sentiment-movies", work / "movies")
    rows = [json.loads(x) for x in (work / "movies" / "manifest.jsonl").read_text().splitlines()]
    rng = random.Random(0)
    train = [r for r in rows if r["split"] == "train"]
    rng.shuffle(train)
    calib = [r["text"] for r in train[:args.calibrate]]
    probe = [r for label in ("negative", "positive")
             for r in [r for r in train[args.calibrate:] if r["label"] == label][:args.per_class]]
    test = [r for r in rows if r["split"] == "test"]
    (work / "test.jsonl").write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in test))
    (work / "inputs.json").write_text(json.dumps({
        "train": [r["text"] for r in probe], "test": [r["text"] for r in test],
        "manifest": str(work / "test.jsonl")}))
    print(f"minilm-l6, {os.cpu_count()} cores; {len(calib)} movie snippets to calibrate int8, "
          f"{len(probe)} to train the probe, {len(test)} test snippets (mean "
          f"{np.mean([len(r['text'].split()) for r in test]):.1f} words); each runtime in its own "
          f"process")
    t0 = time.perf_counter()
    report = calibrate_text(open_encoder("minilm-l6"), calib)
    print(f"calibrate: {time.perf_counter() - t0:.0f} s, int8 form {report.get('form')!r}, report "
          f"cosine mean {report.get('cosine_mean')} on {report['held_out']} held out, word share "
          f"{report['word_share']}")
    res = run_children(TEXT_RUNTIMES, work, ["--text", "--seconds", str(args.seconds)])
    table(TEXT_RUNTIMES, res, work, [r["label"] for r in probe], [r["label"] for r in test],
          ("train", "test", "test"), "txt/s")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=600)
    ap.add_argument("--per-class", type=int, help="probe training inputs per class (200 images; "
                                                   "1000 snippets with --text)")
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--text", action="store_true", help="minilm-l6 on movie snippets instead")
    ap.add_argument("--calibrate", type=int, default=1000, help="--text: snippets to calibrate on")
    ap.add_argument("--child", nargs=2, metavar=("RUNTIME", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        work = Path(args.child[1])
        print(json.dumps(text_child(args.child[0], work, args.seconds) if args.text else
                         child(args.child[0], work, args.batch_size, args.seconds)))
        return 0
    args.per_class = args.per_class or (1000 if args.text else 200)
    if args.text:
        with tempfile.TemporaryDirectory() as d:
            os.environ.setdefault("EMBEDSVC_CACHE", str(Path(d) / "cache"))
            return text_main(args, Path(d))

    from PIL import Image

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

    res = run_children(RUNTIMES, work, ["--batch-size", str(args.batch_size),
                                        "--seconds", str(args.seconds)])
    table(RUNTIMES, res, work, y_fm[idx], y_te[:args.test], ("fm_train", "fm_test", "test"),
          "img/s")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
