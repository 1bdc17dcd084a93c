"""Per-epoch metrics of a run: a CSV anyone can load and a PNG of the curves next to it."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from embedsvc.atomic import atomic_write_bytes

COLUMNS = ("epoch", "trainable_groups", "trainable_params", "lr", "train_loss", "train_acc",
           "val_loss", "val_acc", "domain_loss", "a_distance", "bound", "seconds", "inputs_per_s")


def write_metrics_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


def curves_png(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax_acc.plot(epochs, [r["train_acc"] for r in rows], "o-", label="train")
    if any(r.get("val_acc") is not None for r in rows):
        ax_loss.plot(epochs, [r["val_loss"] for r in rows], "s-", label="validation")
        ax_acc.plot(epochs, [r["val_acc"] for r in rows], "s-", label="validation")
    for key, label in (("domain_loss", "domain loss"), ("bound", "selection bound")):
        if any(r.get(key) is not None for r in rows):  # runs towards a target domain
            ax_loss.plot(epochs, [r.get(key) for r in rows], "^--", label=label)
    # mark where more of the network started to train (gradual, lp-ft)
    for prev, cur in zip(rows, rows[1:]):
        if cur["trainable_groups"] != prev["trainable_groups"]:
            for ax in (ax_loss, ax_acc):
                ax.axvline(cur["epoch"] - 0.5, color="grey", lw=0.8, ls="--")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
