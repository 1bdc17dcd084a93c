"""Honest numbers for a head, and the pictures people look at: confusion matrix, learning curve."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def metrics(estimator, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    proba = estimator.predict_proba(X)
    classes = np.asarray(estimator.classes_)
    pred = classes[np.argmax(proba, axis=1)]
    out: dict[str, Any] = {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", labels=classes, zero_division=0)),
    }
    if len(classes) > 5:
        top5 = classes[np.argsort(-proba, axis=1)[:, :5]]
        out["top5_accuracy"] = float(np.mean([t in row for t, row in zip(y, top5)]))
    return out


def confusion_png(estimator, X: np.ndarray, y: np.ndarray, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    classes = list(estimator.classes_)
    cm = confusion_matrix(y, estimator.predict(X), labels=classes)
    norm = cm / np.clip(cm.sum(axis=1, keepdims=True), 1, None)
    size = max(5.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 30:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.colorbar(im, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curve_png(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    shots = [r["shots"] for r in rows]
    for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
        ax.plot(shots, [r[key] for r in rows], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xticks(shots, [str(s) for s in shots])
    ax.set_xlabel("labelled examples per class")
    ax.set_ylabel("test score")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
