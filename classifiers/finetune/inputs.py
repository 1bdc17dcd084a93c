"""What a fine-tuning run trains on, per modality: the encoder as a trainable module, its labelled
inputs held in memory once (images decoded, texts read: every epoch after the first costs
only the network), batches of them, and the files that make a finished run an encoder. The
trainer asks only these calls; ``inputs_for`` is the one place that picks a modality.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from classifiers.adapt.choices import parse_presets
from embedsvc.errors import InvalidInputError
from embedsvc.provenance import Provenance
from embedsvc.runs import WEIGHTS, canonical_name, save_weights

from .config import FinetuneConfig
from .data import augment, decode_records

TEXT_BACKBONE_LR_RATIO = 0.05  # a pretrained transformer's top block: 5e-5 against lr 1e-3
IMAGE_BACKBONE_LR_RATIO = 0.7


def run_preprocess(backbone, image_size: int | None):
    """An image backbone's preprocessing at the run's input size (None: its own)."""
    import dataclasses

    pre = backbone.cfg.preprocess
    if image_size is None or image_size == pre.image_size:
        return pre
    return dataclasses.replace(pre, input_size=(pre.input_size[0], image_size, image_size))


class ImageInputs:
    modality, unit = "image", "image"
    backbone_lr_ratio = IMAGE_BACKBONE_LR_RATIO

    def __init__(self, name: str, cfg: FinetuneConfig):
        from embedsvc.backbones import create_backbone

        if cfg.max_tokens is not None:
            raise InvalidInputError(f"--max-tokens is for text encoders; {name} reads images "
                                    f"(--image-size sets their size)")
        parse_presets(cfg.presets, self.modality)
        self.backbone = create_backbone(name)
        self.preprocess = run_preprocess(self.backbone, cfg.image_size)
        self.backbone.cfg = self.backbone.cfg.replace(preprocess=self.preprocess)

    def describe(self) -> str:
        return f"{self.preprocess.image_size} px"

    def load(self, records, classes: Sequence[str], progress: bool, max_items: int):
        return decode_records(records, self.preprocess, classes, progress, max_items)

    @staticmethod
    def take(data, idx) -> torch.Tensor:
        return data.images[idx]

    @staticmethod
    def join(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """One batch of two (source, then target)."""
        return torch.cat([a, b])

    @staticmethod
    def augment(x: torch.Tensor, g: torch.Generator, cropped: bool,
                presets: tuple[str, ...]) -> torch.Tensor:
        """Random crop (padded) and flip when ``cropped``, then the augmentation ``presets``
        (adapt/augment.py)."""
        from classifiers.adapt.augment import apply_presets

        return apply_presets(augment(x, g) if cropped else x, presets, g)

    def to_input(self, x: torch.Tensor, plan) -> torch.Tensor:
        from .model import to_input

        return to_input(x, self.backbone.cfg.preprocess, plan)

    def place(self, net, plan) -> None:
        net.to(plan.device)
        if plan.channels_last:
            net.to(memory_format=torch.channels_last)

    def save(self, net, run_dir: Path) -> tuple[dict, dict]:
        """Write the trained backbone into ``run_dir``: (what finetuned.json adds, the
        provenance of the vectors its classifier reads)."""
        from embedsvc.backbones.base import PRE_LOGITS
        from embedsvc.fingerprint import sha256_file

        save_weights(net.backbone.model.state_dict(), run_dir / WEIGHTS)
        # what the finetuned: backbone's extractor will stamp on its vectors (build_finetuned)
        made_by = net.backbone.cfg.replace(name=canonical_name(run_dir),
                                           weights_sha256=sha256_file(run_dir / WEIGHTS))
        provenance = Provenance.of_encoder(made_by.provenance(), PRE_LOGITS, False).to_dict()
        return {"preprocess": self.preprocess.to_dict()}, provenance


@dataclass
class LabelledTexts:
    texts: list[str]  # stripped, as the encoder reads them
    labels: torch.Tensor  # int64 (N,), indices into classes; -1 when unlabelled
    classes: list[str]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> "LabelledTexts":
        idx = np.asarray(index, dtype=np.int64)
        return LabelledTexts([self.texts[i] for i in idx], self.labels[torch.as_tensor(idx)],
                             self.classes, [self.paths[i] for i in idx])


class TextInputs:
    modality, unit = "text", "text"
    backbone_lr_ratio = TEXT_BACKBONE_LR_RATIO

    def __init__(self, name: str, cfg: FinetuneConfig):
        from embedsvc.text.catalog import text_encoder_config
        from embedsvc.text.model import load_tokenizer, text_backbone

        if cfg.image_size is not None:
            raise InvalidInputError(f"--image-size is for image backbones; {name} reads text "
                                    f"(--max-tokens cuts texts)")
        parse_presets(cfg.presets, self.modality)
        enc = text_encoder_config(name)
        self.backbone = text_backbone(enc)
        self.max_tokens = min(cfg.max_tokens or enc.max_length, enc.max_length)
        self.tokenizer, self.pad_id = load_tokenizer(enc, self.max_tokens)
        # what a masked span becomes (text_augment.py): the tokenizer's own mask token
        self.mask = next((t for t in ("[MASK]", "<mask>") if self.tokenizer.token_to_id(t)
                          is not None), None)

    def describe(self) -> str:
        return f"at most {self.max_tokens} tokens"

    def load(self, records, classes: Sequence[str], progress: bool, max_items: int) -> LabelledTexts:
        """Read every record once (batches are tokenised as they are drawn: the fast tokenizer
        takes about a millisecond a batch, and augmentation works on words); one whose text
        cannot be read is skipped and counted. Records without a label (unlabelled target
        texts) get label -1."""
        from embedsvc.text.encoder import read_text_record

        if len(records) > max_items:
            raise InvalidInputError(f"{len(records)} texts is more than max_images_in_memory="
                                    f"{max_items}; pass a subset")
        index = {c: i for i, c in enumerate(classes)}
        read = [(r, read_text_record(r.to_dict())) for r in records]
        ok = [(r, x) for r, x in read if "error" not in x]
        if not ok:
            raise InvalidInputError(f"none of the {len(records)} texts could be read")
        if len(ok) < len(read) and progress:
            bad = next(x for _, x in read if "error" in x)
            print(f"skipped {len(read) - len(ok)} unreadable texts (first: {bad['path']}: "
                  f"{bad['error']})")
        labels = [index[r.label] if r.label is not None else -1 for r, _ in ok]
        return LabelledTexts([x["text"].strip() for _, x in ok],
                             torch.tensor(labels, dtype=torch.int64), list(classes),
                             [r.path for r, _ in ok])

    @staticmethod
    def take(data: LabelledTexts, idx) -> list[str]:
        return [data.texts[i] for i in torch.as_tensor(idx).tolist()]

    @staticmethod
    def join(a: list, b: list) -> list:
        """One batch of two (source, then target), padded together by ``to_input``."""
        return a + b

    def augment(self, x: list[str], g: torch.Generator, cropped: bool,
                presets: tuple[str, ...]) -> list[str]:
        """The text augmentation ``presets`` (adapt/text_augment.py); texts are not cropped."""
        from classifiers.adapt.text_augment import apply_text_presets

        return apply_text_presets(x, presets, g, self.mask)

    def to_input(self, x: list[str], plan):
        from embedsvc.text.model import pad_batch

        ids = [e.ids for e in self.tokenizer.encode_batch(x)]
        return pad_batch(torch, ids, self.pad_id, plan.device)

    @staticmethod
    def place(net, plan) -> None:
        net.to(plan.device)

    def save(self, net, run_dir: Path) -> tuple[dict, dict]:
        """The run folder becomes a text encoder folder: the trained weights beside the parent
        folder's configuration and tokenizer files (``text/folder.py`` reads it as any other)."""
        from embedsvc.text.folder import FINAL_TAP, copy_settings, read_folder

        files = copy_settings(net.backbone.cfg.folder, run_dir)
        save_weights(net.backbone.model.state_dict(), run_dir / WEIGHTS)
        made_by = read_folder(canonical_name(run_dir), run_dir)
        provenance = Provenance.of_encoder(made_by.provenance(FINAL_TAP), FINAL_TAP, False).to_dict()
        return {"encoder_files": files, "max_tokens": self.max_tokens}, provenance


def parent_weights(meta: dict, run_dir) -> dict[str, torch.Tensor]:
    """The pretrained state dict a run (``meta``: its finetuned.json) started from, refused if
    this machine's weights differ."""
    from embedsvc.runs import run_modality

    if run_modality(meta) == "text":
        from embedsvc.provenance import check_weights
        from embedsvc.text.catalog import text_encoder_config
        from embedsvc.text.model import load_model

        cfg = text_encoder_config(meta["parent"]["backbone"])
        check_weights(cfg, meta["parent"], f"the fine-tuning run {run_dir}")
        return load_model(cfg).state_dict()
    from embedsvc.backbones.finetuned import load_parent

    return load_parent(meta, run_dir).model.state_dict()


def inputs_for(name: str, cfg: FinetuneConfig):
    """The inputs of a run that trains encoder ``name``."""
    from embedsvc.encoders import TEXT, modality_of_name

    return (TextInputs if modality_of_name(name) == TEXT else ImageInputs)(name, cfg)
