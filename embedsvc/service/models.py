"""The encoders (image backbones, text encoders) a server has loaded: an LRU of ModelRunners, each
leased while a request uses it.

Eviction only takes a runner out of the LRU; its batchers are closed when the last request that
leased it lets go, so a request whose backbone is evicted mid-way still gets its answer.

Clients name encoders; they never name files. ``finetuned:NAME`` means the run registered as
``DATA_DIR/backbones/NAME`` (``embedsvc finetune --register``); any other ``finetuned:`` form is
refused, as is ``hf:<folder>``, and no error detail carries a server path.
"""
from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

from ..backbones import Backbone, create_backbone
from ..encoders import EncodeOptions, modality_of_name, open_encoder
from ..text.catalog import HF_PREFIX, list_text_encoders
from ..runs import PREFIX as FINETUNED, RUN_JSON, canonical_name
from .datadir import DataDir, valid_name
from ..errors import InvalidInputError, NotFoundError, WeightsNotFoundError
from ..extract import ExtractConfig, FeatureExtractor
from .batcher import DynamicBatcher
from .config import ServeConfig
from .metrics import ServiceMetrics


class ModelRunner:
    """One encoder on its device, with one dynamic batcher per layer tap. Batches produce raw
    (un-normalised) features; each request normalises its own rows if it asked to."""

    def __init__(self, encoder, config: ServeConfig, metrics: ServiceMetrics):
        self.encoder = encoder
        self.config = config
        self.metrics = metrics
        self._batchers: dict[str, DynamicBatcher] = {}
        self._lock = threading.Lock()
        self.leases = 0  # guarded by the pool's lock
        self.evicted = False

    @property
    def name(self) -> str:
        return self.encoder.name

    def batcher(self, tap: str) -> DynamicBatcher:
        if tap not in self.encoder.taps:
            raise InvalidInputError(f"model {self.name!r} has no layer tap {tap!r}; "
                                    f"available: {', '.join(self.encoder.taps)}")
        with self._lock:
            if tap not in self._batchers:
                packs = self.encoder.packs_inputs  # inputs of mixed lengths without padding
                self._batchers[tap] = DynamicBatcher(
                    lambda x, tap=tap: self.encoder.encode(x, tap),
                    self.encoder.collate_packed if packs else self.encoder.collate,
                    self.config.batching, name=f"{self.name}/{tap}",
                    on_batch=self.metrics.observe_batch, packed=packs)
            return self._batchers[tap]

    def stats(self) -> dict[str, int]:
        total = {"batches": 0, "images": 0, "largest_batch": 0, "queue_depth": 0}
        with self._lock:
            batchers = list(self._batchers.values())
        for b in batchers:
            s = b.stats()
            total["batches"] += s["batches"]
            total["images"] += s["images"]
            total["largest_batch"] = max(total["largest_batch"], s["largest_batch"])
            total["queue_depth"] += b.queue_depth
        return total

    def close(self) -> None:
        with self._lock:
            batchers = list(self._batchers.values())
        for b in batchers:
            b.close()


def _in_passing_thread(fn, *args):
    """``fn(*args)`` run in a thread that ends with it. Loading a model runs torch's parallel
    regions, and libgomp gives every thread that opens one a team of workers that lives as long
    as the thread: left in a long-lived request thread, that team counts against the cores, and
    past one thread per core libgomp stops spinning between regions, so the batcher's own team
    sleeps and wakes around every op: minilm-l6 served to 16 clients kept 1.65 of 2 cores busy,
    1.94 once models loaded here (bench/text_throughput.py)."""
    with ThreadPoolExecutor(1, thread_name_prefix="model-load") as once:  # its thread ends here
        return once.submit(fn, *args).result()


class ModelPool:
    def __init__(self, config: ServeConfig, data: DataDir, metrics: ServiceMetrics):
        self.config = config
        self.data = data
        self.metrics = metrics
        self._runners: OrderedDict[str, ModelRunner] = OrderedDict()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lease(self, name: str | None = None) -> Iterator[ModelRunner]:
        """The runner for ``name``, loaded if needed, kept open until the block ends."""
        runner = self._acquire(name or self.config.default_backbone)
        try:
            yield runner
        finally:
            with self._lock:
                runner.leases -= 1
                close = runner.evicted and runner.leases == 0
            if close:
                runner.close()

    def _acquire(self, name: str) -> ModelRunner:
        with self._lock:
            runner = self._runners.get(name)
            if runner is not None:
                self._runners.move_to_end(name)
                runner.leases += 1
                return runner
        loaded = ModelRunner(_in_passing_thread(self._load, name), self.config, self.metrics)
        to_close = []
        with self._lock:
            runner = self._runners.setdefault(name, loaded)  # another request may have won
            if runner is not loaded:
                to_close.append(loaded)
            self._runners.move_to_end(name)
            runner.leases += 1
            while len(self._runners) > self.config.max_loaded_backbones:
                _, old = self._runners.popitem(last=False)
                old.evicted = True
                if old.leases == 0:
                    to_close.append(old)
        for r in to_close:
            r.close()
        return runner

    def _load(self, name: str):
        """The encoder ``name`` names, ready to serve: batches give raw features."""
        prefix, sep, rest = name.partition(":")
        if sep and prefix == HF_PREFIX:
            raise InvalidInputError(f"a server serves text encoders by name ("
                                    f"{', '.join(e.name for e in list_text_encoders() if not e.family)}"
                                    f"), never a folder")
        if sep and prefix == FINETUNED:
            return self._load_finetuned(rest)
        try:
            if modality_of_name(name) == "text":  # NotFoundError listing the valid names
                return open_encoder(name, options=EncodeOptions(
                    normalize=False, device=self.config.device,
                    runtime=self.config.runtime_for(name, "text")))
            return self._image_encoder(create_backbone(name))
        except WeightsNotFoundError:  # its message names server paths: say less
            raise NotFoundError(f"model {name!r}: its weights are not installed on this server")

    def _image_encoder(self, backbone: Backbone) -> FeatureExtractor:
        c = self.config
        fe = FeatureExtractor(backbone, ExtractConfig(
            normalize=False, device=c.device, max_pixels=c.max_pixels_per_image,
            decode=c.decode, runtime=c.runtime_for(backbone.name)))
        if fe.plan.device.type == "cuda":  # every batch shape built before serving
            fe.warm_up(c.batching.max_batch_size)
        return fe

    def _load_finetuned(self, run: str):
        from ..backbones.finetuned import build_finetuned
        from ..runs import read_run, run_modality

        try:
            valid_name(run, "fine-tuned backbone")
        except InvalidInputError:
            raise InvalidInputError(
                f"a server serves fine-tuned backbones by name, finetuned:NAME, as registered in "
                f"its data dir (embedsvc finetune ... --register DATA_DIR); got {run[:80]!r}") from None
        run_dir = self.data.backbones / run
        if not (run_dir / RUN_JSON).is_file():
            raise NotFoundError(f"no fine-tuned backbone named {run!r}; registered: "
                                f"{', '.join(self.data.runs()) or 'none'}")
        # the name clients use, not the server's path (provenance is sent back to them)
        served = f"{FINETUNED}:{run}"
        if run_modality(read_run(run_dir)) == "text":
            from ..text.encoder import TextEncoder
            from ..text.folder import read_folder

            return TextEncoder(read_folder(served, run_dir), self.config.device, normalize=False,
                               runtime=self.config.runtime_for(served, "text"))
        backbone = build_finetuned(canonical_name(run_dir))
        backbone.cfg = backbone.cfg.replace(name=served, weights_path=Path(run_dir).name)
        return self._image_encoder(backbone)

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._runners)

    def runners(self) -> list[ModelRunner]:
        with self._lock:
            return list(self._runners.values())

    def close(self) -> None:
        with self._lock:
            runners = list(self._runners.values())
            self._runners.clear()
        for r in runners:
            r.close()
