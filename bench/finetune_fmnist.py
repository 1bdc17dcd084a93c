"""Fine-tuning strategies against a head on frozen embeddings, on real Fashion-MNIST.

200 labelled training images per class (the first 200 of each class), the full 10,000-image
test set, effnet-lite0 at a reduced input size (112 px by default) so every strategy fits a CPU
budget. Each strategy is a real `finetune` run (10% of the labels held out for early stopping);
the baseline is the logistic-regression head on frozen embeddings of the same 2,000 images at
the same input size, and, for reference, at the backbone's native 224 px.

    .venv/bin/python bench/finetune_fmnist.py [--image-size 112] [--epochs 12]
        [--strategies linear partial gradual lp-ft full] [--fmnist-dir DIR] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_manifests(fmnist: Path, out: Path, per_class: int) -> tuple[Path, Path]:
    train_rows, test_rows = ["path,label"], ["path,label"]
    for cls in sorted(p for p in (fmnist / "train").iterdir() if p.is_dir()):
        files = sorted(cls.glob("*.png"), key=lambda p: int(p.stem))[:per_class]
        train_rows += [f"{f},{cls.name}" for f in files]
    for cls in sorted(p for p in (fmnist / "test").iterdir() if p.is_dir()):
        test_rows += [f"{f},{cls.name}" for f in sorted(cls.glob("*.png"))]
    (out / "train.csv").write_text("\n".join(train_rows) + "\n")
    (out / "test.csv").write_text("\n".join(test_rows) + "\n")
    return out / "train.csv", out / "test.csv"


def frozen_head_accuracy(train_csv: Path, test_csv: Path, image_size: int | None) -> tuple[float, float]:
    """(accuracy, seconds) of the logistic-regression head on frozen embeddings."""
    from classifiers.finetune.data import labelled_records
    from classifiers.finetune.inputs import run_preprocess
    from classifiers.heads.kinds import LogRegHead
    from embedsvc.backbones import create_backbone
    from embedsvc.extract import ExtractConfig, FeatureExtractor

    t0 = time.perf_counter()
    backbone = create_backbone("effnet-lite0")
    backbone.cfg = backbone.cfg.replace(preprocess=run_preprocess(backbone, image_size))
    fe = FeatureExtractor(backbone, ExtractConfig(batch_size=64))
    train, test = labelled_records(str(train_csv)), labelled_records(str(test_csv))
    X = fe.embed([r.path for r in train], progress=True).vectors
    Xt = fe.embed([r.path for r in test], progress=True).vectors
    head = LogRegHead().fit(X, [r.label for r in train])
    acc = float(np.mean(head.predict(Xt) == np.array([r.label for r in test])))
    return acc, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--strategies", nargs="+", default=["linear", "partial", "gradual", "lp-ft", "full"])
    ap.add_argument("--fmnist-dir", help="Fashion-MNIST as written by `embedsvc datasets fetch`")
    ap.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--skip-224", action="store_true", help="skip the 224 px reference head")
    args = ap.parse_args()

    from classifiers.finetune import FinetuneConfig, evaluate_run, finetune
    from classifiers.finetune.data import decode_records, labelled_records
    from classifiers.finetune.inputs import run_preprocess
    from embedsvc.backbones import create_backbone
    from embedsvc.datasets.fetch import fetch_dataset

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        fmnist = Path(args.fmnist_dir) if args.fmnist_dir else work / "fmnist"
        if not args.fmnist_dir:
            print("writing Fashion-MNIST PNGs from the Debian package ...", flush=True)
            fetch_dataset("fashion-mnist", fmnist, progress=True)
        train_csv, test_csv = write_manifests(fmnist, work, args.per_class)

        rows = []
        same_size, sec = frozen_head_accuracy(train_csv, test_csv, args.image_size)
        rows.append((f"logreg head, frozen, {args.image_size} px", same_size, sec))
        print(f"logreg head on frozen {args.image_size}-px embeddings: {same_size:.4f} ({sec:.0f} s)", flush=True)
        native = None
        if not args.skip_224:
            native, sec = frozen_head_accuracy(train_csv, test_csv, None)
            rows.append(("logreg head, frozen, 224 px", native, sec))
            print(f"logreg head on frozen 224-px embeddings: {native:.4f} ({sec:.0f} s)", flush=True)

        backbone = create_backbone("effnet-lite0")
        test_records = labelled_records(str(test_csv))
        classes = sorted({r.label for r in labelled_records(str(train_csv))})
        test = decode_records(test_records, run_preprocess(backbone, args.image_size), classes)
        for strategy in args.strategies:
            t0 = time.perf_counter()
            cfg = FinetuneConfig(strategy=strategy, epochs=args.epochs, image_size=args.image_size,
                                 seed=0)
            result = finetune(str(train_csv), work / f"run-{strategy}", cfg)
            acc = evaluate_run(result.run_dir, test)
            sec = time.perf_counter() - t0
            rows.append((f"finetune {strategy} (best epoch {result.best_epoch}/{result.epochs_run})", acc, sec))
            print(f"finetune {strategy}: test accuracy {acc:.4f} ({sec:.0f} s)", flush=True)

    total = time.perf_counter() - t_start
    print(f"\nFashion-MNIST, {args.per_class} labels per class, 10,000 test images, effnet-lite0")
    head_224 = f"{'vs head 224':>12}" if native is not None else ""
    print(f"{'method':<44} {'test acc':>8} {f'vs head {args.image_size}':>12}{head_224} {'seconds':>8}")
    for name, acc, sec in rows:
        vs_native = f"{100 * (acc - native):>+11.1f}p" if native is not None else ""
        print(f"{name:<44} {acc:>8.4f} {100 * (acc - same_size):>+11.1f}p{vs_native} {sec:>8.0f}")
    ft = [(acc, name) for name, acc, _ in rows if name.startswith("finetune")]
    if ft:
        best_acc, best_name = max(ft)
        print(f"best fine-tuning: {best_name}: {100 * (best_acc - same_size):+.1f} points over the logreg "
              f"head on frozen {args.image_size}-px embeddings ({same_size:.4f})"
              + (f", {100 * (best_acc - native):+.1f} over the 224-px one ({native:.4f})" if native else ""))
    print(f"total {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
