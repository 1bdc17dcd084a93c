"""Transfer versus scratch on Fashion-MNIST: the same 2,000 training images (200 per class),
the 10,000 test images, and one table of accuracy and training time for

(a) logistic regression on raw pixels,
(b) a small CNN trained from scratch on the CPU,
(c) every head kind on frozen effnet-lite0 embeddings.

    .venv/bin/python bench/transfer_vs_scratch.py [--store data/fmnist-store] [--per-class 200]

With --store (a store made by ``embed-dataset`` of ``datasets fetch fashion-mnist``) the
embeddings are read from it; otherwise the 12,000 images are embedded here first.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def pick(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    from classifiers.heads.train import few_shot

    return few_shot(y, per_class, seed)


def embeddings_from_store(store_path: str, train_idx: np.ndarray, n_test: int):
    from embedsvc.store import EmbeddingStore

    store = EmbeddingStore.open(store_path)
    where = {}
    for r in store.metadata():  # datasets fetch names files <split>/<class>/<IDX index>.png
        where[(r["split"], int(Path(r["path"]).stem))] = r["id"]
    X = store.vectors()
    tr = X[[where[("train", int(i))] for i in train_idx]]
    te = X[[where[("test", i)] for i in range(n_test)]]
    return tr, te


def embeddings_here(x_train: np.ndarray, x_test: np.ndarray):
    from PIL import Image

    from embedsvc.backbones import create_backbone
    from embedsvc.extract import FeatureExtractor

    fe = FeatureExtractor(create_backbone("effnet-lite0"))
    emb = lambda xs: fe.embed([Image.fromarray(a) for a in xs], progress=True).vectors  # noqa: E731
    return emb(x_train), emb(x_test)


def train_cnn(x: np.ndarray, y: np.ndarray, epochs: int, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    xt = torch.from_numpy(np.array(x)).float().div(255).sub(0.5).div(0.5)[:, None]
    yt = torch.from_numpy(np.array(y)).long()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * -(-len(x) // 64))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    return model


def cnn_accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.inference_mode():
        xt = torch.from_numpy(np.array(x)).float().div(255).sub(0.5).div(0.5)[:, None]
        pred = torch.cat([model(b).argmax(1) for b in xt.split(1000)]).numpy()
    return float(np.mean(pred == y))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", help="embedding store of the full Fashion-MNIST (optional)")
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--cnn-epochs", default="5,30",
                    help="comma-separated epoch budgets for the from-scratch CNN (default 5,30)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from classifiers.heads import HEAD_KINDS, make_head
    from embedsvc.datasets.fetch import FASHION_MNIST_CLASSES, load_fashion_mnist
    from embedsvc.malloc import tune_malloc

    tune_malloc()
    x_train, y_train = load_fashion_mnist("train")
    x_test, y_test = load_fashion_mnist("test")
    idx = pick(y_train, args.per_class, args.seed)
    xtr, ytr = x_train[idx], y_train[idx]
    names = np.array(FASHION_MNIST_CLASSES)
    print(f"Fashion-MNIST: {len(idx)} training images ({args.per_class} per class), "
          f"{len(x_test)} test images")

    rows = []
    t0 = time.perf_counter()
    raw = make_head("logreg").fit(xtr.reshape(len(xtr), -1) / 255.0, names[ytr])
    rows.append(("logistic regression, raw pixels", float(np.mean(
        raw.predict(x_test.reshape(len(x_test), -1) / 255.0) == names[y_test])), time.perf_counter() - t0))
    print(f"  done: {rows[-1][0]}", flush=True)

    for epochs in (int(e) for e in args.cnn_epochs.split(",")):
        t0 = time.perf_counter()
        cnn = train_cnn(xtr, ytr, epochs, args.seed)
        rows.append((f"small CNN from scratch ({epochs} epochs)", cnn_accuracy(cnn, x_test, y_test),
                     time.perf_counter() - t0))
        print(f"  done: {rows[-1][0]}", flush=True)

    t0 = time.perf_counter()
    if args.store:
        etr, ete = embeddings_from_store(args.store, idx, len(x_test))
        how = f"read from {args.store}"
    else:
        etr, ete = embeddings_here(xtr, x_test)
        how = f"embedded here in {time.perf_counter() - t0:.0f} s"
    print(f"  effnet-lite0 embeddings {how}", flush=True)
    for kind in HEAD_KINDS:
        t0 = time.perf_counter()
        head = make_head(kind).fit(etr, names[ytr])
        fit_s = time.perf_counter() - t0
        rows.append((f"{kind} head, effnet-lite0 embeddings", float(np.mean(head.predict(ete) == names[y_test])), fit_s))
        print(f"  done: {rows[-1][0]}", flush=True)

    print(f"\n{'method':<45} {'test accuracy':>13} {'train s':>8}")
    for name, acc, secs in rows:
        print(f"{name:<45} {acc:13.4f} {secs:8.1f}")
    logreg = next(a for n, a, _ in rows if n.startswith("logreg head"))
    print()
    for name, acc, _ in rows:
        if "head" not in name:
            print(f"logreg head vs {name}: {100 * (logreg - acc):+.1f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
