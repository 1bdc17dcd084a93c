"""The service core: everything the gRPC servicer does, with no gRPC in it.

It owns the loaded backbones (an LRU of them, each with dynamic batchers), the heads found in
``data_dir/heads`` (rescanned when the folder changes, so a new head needs no restart) and the
request limits. The servicer only converts messages and maps errors to status codes.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import __version__
from ..backbones import Backbone, create_backbone, list_backbones, resolve
from ..backbones.base import PRE_LOGITS
from ..embeddings import Embeddings
from ..errors import IncompatibleError, InvalidInputError, NotFoundError
from ..extract import ExtractConfig, FeatureExtractor
from ..images import load_image
from .batcher import DynamicBatcher
from .collections import Collections
from .config import ServeConfig
from .metrics import ServiceMetrics

IMAGENET_HEAD = "imagenet"


@dataclass(frozen=True)
class Timing:
    queue_ms: float
    inference_ms: float
    total_ms: float


class ModelRunner:
    """One backbone on its device, with one dynamic batcher per layer tap. Batches produce raw
    (un-normalised) features; each request normalises its own rows if it asked to."""

    def __init__(self, backbone: Backbone, config: ServeConfig, metrics: ServiceMetrics):
        self.backbone = backbone
        self.config = config
        self.metrics = metrics
        self.extractor = FeatureExtractor(backbone, ExtractConfig(
            normalize=False, device=config.device, max_pixels=config.max_pixels_per_image))
        self._batchers: dict[str, DynamicBatcher] = {}
        self._lock = threading.Lock()

    def batcher(self, tap: str) -> DynamicBatcher:
        if tap not in self.backbone.cfg.taps:
            raise InvalidInputError(f"backbone {self.backbone.name!r} has no layer tap {tap!r}; "
                                    f"available: {', '.join(self.backbone.cfg.taps)}")
        with self._lock:
            if tap not in self._batchers:
                self._batchers[tap] = DynamicBatcher(
                    lambda x, tap=tap: self.extractor.embed_tensor(x, tap=tap, normalize_output=False),
                    self.config.batching, name=f"{self.backbone.name}/{tap}",
                    on_batch=self.metrics.observe_batch)
            return self._batchers[tap]

    def decode(self, item_id: str, data: bytes):
        if len(data) > self.config.max_bytes_per_image:
            raise InvalidInputError(f"image {item_id!r} is {len(data)} bytes; the limit is "
                                    f"{self.config.max_bytes_per_image}")
        return self.extractor.transform(load_image(data, item_id, self.config.max_pixels_per_image))

    def stats(self) -> dict[str, int]:
        total = {"batches": 0, "images": 0, "largest_batch": 0, "expired": 0, "queue_depth": 0}
        with self._lock:
            batchers = list(self._batchers.values())
        for b in batchers:
            s = b.stats()
            total["batches"] += s["batches"]
            total["images"] += s["images"]
            total["expired"] += s["expired"]
            total["largest_batch"] = max(total["largest_batch"], s["largest_batch"])
            total["queue_depth"] += b.queue_depth
        return total

    def close(self) -> None:
        with self._lock:
            batchers = list(self._batchers.values())
        for b in batchers:
            b.close()


class EmbeddingCore:
    def __init__(self, config: ServeConfig):
        self.config = config
        self.data_dir = Path(config.data_dir)
        self._runners: OrderedDict[str, ModelRunner] = OrderedDict()
        self._runners_lock = threading.Lock()
        self._heads: dict[str, Any] = {}
        self._heads_stamp: tuple | None = None
        self._heads_lock = threading.Lock()
        self.metrics = ServiceMetrics()
        self.metrics.watch_queue(self.queue_depth)
        self.started = time.time()
        self.runner(config.default_backbone)  # load the default at start, fail fast if missing
        self.collections = Collections(self.data_dir / "indexes")

    # -- backbones --------------------------------------------------------------------------------
    def runner(self, name: str | None = None) -> ModelRunner:
        name = name or self.config.default_backbone
        with self._runners_lock:
            if name in self._runners:
                self._runners.move_to_end(name)
                return self._runners[name]
        resolve(name)  # NotFoundError with the list of names, before any loading
        runner = ModelRunner(create_backbone(name), self.config, self.metrics)
        evicted = []
        with self._runners_lock:
            if name in self._runners:  # another request loaded it meanwhile
                runner = self._runners[name]
            else:
                self._runners[name] = runner
            while len(self._runners) > self.config.max_loaded_backbones:
                _, old = self._runners.popitem(last=False)
                evicted.append(old)
        for old in evicted:
            old.close()
        return runner

    def batching_stats(self) -> dict[str, int]:
        """Batcher statistics summed over the loaded backbones (largest_batch: the maximum)."""
        with self._runners_lock:
            runners = list(self._runners.values())
        total = {"batches": 0, "images": 0, "largest_batch": 0, "queue_depth": 0}
        for r in runners:
            s = r.stats()
            for key in ("batches", "images", "queue_depth"):
                total[key] += s[key]
            total["largest_batch"] = max(total["largest_batch"], s["largest_batch"])
        return total

    def queue_depth(self) -> int:
        return self.batching_stats()["queue_depth"]

    def loaded_backbones(self) -> list[str]:
        with self._runners_lock:
            return list(self._runners)

    # -- embedding --------------------------------------------------------------------------------
    def _check_count(self, n: int) -> None:
        if n == 0:
            raise InvalidInputError("the request has no images")
        if n > self.config.max_images_per_request:
            raise InvalidInputError(f"{n} images in one request; the limit is "
                                    f"{self.config.max_images_per_request}")

    def embed(self, images: Sequence[tuple[str, bytes]], backbone: str | None = None,
              tap: str = "", normalize: bool = True,
              deadline: float | None = None) -> tuple[Embeddings, Timing]:
        """Decode every image first (a bad one fails the request before any model time), then
        queue them on the backbone's batcher and wait for their rows."""
        t0 = time.perf_counter()
        self._check_count(len(images))
        runner = self.runner(backbone)
        tap = tap or PRE_LOGITS
        batcher = runner.batcher(tap)
        tensors = [runner.decode(item_id, data) for item_id, data in images]
        t1 = time.perf_counter()
        futures: list[Future] = [batcher.submit(t, deadline) for t in tensors]
        rows = [f.result() for f in futures]
        t2 = time.perf_counter()
        vectors = np.stack(rows).astype(np.float32)
        if normalize:
            vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        provenance = {**runner.backbone.cfg.provenance(), "tap": tap, "normalized": normalize,
                      "dim": int(vectors.shape[1])}
        emb = Embeddings(vectors, tuple(i for i, _ in images), provenance)
        return emb, Timing(1000 * (t1 - t0), 1000 * (t2 - t1), 1000 * (time.perf_counter() - t0))

    # -- heads ------------------------------------------------------------------------------------
    def _scan_heads(self) -> dict[str, Any]:
        """Heads in data_dir/heads/NAME, reloaded when the folder's contents change."""
        from classifiers.heads import Head

        root = self.data_dir / "heads"
        entries = sorted(root.glob("*/head.json")) if root.is_dir() else []
        stamp = tuple((str(p), p.stat().st_mtime_ns) for p in entries)
        with self._heads_lock:
            if stamp != self._heads_stamp:
                heads = {}
                for p in entries:
                    try:
                        heads[p.parent.name] = Head.load(p.parent)
                    except Exception:  # one broken head must not hide the others
                        continue
                self._heads, self._heads_stamp = heads, stamp
            return dict(self._heads)

    def list_heads(self) -> list[dict[str, Any]]:
        out = [{"name": IMAGENET_HEAD, "kind": "imagenet", "backbone": self.config.default_backbone,
                "classes": []}]
        for name, head in sorted(self._scan_heads().items()):
            out.append({"name": name, "kind": head.kind, "backbone": head.provenance["backbone"],
                        "classes": head.classes})
        return out

    def classify(self, images: Sequence[tuple[str, bytes]], head: str = IMAGENET_HEAD,
                 top_k: int = 5, abstain_below: float | None = None,
                 deadline: float | None = None):
        from classifiers.heads.classify import classify_embeddings
        from classifiers.heads.imagenet import ImageNetHead

        head = head or IMAGENET_HEAD
        top_k = top_k or 5
        if head == IMAGENET_HEAD:
            runner = self.runner(self.config.default_backbone)
            h = ImageNetHead.from_backbone(runner.backbone)
            emb, timing = self.embed(images, runner.backbone.name, PRE_LOGITS, False, deadline)
        else:
            heads = self._scan_heads()
            if head not in heads:
                raise NotFoundError(f"no head named {head!r}; available: "
                                    f"{', '.join([IMAGENET_HEAD, *sorted(heads)])}")
            h = heads[head]
            runner = self.runner(h.provenance["backbone"])
            if runner.backbone.cfg.weights_sha256 != h.provenance["weights_sha256"]:
                raise IncompatibleError(
                    f"head {head!r} was trained on {h.provenance['backbone']} weights "
                    f"{h.provenance['weights_sha256'][:12]}…, the server has "
                    f"{runner.backbone.cfg.weights_sha256[:12]}…")
            emb, timing = self.embed(images, runner.backbone.name, h.provenance["tap"],
                                     h.provenance["normalized"], deadline)
        answers = classify_embeddings(h, emb, min(top_k, len(h.classes)), abstain_below)
        return [{"id": a.id, "label": a.label, "probability": a.probability, "top": list(a.top),
                 "ood_score": a.ood_score, "abstained": a.abstained} for a in answers], timing

    # -- indexes ----------------------------------------------------------------------------------
    def _binding(self, backbone: str | None = None) -> dict[str, Any]:
        runner = self.runner(backbone)
        return {**runner.backbone.cfg.provenance(), "tap": PRE_LOGITS, "normalized": True}

    def list_indexes(self) -> list[dict[str, Any]]:
        out = []
        for name in self.collections.names():
            c = self.collections.get(name)
            out.append({"name": name, "kind": c.index.plan.kind, "backbone": c.binding["backbone"],
                        "count": c.count})
        return out

    def _query_vector(self, values: Sequence[float], dim: int) -> np.ndarray:
        q = np.asarray(values, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != dim:
            raise InvalidInputError(f"the index holds {dim}-d vectors; got {q.shape[1]} values")
        norm = float(np.linalg.norm(q))
        if not np.isfinite(q).all() or norm == 0.0:
            raise InvalidInputError("query vector must be finite and non-zero")
        return q / norm

    def search(self, index: str, image: tuple[str, bytes] | None = None,
               vector: Sequence[float] | None = None, k: int = 10,
               where: dict[str, str] | None = None, deadline: float | None = None):
        coll = self.collections.get(index)
        if (image is None) == (vector is None):
            raise InvalidInputError("a search needs exactly one of image or vector")
        if not 1 <= (k or 10) <= 10_000:
            raise InvalidInputError(f"k must be in [1, 10000], got {k}")
        if image is not None:
            emb, _ = self.embed([image], coll.binding["backbone"], PRE_LOGITS, True, deadline)
            coll.check(emb.provenance)
            q = emb.vectors
        else:
            q = self._query_vector(vector, int(coll.binding["dim"]))
        return coll.search(q, k or 10, dict(where or {}))

    def upsert(self, index: str, items: Sequence[dict[str, Any]],
               deadline: float | None = None) -> tuple[int, int]:
        """Items: {"id", "image": bytes | None, "vector": list | None, "metadata": dict}.
        Everything is validated and embedded before anything is written."""
        self._check_count(len(items))
        ids = [int(it["id"]) for it in items]
        if len(set(ids)) != len(ids):
            raise InvalidInputError("an Upsert names the same id twice")
        binding = self._binding()
        coll = self.collections.get_or_create(index, binding) if index else None
        if coll is None:
            raise InvalidInputError("Upsert needs an index name")
        dim = int(coll.binding["dim"])
        rows: list[np.ndarray | None] = [None] * len(items)
        images = [(str(it["id"]), it["image"]) for it in items if it.get("image") is not None]
        if images:
            emb, _ = self.embed(images, coll.binding["backbone"], PRE_LOGITS, True, deadline)
            coll.check(emb.provenance)
            by_id = dict(zip(emb.ids, emb.vectors))
            rows = [by_id.get(str(it["id"])) for it in items]
        for n, it in enumerate(items):
            if it.get("vector") is not None:
                rows[n] = self._query_vector(it["vector"], dim)[0]
            if rows[n] is None:
                raise InvalidInputError(f"item {it['id']} has neither image nor vector")
        coll.upsert(np.array(ids, dtype=np.int64), np.stack(rows),
                    [dict(it.get("metadata") or {}) for it in items])
        return len(items), coll.count

    def delete(self, index: str, ids: Sequence[int]) -> tuple[int, int]:
        coll = self.collections.get(index)
        return coll.delete(np.asarray(list(ids), dtype=np.int64)), coll.count

    # -- info -------------------------------------------------------------------------------------
    def list_models(self) -> list[dict[str, Any]]:
        loaded = set(self.loaded_backbones())
        return [{"name": e.name, "library": e.library, "dim": e.dim or 0,
                 "input_size": e.input_size or 0, "weights": e.weights_status(),
                 "loaded": e.name in loaded, "description": e.description}
                for e in list_backbones()]

    def info(self) -> dict[str, Any]:
        stats = self.batching_stats()
        default = self.runner(self.config.default_backbone)
        return {"version": __version__, "device": default.extractor.plan.describe(),
                "default_backbone": self.config.default_backbone,
                "loaded_backbones": self.loaded_backbones(),
                "batching": {k: stats[k] for k in ("batches", "images", "largest_batch")}}

    def close(self) -> None:
        with self._runners_lock:
            runners = list(self._runners.values())
        for r in runners:
            r.close()
