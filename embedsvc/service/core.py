"""The service core: everything the gRPC servicer does, with no gRPC in it.

It owns the loaded encoders (``models.ModelPool``), the heads in ``data_dir/heads``
(``heads.HeadRegistry``), the collections in ``data_dir/indexes``, admission control and the
request limits. Inputs (``inputs.Input``: images or texts) go through their encoder's stages:
``prepare`` in the calling thread, the encoder's dynamic batcher, ``finish``; nothing here knows
which modality it handles. The servicer only converts messages and maps errors to status codes.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from concurrent.futures import Executor, Future, TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import __version__
from ..collection.rows import unit_vectors, valid_ids
from ..embeddings import Embeddings
from ..projection import project_embeddings
from ..provenance import check_compatible
from ..encoders import check_encoder, listing, modality_of
from ..collection.metadata import MAX_TEXT_ID_BYTES, readable, valid_text
from ..errors import (DeadlineExceededError, FailedPreconditionError, InvalidInputError,
                      TooLargeError)
from ..names import valid_name
from .admission import Admission
from .collections import Collections
from .config import ServeConfig
from .datadir import DataDir
from .drift import DriftMonitor, DriftReport
from .gallery import Gallery, Thumbnails
from .heads import IMAGENET_HEAD, HeadRegistry
from .inputs import (Input, check_count, check_fit, check_inputs, check_tokens,
                     modality_of_inputs)
from .metrics import ServiceMetrics
from .models import ModelPool
from .projections import Projections
from .replicas import FollowedCollections


@dataclass(frozen=True)
class Timing:
    queue_ms: float
    inference_ms: float
    total_ms: float


class EmbeddingCore:
    def __init__(self, config: ServeConfig):
        self.config = config
        self.data = DataDir(Path(config.data_dir))
        self.data_dir = self.data.root
        # first: a second writer of this data dir is told so before a model loads
        self._writer_lock = None if config.role == "reader" else self.data.lock_writer()
        try:
            self._start(config)
        except BaseException:
            self._release_writer_lock()
            raise

    def _start(self, config: ServeConfig) -> None:
        self.metrics = ServiceMetrics()
        self.models = ModelPool(config, self.data, self.metrics)
        self.heads = HeadRegistry(self.data.heads)
        self.projections = Projections(config.projections)
        self.admission = Admission(config.max_concurrent_requests, config.max_inflight_bytes,
                                   config.max_streams)
        self.metrics.watch_queue(self.queue_depth)
        self.metrics.watch_in_flight(lambda: self.admission.requests)
        self.started = time.time()
        with self.models.lease():  # load the default at start: fail fast if it is missing
            pass
        if config.role == "reader":
            self.collections = FollowedCollections(self.data.indexes, config.follow_interval_s,
                                                   config.lease_s)
        else:
            self.collections = Collections(self.data.indexes, config.collections,
                                           config.publish_interval_s if config.role == "writer"
                                           else 0.0)
        self.metrics.watch_snapshots(self.collections.snapshots)
        self.gallery = Gallery(self.data, self.collections, self.heads, Thumbnails(
            self.data, config.thumbnail_size, config.max_pixels_per_image,
            config.max_bytes_per_image), config.default_backbone)
        self.drift_monitor = DriftMonitor(
            config.drift_window, config.drift_interval_s, self.metrics,
            lambda: {name: e.head for name, e in self.heads.entries().items()})

    def _release_writer_lock(self) -> None:
        if self._writer_lock is not None:
            self._writer_lock.release()
            self._writer_lock = None

    async def run(self, pool: Executor, remaining_s: float | None,
                  fn: Callable[[float], Any]) -> Any:
        """Both transports' way to do an admitted request's work (each admits at its front
        door, before the body is read): ``fn(deadline)`` in the worker pool, off the event
        loop."""
        deadline = self.deadline(remaining_s)
        return await asyncio.get_running_loop().run_in_executor(pool, fn, deadline)

    def deadline(self, remaining_s: float | None) -> float:
        """A monotonic deadline: the caller's, or ``request_timeout_s`` when it brings none."""
        limit = self.config.request_timeout_s
        return time.monotonic() + (limit if remaining_s is None else min(remaining_s, limit))

    # -- statistics -------------------------------------------------------------------------------
    def batching_stats(self) -> dict[str, int]:
        """Batcher statistics summed over the loaded backbones (largest_batch: the maximum)."""
        total = {"batches": 0, "images": 0, "largest_batch": 0, "queue_depth": 0}
        for r in self.models.runners():
            s = r.stats()
            for key in ("batches", "images", "queue_depth"):
                total[key] += s[key]
            total["largest_batch"] = max(total["largest_batch"], s["largest_batch"])
        return total

    def queue_depth(self) -> int:
        return self.batching_stats()["queue_depth"]

    def loaded_backbones(self) -> list[str]:
        return self.models.loaded()

    # -- embedding --------------------------------------------------------------------------------
    def embed(self, inputs: Sequence[Input], backbone: str | None = None,
              tap: str = "", normalize: bool = True, deadline: float | None = None,
              decoded: Callable[[str, Any], None] | None = None,
              dimensions: int | None = None) -> tuple[Embeddings, Timing]:
        """Check the request, prepare every input (decode an image, tokenise a text; a bad one
        fails the request before any model time), then queue them on the model's batcher and
        wait, until ``deadline`` at most. ``backbone`` None: the server's default for the
        inputs' modality. ``decoded(id, image)`` sees each decoded image (an upsert's
        thumbnails). ``dimensions``: projected to that many (``projections``)."""
        if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)
                                       or dimensions < 1):
            raise InvalidInputError(f"dimensions must be a positive integer, got {dimensions!r}")
        t0 = time.perf_counter()
        deadline = deadline if deadline is not None else self.deadline(None)
        modality = modality_of_inputs(inputs)
        check_count(len(inputs), modality, self.config)
        with self.models.lease(backbone or self.config.default_for(modality)) as runner:
            enc = runner.encoder
            check_fit(inputs, enc.modality, runner.name)
            tap = tap or enc.default_tap
            batcher = runner.batcher(tap)
            check_inputs(inputs, self.config)
            prepared = [self._prepare(enc, it, decoded) for it in inputs]
            costs = [enc.cost(p) for p in prepared]  # tokens of a text, 1 per image
            check_tokens(costs, self.config)
            t1 = time.perf_counter()
            futures: list[Future] = [batcher.submit(p, deadline, c) for p, c in zip(prepared, costs)]
            rows = [_result(f, deadline) for f in futures]
            t2 = time.perf_counter()
            emb = enc.finish([it.id for it in inputs], rows, tap, normalize)
            notes = [enc.notes(p) for p in prepared]  # (tokens, truncated) of each input
            emb = dataclasses.replace(emb, tokens=sum(t for t, _ in notes), truncated=tuple(
                it.id for it, (_, cut) in zip(inputs, notes) if cut))
        if dimensions is not None:
            emb = self.projections.apply(emb, dimensions)
        return emb, Timing(1000 * (t1 - t0), 1000 * (t2 - t1), 1000 * (time.perf_counter() - t0))

    @staticmethod
    def _prepare(enc, it: Input, decoded: Callable[[str, Any], None] | None):
        seen = None if decoded is None else (lambda img, item_id=it.id: decoded(item_id, img))
        return enc.prepare_input(it.content, it.id, seen)

    # -- heads ------------------------------------------------------------------------------------
    def list_heads(self) -> list[dict[str, Any]]:
        out = [{"name": IMAGENET_HEAD, "kind": "imagenet", "backbone": self.config.default_backbone,
                "classes": [], "available": True, "error": ""}]
        for name, e in sorted(self.heads.entries().items()):
            out.append({"name": name, "kind": e.head.kind if e.head else "",
                        "backbone": e.public_backbone(), "classes": e.head.classes if e.head else [],
                        "available": e.head is not None, "error": e.error})
        return out

    def classify(self, inputs: Sequence[Input], head: str = IMAGENET_HEAD,
                 top_k: int = 5, abstain_below: float | None = None,
                 deadline: float | None = None, max_ood: float | None = None):
        from classifiers.heads.classify import classify_embeddings
        from classifiers.heads.imagenet import ImageNetHead

        head = head or IMAGENET_HEAD
        top_k = top_k or 5
        for n, it in enumerate(inputs):
            valid_text(it.id, f"the id of input #{n}", MAX_TEXT_ID_BYTES)
        for name, value in (("abstain_below", abstain_below), ("max_ood_score", max_ood)):
            if value is not None and not 0.0 <= value <= 1.0:  # before the model runs
                raise InvalidInputError(f"{name} must be in [0, 1], got {value}")
        if head == IMAGENET_HEAD:
            with self.models.lease() as runner:
                check_fit(inputs, runner.encoder.modality, f"{runner.name} (head {head!r})")
                h = ImageNetHead.from_backbone(runner.encoder.backbone)
                emb, timing = self.embed(inputs, runner.name, runner.encoder.default_tap, False,
                                         deadline)
        else:
            h = self.heads.get(head)
            with self.models.lease(h.provenance["backbone"]) as runner:
                check_encoder(runner.encoder, h.provenance, f"head {head!r}")
                check_fit(inputs, runner.encoder.modality, f"{runner.name} (head {head!r})")
                emb, timing = self.embed(inputs, runner.name, h.provenance["tap"],
                                         h.provenance["normalized"], deadline)
                emb = h.inputs(emb)  # projected, for a head of a projected store
        answers = classify_embeddings(h, emb, min(top_k, len(h.classes)), abstain_below, max_ood)
        if head != IMAGENET_HEAD:
            self.drift_monitor.record(head, h, emb.vectors)
        cut = set(emb.truncated)
        return [{"id": a.id, "label": a.label, "probability": a.probability, "top": list(a.top),
                 "ood_score": a.ood_score, "abstained": bool(a.abstained),
                 "truncated": a.id in cut} for a in answers], timing

    # -- indexes ----------------------------------------------------------------------------------
    def list_indexes(self) -> list[dict[str, Any]]:
        out = []
        for name in self.collections.names():
            c = self.collections.get(name)
            out.append({"name": name, "kind": c.kind, "backbone": c.binding["backbone"],
                        "count": c.count})
        return out

    def search(self, index: str, query: Input | None = None,
               vector: Sequence[float] | None = None, k: int = 10,
               where: dict[str, str] | None = None, deadline: float | None = None):
        coll = self.collections.get(index)
        if (query is None) == (vector is None):
            raise InvalidInputError("a search needs exactly one of image, text or vector")
        if not 1 <= (k or 10) <= 10_000:
            raise InvalidInputError(f"k must be in [1, 10000], got {k}")
        if query is not None:
            check_fit([query], modality_of(coll.binding), f"{coll.binding['backbone']} (index "
                                                          f"{index!r})")
            emb, _ = self.embed([query], coll.binding["backbone"], coll.binding.get("tap") or "",
                                True, deadline)
            q = _as_stored(coll.projection, coll.binding, emb, index).vectors
        else:
            q = unit_vectors(vector, int(coll.binding["dim"]), ["query"])
        return [(i, s, readable(m)) for i, s, m in coll.search(q, k or 10, dict(where or {}))]

    def upsert(self, index: str, items: Sequence[dict[str, Any]],
               deadline: float | None = None, dimensions: int | None = None
               ) -> tuple[list[int], int]:
        """Items: {"id": int | None, "image": bytes | None, "text": str | None,
        "vector": list | None, "metadata"}. Everything is validated and embedded before anything
        is written; returns the ids used (assigned where an item has none) and the collection's
        new count. A text is kept as the item's ``text`` metadata (returned with hits); an
        image, as a thumbnail. ``dimensions``: a new index's, by one of the server's
        projections (kept with it); an existing index's own."""
        self._check_writable()
        if not items:
            raise InvalidInputError("the request has no items")
        valid_name(index, "index name")
        ids = [it.get("id") for it in items]
        valid_ids(ids, distinct=True)
        names = [f"#{n}" if i is None else f"#{n} (id {i})" for n, i in enumerate(ids)]
        for n, it in enumerate(items):
            if sum(it.get(k) is not None for k in ("image", "text", "vector")) != 1:
                raise InvalidInputError(f"item {names[n]} needs exactly one of image, text or vector")
        embedded = [n for n, it in enumerate(items) if it.get("vector") is None]
        inputs = [Input(names[n], items[n].get("image"), items[n].get("text")) for n in embedded]
        modality = modality_of_inputs(inputs, "items")
        check_count(len(items), modality, self.config, "items")
        existing = self.collections.find(index)  # a new one is created only when written
        if existing is not None:
            binding, projection = existing.binding, existing.projection
            if dimensions not in (None, int(binding["dim"])):
                raise InvalidInputError(f"index {index!r} holds {binding['dim']}-d vectors; "
                                        f"dimensions {dimensions} names another (a new index "
                                        f"takes it)")
        else:
            with self.models.lease(self.config.default_for(modality)) as runner:
                binding, projection = runner.encoder.binding(), None
            if dimensions not in (None, int(binding["dim"])):
                projection, binding = self.projections.find(binding, dimensions)
        dim = int(binding["dim"])
        rows: list[np.ndarray | None] = [None] * len(items)
        for n, it in enumerate(items):
            if it.get("vector") is not None:
                rows[n] = unit_vectors(it["vector"], dim, [names[n]])[0]
        thumbs: dict[str, bytes] = {}  # rendered from the decode that makes each vector
        thumbnail = (lambda name, img: self.gallery.thumbnails.keep(thumbs, name, img)) \
            if self.config.thumbnail_size else None
        metadata = [dict(it.get("metadata") or {}) for it in items]
        if inputs:  # a bad input's error names it as "#position (id N)"
            check_fit(inputs, modality_of(binding), f"{binding['backbone']} (index {index!r})")
            emb, _ = self.embed(inputs, binding["backbone"], binding.get("tap") or "", True,
                                deadline, thumbnail)
            emb = _as_stored(projection, binding, emb, index)
            for n, vec in zip(embedded, emb.vectors):
                rows[n] = vec
                if items[n].get("text") is not None:
                    metadata[n]["text"] = items[n]["text"]
        used = self.collections.write(index, binding, lambda c: c.upsert(np.stack(rows), ids,
                                                                          metadata, names),
                                      projection)
        self.gallery.thumbnails.upserted(index, used, [thumbs.get(name) for name in names])
        return used, self.collections.get(index).count

    def delete(self, index: str, ids: Sequence[int]) -> tuple[int, int]:
        """Delete ``ids`` (absent ones ignored, each counted once): O(unique ids)."""
        self._check_writable()
        if len(ids) > self.config.max_items_per_request:
            raise TooLargeError(f"{len(ids)} ids in one delete; the limit is "
                                f"{self.config.max_items_per_request} (max_items_per_request)")
        valid_ids(ids)  # refuses a bool (JSON true) as an id
        unique = np.unique(np.asarray(ids, dtype=np.int64)).tolist()
        coll = self.collections.get(index)
        deleted = coll.delete(unique)
        self.gallery.thumbnails.deleted(index, unique)
        return deleted, coll.count

    def _check_writable(self) -> None:
        if self.config.role == "reader":
            raise FailedPreconditionError("this server is a read-only replica (role reader): "
                                          "send Upsert and Delete to the writer of its data dir")

    # -- info -------------------------------------------------------------------------------------
    def list_models(self) -> list[dict[str, Any]]:
        loaded = set(self.loaded_backbones())
        # no folders from clients: hf:<folder> and finetuned:RUN_DIR are not served
        rows = [{"name": e.name, "library": e.library, "dim": e.dim or 0,
                 "input_size": e.input_size or 0, "weights": e.weights_status(),
                 "loaded": e.name in loaded, "description": e.description, "family": e.family,
                 "modality": modality}
                for modality, e in listing() if not e.name.startswith(("finetuned:", "hf:"))]
        for run in self.data.runs():  # fine-tuned runs registered in the data dir, by name
            name = f"finetuned:{run}"
            rows.append({"name": name, "library": "embedsvc", "dim": 0, "input_size": 0,
                         "weights": "present", "loaded": name in loaded, "family": False,
                         "modality": "image",
                         "description": "a fine-tuned run registered in this server's data dir"})
        return rows

    def info(self) -> dict[str, Any]:
        """GetInfo: the server, its batching (settings and counts) and its request limits."""
        stats = self.batching_stats()
        with self.models.lease() as default:
            device = default.encoder.plan.describe()
        c = self.config
        b = c.batching
        return {"version": __version__, "device": device,
                "default_backbone": c.default_backbone,
                "default_text_encoder": c.default_text_encoder,
                "loaded_backbones": self.loaded_backbones(),
                "batching": {"max_batch_size": b.max_batch_size,
                             "max_batch_tokens": b.max_batch_tokens,
                             "max_queue_delay_ms": int(b.max_queue_delay_ms),
                             "max_queue_size": b.max_queue_size,
                             **{k: stats[k] for k in ("batches", "images", "largest_batch")}},
                "max_images_per_request": c.max_images_per_request,
                "max_texts_per_request": c.max_texts_per_request,
                "max_chars_per_text": c.max_chars_per_text,
                "max_tokens_per_request": c.max_tokens_per_request,
                "max_bytes_per_image": c.max_bytes_per_image,
                "max_pixels_per_image": c.max_pixels_per_image,
                "role": c.role, "snapshots": self.collections.snapshots()}

    def drift(self, head: str = "") -> list[dict[str, Any]]:
        """GetDrift: one head's drift report (NOT_FOUND for an unknown head), or every head's."""
        if head == IMAGENET_HEAD:  # no training sample of its own to compare with
            return [DriftReport(head, "no reference").to_dict()]
        if head:
            self.heads.get(head)  # unknown or unavailable: the same error Classify gives
        return [r.to_dict() for r in self.drift_monitor.reports(head or None)]

    def close(self) -> None:
        self.drift_monitor.close()
        self.admission.close()
        self.models.close()
        self.collections.close()
        self._release_writer_lock()


def _as_stored(projection, binding: dict[str, Any], emb: Embeddings, index: str) -> Embeddings:
    """``emb`` as a collection bound to ``binding`` holds vectors: projected by its
    ``projection`` (a projected collection; else None), and refused if made otherwise."""
    if projection is not None:
        emb = project_embeddings(emb, projection, binding)
    check_compatible(binding, emb.provenance, f"index {index!r}")
    return emb


def _result(future: Future, deadline: float) -> np.ndarray:
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except FutureTimeout:
        future.cancel()
        raise DeadlineExceededError("the deadline passed while waiting for the model") from None
