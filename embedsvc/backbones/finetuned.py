"""``finetuned:RUN_DIR``: a backbone adapted by a fine-tuning job, usable wherever a name is.

A run directory (``embedsvc/runs.py``) describes itself, so nothing else is needed to load it. The
parent is built first (its architecture and registry code), then the fine-tuned weights are
loaded into it strictly. The name is canonicalised to the run's absolute path, so embeddings and
heads made from a run refer to one thing however the path was typed; the weights hash in their
provenance is that of ``model.safetensors``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import IncompatibleError, NotFoundError
from .base import Backbone
from .config import PreprocessConfig
from .registry import create_backbone
from ..runs import WEIGHTS, canonical_name, read_run, run_dir_of
from ..fingerprint import sha256_file


def load_parent(meta: dict[str, Any], run_dir: str | Path) -> Backbone:
    """The pretrained backbone a run started from, refused if this machine's weights differ."""
    from ..provenance import check_weights

    parent = create_backbone(meta["parent"]["backbone"])
    check_weights(parent.cfg, meta["parent"], f"the fine-tuning run {run_dir}")
    return parent


def build_finetuned(name: str, weights: str | None = None) -> Backbone:
    from safetensors.torch import load_file

    run_dir = run_dir_of(name)
    meta = read_run(run_dir)
    parent = load_parent(meta, name)
    path = Path(weights) if weights else run_dir / WEIGHTS
    if not path.is_file():
        raise NotFoundError(f"fine-tuned weights {str(path)!r} are missing")
    try:
        parent.model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as exc:
        raise IncompatibleError(f"{path} does not fit {meta['parent']['backbone']}: "
                                f"{str(exc).splitlines()[0]}") from None
    parent.eval()
    parent.cfg = parent.cfg.replace(
        name=canonical_name(run_dir),
        preprocess=PreprocessConfig.from_dict(meta["preprocess"]),
        weights_path=str(path),
        weights_sha256=sha256_file(path),
        extra={**parent.cfg.extra, "finetuned_from": meta["parent"], "strategy": meta.get("strategy"),
               "classes": meta.get("classes")},
    )
    return parent
