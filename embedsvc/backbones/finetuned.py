"""``finetuned:RUN_DIR``: a backbone adapted by a fine-tuning job, usable wherever a name is.

A run directory describes itself, so nothing else is needed to load it:

    RUN_DIR/finetuned.json      parent backbone name and weights sha256, the preprocessing the
                                run trained at (its input size may differ from the parent's),
                                classes, strategy, metrics
    RUN_DIR/model.safetensors   the backbone's weights after fine-tuning (safetensors: tensors
                                only, nothing executed on load)
    RUN_DIR/head/               the run's classifier as an embedsvc head (kind ``linear``)

The parent is built first (its architecture and registry code), then the fine-tuned weights are
loaded into it strictly. The name is canonicalised to the run's absolute path, so embeddings and
heads made from a run refer to one thing however the path was typed; the weights hash in their
provenance is that of ``model.safetensors``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import IncompatibleError, InvalidInputError, NotFoundError
from .base import Backbone
from .config import PreprocessConfig
from .weights import sha256_file

PREFIX = "finetuned"
RUN_JSON = "finetuned.json"
WEIGHTS = "model.safetensors"
HEAD_DIR = "head"
FORMAT_VERSION = 1


def canonical_name(run_dir: str | Path) -> str:
    return f"{PREFIX}:{Path(run_dir).expanduser().resolve()}"


def run_dir_of(name: str) -> Path:
    prefix, sep, rest = name.partition(":")
    if prefix != PREFIX or not sep or not rest:
        raise InvalidInputError(f"{name!r} is not a fine-tuned backbone name ({PREFIX}:RUN_DIR)")
    return Path(rest).expanduser().resolve()


def read_run(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        raise NotFoundError(f"{str(run_dir)!r} is not a finished fine-tuning run ({RUN_JSON} missing; "
                            f"a run writes it when training ends)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid JSON: {exc.msg}") from None
    if meta.get("format") != FORMAT_VERSION:
        raise IncompatibleError(f"{path} has format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    return meta


def load_parent(meta: dict[str, Any], run_dir: str | Path) -> Backbone:
    """The pretrained backbone a run started from, refused if this machine's weights differ."""
    from .registry import create_backbone

    from ..embeddings import check_weights

    parent = create_backbone(meta["parent"]["backbone"])
    check_weights(parent.cfg, meta["parent"], f"the fine-tuning run {run_dir}")
    return parent


def save_weights(state: dict[str, Any], path: str | Path) -> Path:
    """A state dict as safetensors, written atomically (tensors only: nothing runs on load)."""
    from safetensors.torch import save

    from ..atomic import atomic_write_bytes

    return atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in state.items()}))


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
