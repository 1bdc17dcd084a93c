"""Labelled images for fine-tuning: read from a dataset source (class folders or a manifest, the
same sources as the embedding store), decoded once into uint8 tensors at the run's input size,
split into train / validation, and served as seeded batches with light augmentation.

Decoding once is what makes CPU fine-tuning affordable: every epoch after the first costs only
the network. Batches for epoch E depend on (seed, E) alone, so a resumed run sees exactly the
batches an uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from embedsvc.backbones.config import DEFAULT_DECODE, PreprocessConfig
from embedsvc.datasets.sources import Record, scan_source
from embedsvc.decode_ahead import decode_threads, decoded_batches
from embedsvc.errors import ImageDecodeError, InvalidInputError
from embedsvc.extract import prepared_or_error
from embedsvc.preprocess import build_transform

VAL_SPLITS = ("val", "valid", "validation")


@dataclass
class LabelledImages:
    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # int64 (N,), indices into classes
    classes: list[str]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Sequence[int] | np.ndarray) -> "LabelledImages":
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return LabelledImages(self.images[idx], self.labels[idx], self.classes,
                              [self.paths[i] for i in idx.tolist()])


def labelled_records(source: str, splits: Sequence[str | None] | None = None) -> list[Record]:
    """Records of ``source`` that have a label (all must), optionally only some splits."""
    records = scan_source(source)
    if splits is not None:
        records = [r for r in records if r.split in splits]
    if not records:
        raise InvalidInputError(f"{source}: no images or texts{' in splits ' + ', '.join(map(str, splits)) if splits else ''}")
    unlabelled = [r.path for r in records if not r.label]
    if unlabelled:
        raise InvalidInputError(f"{source}: {len(unlabelled)} inputs have no label (e.g. {unlabelled[0]}); "
                                f"fine-tuning needs class folders or a manifest with a label column")
    return records


def decode_records(records: Sequence[Record], preprocess: PreprocessConfig, classes: Sequence[str],
                   progress: bool = True, max_images: int | None = None) -> LabelledImages:
    """Decode every record once; unreadable files are skipped and counted, not fatal. Records
    without a label (unlabelled target images) get label -1."""
    if max_images is not None and len(records) > max_images:
        raise InvalidInputError(
            f"{len(records)} images is more than max_images_in_memory={max_images}; pass a smaller "
            f"--image-size or a subset (decoded images are kept in memory as uint8)")
    transform = build_transform(preprocess, DEFAULT_DECODE)
    index = {c: i for i, c in enumerate(classes)}
    images, labels, paths, skipped = [], [], [], []

    # nothing else runs yet: decode on every core
    batches = decoded_batches(lambda i: prepared_or_error(records[i].path, transform),
                              len(records), 64, decode_threads("cpu"))
    with tqdm(total=len(records), desc="decode", unit="img", disable=not progress, leave=False) as bar:
        for items in batches:
            for i, item in items:
                r = records[i]
                if isinstance(item, ImageDecodeError):
                    skipped.append((r.path, str(item)))
                    continue
                images.append(item)
                labels.append(index[r.label] if r.label is not None else -1)
                paths.append(r.path)
            bar.update(len(items))
    if not images:
        raise InvalidInputError(f"none of the {len(records)} images could be decoded "
                                f"(first error: {skipped[0][1] if skipped else 'none'})")
    if skipped and progress:
        print(f"skipped {len(skipped)} unreadable images (first: {skipped[0][0]}: {skipped[0][1]})")
    return LabelledImages(torch.stack(images), torch.tensor(labels, dtype=torch.int64),
                          list(classes), paths)


def train_val_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified hold-out indices (train, val); plain random when a class is too small."""
    n = len(labels)
    if fraction <= 0:
        return np.arange(n), np.arange(0)
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    counts = np.bincount(labels)
    n_val = max(1, int(round(fraction * n)))
    stratify = labels if counts[counts > 0].min() >= 2 and n_val >= len(counts[counts > 0]) else None
    train, val = train_test_split(idx, test_size=n_val, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(val)


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop after reflection padding (1/8 of the side) and a horizontal flip, per image:
    cheap on uint8 tensors and enough to keep a few thousand images from being memorised."""
    n, _, h, w = batch.shape
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(batch.float(), (pad, pad, pad, pad), mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(batch)
    for i in range(n):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, dy:dy + h, dx:dx + w]
        out[i] = (crop.flip(-1) if flips[i] else crop).to(batch.dtype)
    return out


def epoch_batches(data, batch_size: int, seed: int, epoch: int, inputs, augmented: bool,
                  presets: tuple[str, ...] = ()) -> Iterator[tuple[object, torch.Tensor]]:
    """Shuffled batches for one epoch, a function of (seed, epoch) only, taken and augmented as
    the run's ``inputs`` (finetune/inputs.py) do it. A last batch of one input is dropped
    (BatchNorm cannot train on it)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(data), generator=g)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < 2:
            break
        yield inputs.augment(inputs.take(data, idx), g, augmented, presets), data.labels[idx]


def steps_per_epoch(n: int, batch_size: int) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 else 0)
