"""``embed-dataset --engine ray``: the same store, made on a Ray cluster.

Ray Data carries the work: the pending records, cut into the encoder's units of work (an image
batch; a text window sorted by length, as a local run sorts it), are read in CPU tasks (the
encoder's ``dataset_reader``: images decoded and preprocessed as locally, texts read) and
embedded in an actor pool (one actor per GPU, or N CPU actors, each loading the encoder once;
``embed_read``). The driver,
this process, holds the store's lock and commits the batches through ``store.append``, in input
order, as they stream back (``ShardAssembler``, as locally). So a store made on Ray and one made
locally are interchangeable: the same batches give the same vectors (bitwise on the CPU), the
same rows and provenance, and a killed run resumes after the last commit.

Every node needs embedsvc installed (with its weight packages); the store folder is written by
the driver only, so it need not be shared.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .embed_job import (EmbedDatasetConfig, EmbedReport, ShardAssembler, commit_unit,
                        interrupt_after_batch, open_extractor, progress_bar,
                        run_embed_job)
from .store import EmbeddingStore

INSTALL_HINT = "pip install 'embedsvc[ray]'"


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data ships in the [data] extra of ray
    except ImportError:
        raise InvalidInputError(f"--engine ray needs Ray Data: {INSTALL_HINT}") from None
    return ray


def embed_dataset_ray(src: str | Path, out: str | Path,
                      config: EmbedDatasetConfig = EmbedDatasetConfig(), progress: bool = True,
                      stop_after_shards: int | None = None, address: str | None = None,
                      actors: int | None = None) -> EmbedReport:
    """``embed_dataset`` on Ray: ``address`` of a running cluster (None: a local Ray instance
    for this run); ``actors`` embedding actors (None: one per GPU, else one per 4 CPUs)."""
    ray = import_ray()
    if actors is not None and actors < 1:
        raise InvalidInputError(f"actors must be >= 1, got {actors}")

    def embed_on_ray(fe, pending, store, report):
        with ray_session(address):  # the actors load the encoder this run chose
            _run(ray, pending, dataclasses.replace(config, backbone=fe.name), fe, store, report,
                 actors, progress)

    return run_embed_job(src, out, config, stop_after_shards, embed_on_ray)


@contextlib.contextmanager
def ray_session(address: str | None):
    """Ray, connected to the cluster at ``address`` (None: a local instance for this run,
    shut down after it) unless this process is already connected."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        _quiet_ray_logs()
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def _quiet_ray_logs() -> None:
    """Ray's own INFO/WARNING lines (execution plans, a note that its progress bars are off)
    would bury ours; errors still come through, and as exceptions."""
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _run(ray, pending, config: EmbedDatasetConfig, fe, store: EmbeddingStore,
         report: EmbedReport, actors: int | None, progress: bool) -> None:
    resources = ray.cluster_resources()
    gpu_allowed = config.device == "auto" or config.device.startswith("cuda")
    gpus = int(resources.get("GPU", 0)) if gpu_allowed else 0
    cpus = int(resources.get("CPU", 1))
    size = actors or gpus or max(1, cpus // 4)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # shards are committed in input order
    ctx.enable_progress_bars = False  # ours below counts inputs and their rate
    with warnings.catch_warnings():  # max_restarts goes through Ray's deprecated remote args
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = _pipeline(ray, pending, config, fe, size, max(1, cpus // size), gpus > 0)
    assembler = ShardAssembler(store, config, fe.row_keys)
    bar = progress_bar(len(pending), f"{fe.name} on ray ({size} actors)", progress, fe.unit)
    try:
        with interrupt_after_batch() as interrupted:
            for row in ds.iter_rows():
                pieces = json.loads(row["infos"])  # the unit's batches, in order
                vectors = np.frombuffer(row["vectors"], np.float32).reshape(-1, store.dim)
                at = 0
                for infos in pieces:
                    good = sum("error" not in i for i in infos)
                    commit_unit(store, assembler.add(infos, vectors[at:at + good]), report)
                    at += good
                    if bar is not None:
                        bar.update(len(infos))
                if interrupted.is_set():
                    break
            commit_unit(store, assembler.flush(), report)
    finally:
        if bar is not None:
            bar.close()


def _pipeline(ray, pending, config: EmbedDatasetConfig, fe, size: int, threads: int, on_gpu: bool):
    """Units of records → read tasks → an actor pool of ``size`` embedders. ``threads``:
    torch's thread count changes the CPU kernels' summation order, so each actor gets its share
    of the cores, which on one machine with one actor is what a local run uses (bitwise equal)."""
    n = fe.dataset_window
    units = [{"records": json.dumps([r.to_dict() for r in pending[i:i + n]])}
             for i in range(0, len(pending), n)]
    return (ray.data.from_items(units, override_num_blocks=min(len(units), 200))
            .map(_read_unit, num_cpus=1, fn_kwargs={"read": fe.dataset_reader()})
            # max_restarts=0: a lost actor fails the run, which then resumes at the first
            # uncommitted batch (and Ray logs no error line about restarting actors)
            .map_batches(_Embedder, batch_size=1, max_restarts=0,
                         fn_constructor_kwargs={"config": config, "threads": threads},
                         compute=ray.data.ActorPoolStrategy(size=size),
                         num_gpus=1 if on_gpu else 0, num_cpus=0 if on_gpu else 1))


def _read_unit(item: dict[str, Any], read) -> dict[str, Any]:
    """A Ray task: one unit of records → their rows and the encoder's inputs (as bytes)."""
    infos, payload = read(json.loads(item["records"]))
    return {"infos": json.dumps(infos), "payload": payload}


class _Embedder:
    """A Ray actor: loads the encoder once, then embeds one unit per call."""

    def __init__(self, config: EmbedDatasetConfig, threads: int):
        import torch

        torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS=1 in its workers
        self.fe = open_extractor(config)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        infos_out, vectors_out = [], []
        for infos, payload in zip(batch["infos"], batch["payload"]):
            pieces = self.fe.embed_read(json.loads(infos), bytes(payload))
            infos_out.append(json.dumps([i for i, _ in pieces]))
            vectors_out.append(b"".join(np.ascontiguousarray(v, np.float32).tobytes()
                                        for _, v in pieces))
        return {"infos": np.array(infos_out, dtype=object),
                "vectors": np.array(vectors_out, dtype=object)}
