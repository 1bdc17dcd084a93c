"""``embed-dataset``: a dataset source → an embedding store, resumable and safe.

Records are processed in a fixed order, in shards of ``shard_size``. Decoding and preprocessing
run ahead of the model (``decode_ahead``: in threads where that pays). Each shard is committed
atomically (see store.py), so a run killed at any moment, SIGKILL included, resumes at the first
uncommitted shard with the same batches: no row is lost, none is duplicated, and the vectors are
the ones a clean run makes.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backbones import DEFAULT_BACKBONE, create_backbone
from ..datasets import Record, scan_source
from ..decode_ahead import decoded_batches
from ..errors import ImageDecodeError, InvalidInputError
from ..extract import ExtractConfig, FeatureExtractor
from ..images import DEFAULT_MAX_PIXELS
from ..runtimes import DEFAULT_RUNTIME
from ..backbones.config import DEFAULT_DECODE
from ..atomic import atomic_write_bytes
from .store import DTYPES, EmbeddingStore, StoreLock, jsonl_bytes


@dataclass(frozen=True)
class EmbedDatasetConfig:
    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    batch_size: int = 32
    workers: int | None = None  # decode threads ahead of the model; None: decode_ahead decides
    shard_size: int = 4096
    dtype: str = "float32"
    dedup: bool = False
    device: str = "auto"
    tap: str = "pre_logits"
    normalize: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode: str = DEFAULT_DECODE
    runtime: str = DEFAULT_RUNTIME

    def __post_init__(self) -> None:
        for name in ("batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.workers is not None and self.workers < 0:
            raise InvalidInputError(f"workers must be >= 0, got {self.workers}")
        if self.dtype not in DTYPES:
            raise InvalidInputError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")


@dataclass
class EmbedReport:
    store: str
    total_records: int
    already_done: int
    added: int = 0
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.added / self.seconds if self.seconds else 0.0


class _DecodeDataset:
    """Reads, hashes, decodes and preprocesses one record; never raises on bad input."""

    def __init__(self, records: list[Record], fe: FeatureExtractor):
        self.records = records
        self.fe = fe

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, dict[str, Any]]:
        rec = self.records[i]
        info: dict[str, Any] = rec.to_dict()
        try:
            data = Path(rec.path).read_bytes()
        except OSError as exc:
            info["error"] = f"cannot read file ({exc.strerror or exc})"
            return None, info
        info["sha256"] = hashlib.sha256(data).hexdigest()
        try:
            tensor, (info["width"], info["height"]) = self.fe.prepare(data, rec.path)
            return tensor, info
        except ImageDecodeError as exc:
            info["error"] = exc.reason
            return None, info


def embed_dataset(src: str | Path, out: str | Path, config: EmbedDatasetConfig = EmbedDatasetConfig(),
                  progress: bool = True, stop_after_shards: int | None = None) -> EmbedReport:
    """Embed every record of ``src`` not yet in the store at ``out``.

    ``stop_after_shards`` ends the run early after that many shards (for tests and for spreading
    a large job over several sessions).
    """
    records = scan_source(src)
    backbone = create_backbone(config.backbone, weights=config.weights)
    fe = FeatureExtractor(backbone, ExtractConfig(
        batch_size=config.batch_size, normalize=config.normalize, tap=config.tap,
        device=config.device, max_pixels=config.max_pixels, decode=config.decode,
        runtime=config.runtime))
    provenance = dict(fe.provenance)
    if provenance.get("dim") is None:  # a stage tap: one tiny forward pass tells the width
        provenance["dim"] = fe.embed_tensor(torch.zeros(1, *backbone.cfg.preprocess.input_size)).shape[1]
        fe.provenance["dim"] = provenance["dim"]

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with StoreLock(out / ".lock"):
        store = EmbeddingStore.open_or_create(out, provenance, config.dtype)
        done = store.done_paths()
        pending = [r for r in records if r.path not in done]
        report = EmbedReport(str(out), len(records), len(records) - len(pending))
        if stop_after_shards is not None:
            pending = pending[: stop_after_shards * _shard_inputs(config)]
        bar = _progress(len(pending), backbone.name, progress)
        try:
            for vecs, rows, skipped in _shards(fe, pending, config, store, bar):
                store.append_shard(vecs, rows, skipped)
                report.added += len(rows)
                report.skipped.extend(skipped)
        finally:
            if bar is not None:
                bar.close()
        # one file listing every input the store did not take, across all runs
        atomic_write_bytes(out / "errors.jsonl", jsonl_bytes(store.skipped()))
    report.seconds = time.perf_counter() - t0
    return report


def _shard_inputs(config: EmbedDatasetConfig) -> int:
    """Inputs per shard, rounded up to whole batches so that a resumed run forms exactly the
    batches a clean run would have (and so gets bitwise the same vectors)."""
    bs = config.batch_size
    return -(-config.shard_size // bs) * bs


def _shards(fe: FeatureExtractor, pending: list[Record], config: EmbedDatasetConfig,
            store: EmbeddingStore, bar=None):
    """Yield (vectors, rows, skipped) per shard. One decode pipeline for the whole run, so the
    model stays fed across shard boundaries."""
    seen = store.hashes() if config.dedup else {}
    per_shard = _shard_inputs(config)
    dataset = _DecodeDataset(pending, fe)
    loader = decoded_batches(dataset.__getitem__, len(dataset), config.batch_size, config.workers,
                             fe.plan.device.type)
    vec_parts: list[np.ndarray] = []
    rows: list[dict] = []
    skipped: list[dict] = []
    inputs = 0
    for items in loader:
        tensors = []
        for _, (tensor, info) in items:
            if tensor is None:
                skipped.append({"path": info["path"], "reason": info["error"]})
                continue
            if config.dedup:
                # the first copy of a content hash is kept; later ones name the row they repeat
                if info["sha256"] in seen:
                    skipped.append({"path": info["path"],
                                    "reason": f"duplicate of row {seen[info['sha256']]}"})
                    continue
                seen[info["sha256"]] = store.count + len(rows)
            tensors.append(tensor)
            rows.append({k: info.get(k) for k in _ROW_KEYS})
        if tensors:
            vec_parts.append(fe.embed_tensor(torch.stack(tensors)))
        inputs += len(items)
        if bar is not None:
            bar.update(len(items))
        if inputs == per_shard:
            yield _stack(vec_parts, fe), rows, skipped
            vec_parts, rows, skipped, inputs = [], [], [], 0
    if inputs:
        yield _stack(vec_parts, fe), rows, skipped


_ROW_KEYS = ("path", "label", "split", "domain", "sha256", "width", "height")


def _stack(parts: list[np.ndarray], fe: FeatureExtractor) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, fe.provenance["dim"]), np.float32)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"embed {desc}", unit="img", smoothing=0.05, dynamic_ncols=True)

