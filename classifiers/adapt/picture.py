"""The picture of a gap: both domains in one plane of their pooled embeddings, coloured by
domain, and beside it by class where there are labels.

The plane: x is the direction from A's mean to B's mean (the shift itself; the top principal
components of embeddings follow the classes and can hide it), y the first principal component
of what is left."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .gap import Gap


def gap_png(a, b, gap: Gap, path: str | Path, names: tuple[str, str]) -> Path:
    """``a`` / ``b``: Sides (vectors, labels); writes ``path`` and returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled = np.concatenate([a.vectors, b.vectors]).astype(np.float64)
    centred = pooled - pooled.mean(0)
    shift = b.vectors.mean(0) - a.vectors.mean(0)
    shift = shift / max(float(np.linalg.norm(shift)), 1e-12)
    x = centred @ shift
    rest = centred - np.outer(x, shift)
    _, _, vt = np.linalg.svd(rest, full_matrices=False)
    xy = np.stack([x, rest @ vt[0]], axis=1)
    na = len(a.vectors)
    labelled = a.labels is not None or b.labels is not None
    fig, axes = plt.subplots(1, 2 if labelled else 1, figsize=(13 if labelled else 7, 6),
                             squeeze=False)
    ax = axes[0][0]
    for sl, name, colour in ((slice(0, na), names[0], "tab:blue"), (slice(na, None), names[1], "tab:red")):
        ax.scatter(xy[sl, 0], xy[sl, 1], s=8, alpha=0.5, c=colour, label=f"{name} ({len(xy[sl])})")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("by domain")
    if labelled:
        ax = axes[0][1]
        labels = np.concatenate([_or_blank(a.labels, na), _or_blank(b.labels, len(b.vectors))])
        classes = sorted(set(labels) - {""})
        cmap = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
        for i, c in enumerate(classes):
            for sl, marker in ((slice(0, na), "o"), (slice(na, None), "x")):
                m = labels[sl] == c
                ax.scatter(xy[sl][m, 0], xy[sl][m, 1], s=10, alpha=0.6, marker=marker,
                           color=cmap(i % cmap.N), label=c if marker == "o" else None)
        ax.legend(loc="best", fontsize=7, ncol=2, title=f"o {names[0]}   x {names[1]}")
        ax.set_title("by class")
    for row in axes:
        for ax in row:
            ax.set_xlabel(f"direction from {names[0]}'s mean to {names[1]}'s")
            ax.set_ylabel("first principal component of the rest")
    fig.suptitle(f"{gap.verdict}: proxy A-distance {gap.proxy_a_distance:.2f}, MMD² {gap.mmd2:.4f} "
                 f"(p={gap.mmd_p_value:.3f}), Fréchet {gap.frechet:.3f}, CORAL {gap.coral:.2e}",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _or_blank(labels, n: int) -> np.ndarray:
    return np.array([""] * n) if labels is None else labels
