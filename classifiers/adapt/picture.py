"""The picture of a gap: both domains in the 2-D principal plane of their pooled embeddings,
coloured by domain, and beside it by class where there are labels."""
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
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    explained = (s[:2] ** 2).sum() / max((s ** 2).sum(), 1e-12)
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
            ax.set_xlabel("PC 1")
            ax.set_ylabel("PC 2")
    fig.suptitle(f"{gap.verdict}: proxy A-distance {gap.proxy_a_distance:.2f}, MMD² {gap.mmd2:.4f} "
                 f"(p={gap.mmd_p_value:.3f}), Fréchet {gap.frechet:.3f}, CORAL {gap.coral:.2e}\n"
                 f"2-D principal plane of the pooled embeddings ({100 * explained:.0f}% of the "
                 f"variance)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _or_blank(labels, n: int) -> np.ndarray:
    return np.array([""] * n) if labels is None else labels
