"""Decoding for the model: batches of decoded items, on threads when that pays.

Threads rather than processes: PIL's decoders and resampling release the GIL, so threads decode
in parallel without pickling every image tensor between processes (on 2 cores, DataLoader worker
processes were slower still). The decode work itself calls no torch kernel that runs an OpenMP
team (see preprocess.py): a team per decode thread would spin on the model's cores.

Where the threads run depends on the device:

- **CUDA: ahead of the model.** The CPU is otherwise idle while the GPU computes, so threads
  decode the next batches while the model runs the current one.
- **CPU: in bursts.** The model already uses every core, and a decode thread running beside it
  preempts one of its OpenMP threads, so the whole batch waits for the straggler. So each batch
  is decoded on all cores while the model waits, then the model runs alone. Measured on 2
  cores, effnet-lite0, 300 JPEG photos of 500-1200 px, the schedules interleaved in one process
  (median of 5-8 rounds, the machine's rate varying by +-20% between rounds): decoding inline
  0.64 of the model-only rate, threads ahead of the model 0.74, bursts 0.79; inside
  ``embed_dataset`` (which also reads, hashes and stores) ahead 0.71, bursts 0.73.

  A burst costs a thread hand-off per image, which is not worth it when an image is cheap to
  decode (28-px PNGs: ~1/10 of the model's time), so ``workers=None`` on the CPU times the first
  batches inline and bursts only when decoding costs more than ``THREADS_ABOVE`` of the model's
  time.
"""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

THREADS_ABOVE = 0.25  # decode time / model time beyond which CPU decoding moves to threads
PROBE_BATCHES = 2  # batches timed inline before deciding


def decode_threads(device_type: str) -> int:
    """Decode threads worth running: beside a GPU, every core but the one feeding it; on the
    CPU, every core (bursts run while the model waits)."""
    cores = os.cpu_count() or 1
    if device_type == "cuda":
        return max(1, min(8, cores - 1))
    return cores


def decoded_batches(load: Callable[[int], T], n: int, batch_size: int, workers: int | None,
                    device_type: str = "cpu") -> Iterator[list[tuple[int, T]]]:
    """Yield ``[(i, load(i)) for i in batch]`` for consecutive batches of range(n), in order.

    ``workers``: decode threads (0: inline in the caller's thread), ahead of the model on CUDA and
    in bursts on the CPU; None decides as the module docstring says. The time the caller spends
    between two batches is the model's time.
    """
    batches = (range(i, min(i + batch_size, n)) for i in range(0, n, batch_size))
    fetch = lambda idx: [(i, load(i)) for i in idx]  # noqa: E731
    if workers is None:
        if device_type == "cuda":
            workers = decode_threads(device_type)
        else:
            workers = yield from _probe(fetch, batches, device_type)
    if workers == 0:
        yield from map(fetch, batches)
    elif device_type == "cuda":
        yield from _ahead(fetch, batches, workers)
    else:
        yield from _bursts(load, batches, workers)


def _ahead(fetch, batches, workers: int):
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        ahead = deque(pool.submit(fetch, b) for b in islice(batches, 2 * workers))
        while ahead:
            items = ahead.popleft().result()
            nxt = next(batches, None)
            if nxt is not None:
                ahead.append(pool.submit(fetch, nxt))
            yield items


def _bursts(load, batches, workers: int):
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        for idx in batches:
            yield list(zip(idx, pool.map(load, idx)))


def _probe(fetch, batches, device_type: str):
    """Decode the first batches inline, timing decoding against the caller's (model) time;
    return the worker count for the rest."""
    decode_s = model_s = 0.0
    for _ in range(PROBE_BATCHES):
        b = next(batches, None)
        if b is None:
            return 0
        t0 = time.perf_counter()
        items = fetch(b)
        t1 = time.perf_counter()
        yield items
        decode_s, model_s = decode_s + t1 - t0, model_s + time.perf_counter() - t1
    return decode_threads(device_type) if decode_s > THREADS_ABOVE * model_s else 0
