"""The fine-tuning run directory: the one module that names its files and reads and writes its
description. Written by ``classifiers.finetune`` (training, WiSE-FT), read by the ``finetuned:``
encoders (an image backbone's or a text encoder's) and the server's data dir.

    RUN_DIR/finetuned.json      modality, parent encoder name and weights sha256, for images the
                                preprocessing the run trained at (its input size may differ from
                                the parent's), classes, strategy, metrics, format and library
                                versions
    RUN_DIR/model.safetensors   the encoder's weights after fine-tuning (safetensors: tensors
                                only, nothing executed on load)
    RUN_DIR/head/               the run's classifier as an embedsvc head

A text run's folder also holds its parent folder's configuration and tokenizer files, so it is a
text encoder folder itself (``text/folder.py``). ``finetuned.json`` is written last: its presence
is what makes a run finished.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .atomic import atomic_write_bytes
from .errors import IncompatibleError, InvalidInputError, NotFoundError
from .provenance import read_artifact, write_artifact

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


def is_finished_run(run_dir: str | Path) -> bool:
    return (Path(run_dir) / RUN_JSON).is_file()


def read_run(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        raise NotFoundError(f"{str(run_dir)!r} is not a finished fine-tuning run ({RUN_JSON} missing; "
                            f"a run writes it when training ends)")
    meta = read_artifact(path, "fine-tuning run", FORMAT_VERSION)
    for key in ("parent",) + (("preprocess",) if run_modality(meta) == "image" else ()):
        if not isinstance(meta.get(key), dict):
            raise IncompatibleError(f"{path} has no {key!r} section")
    return meta


def run_modality(meta: dict[str, Any]) -> str:
    """What a run's encoder embeds (runs before text: images)."""
    return meta.get("modality") or "image"


def encoder_files(meta: dict[str, Any]) -> list[str]:
    """The files of a run that its encoder loads from (what a server's data dir keeps)."""
    return [RUN_JSON, WEIGHTS, *meta.get("encoder_files", ())]


def write_run(run_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Commit a run: the description, stamped with format and library versions, written last."""
    path = Path(run_dir) / RUN_JSON
    write_artifact(path, {**meta, "format": FORMAT_VERSION})
    return path


def save_weights(state: dict[str, Any], path: str | Path) -> Path:
    """A state dict as safetensors, written atomically (tensors only: nothing runs on load)."""
    from safetensors.torch import save

    return atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in state.items()}))
