"""``embed-dataset``: a dataset source → an embedding store, resumable and safe.

Records are processed in a fixed order, in batches, into shards of ``shard_size``. Decoding and
preprocessing run ahead of the model (``decode_ahead``: in threads where that pays). Progress is
committed atomically (see store.py) every ``COMMIT_SECONDS`` of work or ``COMMIT_INPUTS`` inputs,
whichever comes first, always after a whole batch, whatever the shard size: a run killed at any
moment, SIGKILL included, loses at most that much and resumes after the last commit with the same
batches, so no row is lost, none is duplicated, and the vectors are the ones a clean run makes.
Ctrl-C (SIGINT) lets the batch in progress finish and commits it before the run stops.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..datasets import Columns, Record, scan_source
from ..encoders import EncodeOptions, check_source, default_encoder, modality_of_records, open_encoder
from ..errors import InvalidInputError
from ..atomic import atomic_write_bytes
from .store import DTYPES, EmbeddingStore, StoreLock, jsonl_bytes


SMALL_SIDE = 32  # images below this many pixels on a side are embedded with a warning
COMMIT_SECONDS = 3.0  # the most work an interruption can lose...
COMMIT_INPUTS = 512  # ...or inputs (rounded up to whole batches)


@dataclass(frozen=True)
class EmbedDatasetConfig:
    backbone: str | None = None  # None: the default encoder of what the source holds
    weights: str | None = None
    batch_size: int = 32
    workers: int | None = None  # decode threads ahead of the model; None: decode_ahead decides
    shard_size: int = 4096
    dtype: str = "float32"
    dedup: bool = False
    device: str = "auto"
    tap: str | None = None  # None: the encoder's default (pre_logits; embedding)
    normalize: bool = True
    max_pixels: int | None = None  # images: None is the library's limit
    decode: str | None = None  # images: None is the default decode mode
    runtime: str | None = None  # None: torch
    columns: Columns = Columns()  # parquet / datasets folders: which columns hold what

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
    small: list[dict] = field(default_factory=list)  # stored rows under SMALL_SIDE px a side
    truncated: int = 0  # stored texts cut at the encoder's token limit
    seconds: float = 0.0
    unit: str = "img"

    @property
    def images_per_s(self) -> float:
        return self.added / self.seconds if self.seconds else 0.0


def embed_dataset(src: str | Path, out: str | Path, config: EmbedDatasetConfig = EmbedDatasetConfig(),
                  progress: bool = True, stop_after_shards: int | None = None) -> EmbedReport:
    """Embed every record of ``src`` not yet in the store at ``out``.

    ``stop_after_shards`` ends the run early after that many shards (for tests and for spreading
    a large job over several sessions).
    """
    def embed_here(fe, pending, store, report):
        bar = progress_bar(len(pending), fe.name, progress, fe.unit)
        assembler = ShardAssembler(store, config, fe.row_keys)
        try:
            with interrupt_after_batch() as interrupted:
                for batch in _embedded_batches(fe, pending, config):
                    commit_unit(store, assembler.add(*batch), report)
                    if bar is not None:
                        bar.update(len(batch[0]))
                    if interrupted.is_set():
                        break
                commit_unit(store, assembler.flush(), report)
        finally:
            if bar is not None:
                bar.close()

    return run_embed_job(src, out, config, stop_after_shards, embed_here)


def run_embed_job(src: str | Path, out: str | Path, config: EmbedDatasetConfig,
                  stop_after_shards: int | None,
                  embed_pending: Callable[[Any, list[Record], EmbeddingStore, EmbedReport],
                                          None]) -> EmbedReport:
    """What every engine does around its own embedding: open or create the store under its
    lock, find the pending records, let ``embed_pending`` commit their shards in order, and
    list every skipped input."""
    records = scan_source(src, config.columns)
    fe = open_extractor(config, records)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with StoreLock(out / ".lock"):
        store = EmbeddingStore.open_or_create(out, fe.provenance, config.dtype)
        pending = pending_records(records, store)
        report = EmbedReport(str(out), len(records), len(records) - len(pending), unit=fe.unit)
        if stop_after_shards is not None:
            pending = pending[: stop_after_shards * shard_inputs(config)]
        if pending:
            embed_pending(fe, pending, store, report)
        # one file listing every input the store did not take, across all runs
        atomic_write_bytes(out / "errors.jsonl", jsonl_bytes(store.skipped()))
    report.seconds = time.perf_counter() - t0
    return report


def commit_unit(store: EmbeddingStore, unit, report: EmbedReport) -> None:
    """Commit what ``ShardAssembler`` handed over (nothing when None)."""
    if unit is None:
        return
    vectors, rows, skipped, shard_inputs = unit
    store.append(vectors, rows, skipped, shard_inputs)
    report.added += len(rows)
    report.skipped.extend(skipped)
    report.truncated += sum(r.get("truncated") is True for r in rows)
    report.small.extend(r for r in rows if min(r.get("width") or SMALL_SIDE,
                                               r.get("height") or SMALL_SIDE) < SMALL_SIDE)


@contextlib.contextmanager
def interrupt_after_batch():
    """Ctrl-C during a run sets the yielded event instead of raising, so the loop can finish
    the batch in progress and commit it; KeyboardInterrupt is raised when the block ends. A
    second Ctrl-C stops at once (losing only what came after the last commit)."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted  # signal handlers belong to the main thread
        return

    def on_sigint(signum, frame):
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted.is_set():
        raise KeyboardInterrupt


def open_extractor(config: EmbedDatasetConfig, records: list[Record] | None = None):
    """The encoder both engines embed with (``config.backbone``, or the default for what
    ``records`` hold); its provenance (dim included) binds the store."""
    name = config.backbone or default_encoder(modality_of_records(records or []))
    if records:
        check_source(name, records, "the dataset")
    fe = open_encoder(name, config.weights, EncodeOptions(
        tap=config.tap, normalize=config.normalize, batch_size=config.batch_size,
        device=config.device, decode=config.decode, runtime=config.runtime,
        max_pixels=config.max_pixels, workers=config.workers))
    if fe.provenance.get("dim") is None:  # an image stage tap: one tiny forward tells the width
        size = fe.backbone.cfg.preprocess.input_size
        fe.provenance["dim"] = fe.embed_tensor(torch.zeros(1, *size, dtype=torch.uint8)).shape[1]
    return fe


def pending_records(records: list[Record], store: EmbeddingStore) -> list[Record]:
    """The records a run still has to do: those the store has neither stored nor skipped."""
    done = store.done_paths()
    return [r for r in records if r.path not in done]


def shard_inputs(config: EmbedDatasetConfig) -> int:
    """Inputs per shard, rounded up to whole batches so that a resumed run forms exactly the
    batches a clean run would have (and so gets bitwise the same vectors)."""
    bs = config.batch_size
    return -(-config.shard_size // bs) * bs


class ShardAssembler:
    """Embedded batches, in input order → commit units (vectors, rows, skipped, shard_inputs).
    The one place that decides which inputs become rows and when progress is committed, for
    both engines: after ``COMMIT_SECONDS`` or ``COMMIT_INPUTS``, and where a shard fills up
    (``store.append`` then starts the next one).

    Every decodable image of a batch is embedded, duplicates too, and ``--dedup`` drops them
    here: the model sees the same batches whatever the engine, so the vectors are the same."""

    def __init__(self, store: EmbeddingStore, config: EmbedDatasetConfig,
                 row_keys: tuple[str, ...] = ()):
        self.store, self.dedup = store, config.dedup
        self.row_keys = _ROW_KEYS + row_keys
        self.per_shard = shard_inputs(config)
        self.per_commit = -(-COMMIT_INPUTS // config.batch_size) * config.batch_size
        self.seen = store.hashes() if config.dedup else {}
        last = store.shards[-1] if store.shards else None
        self.in_shard = last.inputs if last and last.inputs < self.per_shard else 0
        self._start()

    def _start(self) -> None:
        self.parts: list[np.ndarray] = []
        self.rows: list[dict] = []
        self.skipped: list[dict] = []
        self.inputs = 0
        self.since = time.monotonic()

    def add(self, infos: list[dict], vectors: np.ndarray):
        """One batch: every input's row (``error`` on the bad ones) and the vectors of the good
        ones, in order. Returns a unit to commit, or None."""
        keep = []
        for info in infos:
            if "error" in info:
                self.skipped.append({"path": info["path"], "reason": info["error"]})
            else:
                keep.append(self._take(info))
        if len(keep) != len(vectors):
            raise InvalidInputError(f"{len(vectors)} vectors for {len(keep)} decoded images")
        self.parts.append(vectors[np.array(keep, dtype=bool)] if keep else vectors)
        self.inputs += len(infos)
        due = (self.in_shard + self.inputs >= self.per_shard or self.inputs >= self.per_commit
               or time.monotonic() - self.since >= COMMIT_SECONDS)
        return self.flush() if due else None

    def _take(self, info: dict) -> bool:
        """Make the decoded input a row; False (and skipped) when ``dedup`` finds its bytes
        stored already: the first copy of a content hash is kept, later ones name its row."""
        if self.dedup and info["sha256"] in self.seen:
            self.skipped.append({"path": info["path"],
                                 "reason": f"duplicate of row {self.seen[info['sha256']]}"})
            return False
        if self.dedup:
            self.seen[info["sha256"]] = self.store.count + len(self.rows)
        self.rows.append({k: info.get(k) for k in self.row_keys})
        return True

    def flush(self):
        """The unit so far (None when empty); the next one starts."""
        if not self.inputs:
            return None
        dim = self.store.dim
        unit = (np.concatenate(self.parts) if self.parts else np.zeros((0, dim), np.float32),
                self.rows, self.skipped, self.per_shard)
        filled = self.in_shard + self.inputs
        self.in_shard = 0 if filled >= self.per_shard else filled
        self._start()
        return unit


def _embedded_batches(fe, pending: list[Record], config: EmbedDatasetConfig):
    """Yield (infos, vectors) per batch, in input order: the encoder reads its own records. One
    pipeline for the whole run, so the model stays fed across commits."""
    yield from fe.dataset_batches([r.to_dict() for r in pending])


_ROW_KEYS = ("path", "label", "split", "domain", "sha256")  # and the encoder's own row_keys


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "img"):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"embed {desc}", unit=unit, smoothing=0.05, dynamic_ncols=True)

