"""Fine-tuning minilm-l6 for sentiment on movie snippets, against a logistic head on its frozen
vectors, the same architecture trained from random initialisation, and TF-IDF + logistic
regression: the seeds' "fine-tune BERT for sentiment" and its data-efficiency claim, in one run.

Labels: for each budget, a seeded class-balanced sample of the fixed train split of
`datasets fetch sentiment-movies` ("all": the whole split); test: a seeded sample of --test
snippets of its fixed test split (the same for every row). Every fine-tune is a real `finetune`
run (10% of its labels held out to pick the epoch), texts cut at --max-tokens. The random
initialisation is minilm-l6's configuration with seeded random weights, written as an `hf:`
folder, fine-tuned `full` with one rate for every layer (--scratch-lr: a transformer from
scratch needs the same steps everywhere). Prints one table and writes a learning-curve PNG.

    .venv/bin/python bench/text_finetune.py [--labels 100 500 1000 all]
        [--strategies linear partial gradual lp-ft full] [--epochs 4] [--test 2000]
        [--max-tokens 64] [--no-scratch] [--png text_finetune.png]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def sample(rows: list[dict], n: int | None, seed: int) -> list[dict]:
    """``n`` rows, half of each label (all rows when ``n`` is None), in a seeded order."""
    rng = random.Random(seed)
    if n is None:
        out = list(rows)
    else:
        out = []
        for label in sorted({r["label"] for r in rows}):
            of = [r for r in rows if r["label"] == label]
            out += rng.sample(of, min(len(of), n // 2))
    rng.shuffle(out)
    return out


def write_manifest(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n"
                            for r in rows))
    return path


def random_minilm(root: Path, seed: int = 0) -> str:
    """minilm-l6's folder with seeded random weights: the same architecture, nothing learned."""
    import torch
    from transformers import BertConfig, BertModel

    from embedsvc.text.catalog import text_encoder_config
    from embedsvc.text.folder import copy_settings

    src = Path(text_encoder_config("minilm-l6").folder)
    out = root / "minilm-random"
    copy_settings(src, out)
    torch.manual_seed(seed)
    BertModel(BertConfig.from_pretrained(src)).save_pretrained(out, safe_serialization=True)
    return f"hf:{out}"


def frozen_head(enc, train: list[dict], test_vectors: np.ndarray, test_labels: np.ndarray) -> float:
    from classifiers.heads.kinds import LogRegHead

    X = enc.embed([r["text"] for r in train]).vectors
    head = LogRegHead().fit(X, [r["label"] for r in train])
    return float(np.mean(head.predict(test_vectors) == test_labels))


def tfidf(train: list[dict], test: list[dict]) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    X = vec.fit_transform([r["text"] for r in train])
    clf = LogisticRegression(max_iter=2000).fit(X, [r["label"] for r in train])
    return float(np.mean(clf.predict(vec.transform([r["text"] for r in test]))
                         == np.array([r["label"] for r in test])))


def finetuned(manifest: Path, run_dir: Path, test, cfg) -> tuple[float, str]:
    from classifiers.finetune import evaluate_run, finetune

    result = finetune(str(manifest), run_dir, cfg, progress=False)
    return evaluate_run(result.run_dir, test), f"best epoch {result.best_epoch}/{result.epochs_run}"


def learning_curve_png(rows: list[tuple[str, int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(m for m, _, _ in rows):
        pts = sorted((n, a) for m, n, a in rows if m == method)
        ax.plot([n for n, _ in pts], [a for _, a in pts], marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training snippets")
    ax.set_ylabel("test accuracy")
    ax.set_title("movie snippets: minilm-l6 fine-tuned vs frozen, scratch, TF-IDF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", nargs="+", default=["100", "500", "1000", "all"])
    ap.add_argument("--strategies", nargs="*",
                    default=["linear", "partial", "gradual", "lp-ft", "full"])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--scratch-lr", type=float, default=3e-4)
    ap.add_argument("--no-scratch", action="store_true")
    ap.add_argument("--png", default="text_finetune.png")
    args = ap.parse_args()

    from classifiers.finetune import FinetuneConfig
    from classifiers.finetune.inputs import LabelledTexts
    from embedsvc.datasets.fetch import fetch_dataset
    from embedsvc.encoders import open_encoder
    import torch

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        fetch_dataset("sentiment-movies", root / "movies")
        rows = [json.loads(x) for x in (root / "movies" / "manifest.jsonl").read_text().splitlines()]
        train_all = [r for r in rows if r["split"] == "train"]
        test = sample([r for r in rows if r["split"] == "test"], None, 1)[:args.test]
        classes = sorted({r["label"] for r in train_all})
        test_data = LabelledTexts([r["text"].strip() for r in test],
                                  torch.tensor([classes.index(r["label"]) for r in test]),
                                  classes, [str(i) for i in range(len(test))])
        test_labels = np.array([r["label"] for r in test])
        enc = open_encoder("minilm-l6")
        test_vectors = enc.embed([r["text"] for r in test]).vectors
        scratch = None if args.no_scratch else random_minilm(root)
        print(f"movie snippets: train split {len(train_all)}, test {len(test)} of the test split; "
              f"minilm-l6, at most {args.max_tokens} tokens, {args.epochs} epochs per fine-tune")
        results: list[tuple[str, int, float]] = []
        print(f"{'labels':>6}  {'method':<34} {'test acc':>8}  {'vs head':>8}  {'seconds':>7}  note")
        for budget in args.labels:
            train = sample(train_all, None if budget == "all" else int(budget), 0)
            manifest = write_manifest(train, root / f"train-{budget}.jsonl")
            n = len(train)
            base = None

            def row(method: str, fn, note: str = "") -> None:
                nonlocal base
                t0 = time.perf_counter()
                acc = fn()
                if isinstance(acc, tuple):
                    acc, note = acc
                base = acc if base is None else base
                results.append((method, n, acc))
                print(f"{n:>6}  {method:<34} {acc:8.4f}  {100 * (acc - base):+7.1f}p  "
                      f"{time.perf_counter() - t0:7.0f}  {note}", flush=True)

            row("logreg head on frozen minilm-l6", lambda: frozen_head(enc, train, test_vectors,
                                                                        test_labels))
            row("tf-idf + logistic regression", lambda: tfidf(train, test))
            for s in args.strategies:
                cfg = FinetuneConfig(backbone="minilm-l6", strategy=s, epochs=args.epochs,
                                     max_tokens=args.max_tokens, lr=args.lr, seed=0)
                row(f"finetune {s}", lambda: finetuned(manifest, root / f"run-{budget}-{s}",
                                                        test_data, cfg))
            if scratch:
                cfg = FinetuneConfig(backbone=scratch, strategy="full", epochs=args.epochs,
                                     max_tokens=args.max_tokens, lr=args.scratch_lr,
                                     backbone_lr_ratio=1.0, layer_decay=1.0, seed=0)
                row("full, random initialisation", lambda: finetuned(
                    manifest, root / f"run-{budget}-scratch", test_data, cfg))
        learning_curve_png(results, Path(args.png))
        print(f"learning curves: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
