"""Decoding ahead of the model: batches of decoded items, in threads when that pays.

Threads rather than processes: PIL's decoders and resampling release the GIL, so threads overlap
with the model without pickling every image tensor between processes (on 2 cores, DataLoader
worker processes were slower still). The decode work itself calls no torch kernel that runs an
OpenMP team (see preprocess.py): a team per decode thread would spin on the model's cores.

Whether threads pay depends on what an image costs to decode next to what the model costs:

- on a GPU the CPU is otherwise idle: always threads;
- on the CPU the model already uses every core, and a decode thread preempts one of its OpenMP
  threads, so the whole batch waits for the straggler. Measured on 2 cores: 28-px PNGs (decode
  ~1/10 of the model's time) ran at 0.86 of the model's rate inline and 0.73 with 2 threads;
  500-1200 px JPEG photos (decode ~1/2 of it) ran at 0.50 inline and 0.68 with 2 threads. So
  ``workers=None`` on the CPU times the first batches inline and moves to threads only when
  decoding costs more than ``THREADS_ABOVE`` of the model's time.
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
    """Threads worth running beside the model when decoding is worth threading at all."""
    cores = os.cpu_count() or 1
    if device_type == "cuda":
        return max(1, min(8, cores - 1))
    return max(2, min(4, cores // 4))


def decoded_batches(load: Callable[[int], T], n: int, batch_size: int, workers: int | None,
                    device_type: str = "cpu") -> Iterator[list[tuple[int, T]]]:
    """Yield ``[(i, load(i)) for i in batch]`` for consecutive batches of range(n), in order.

    ``workers``: decode threads (0: inline in the caller's thread); None decides as the module
    docstring says. The time the caller spends between two batches is the model's time.
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
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        ahead = deque(pool.submit(fetch, b) for b in islice(batches, 2 * workers))
        while ahead:
            items = ahead.popleft().result()
            nxt = next(batches, None)
            if nxt is not None:
                ahead.append(pool.submit(fetch, nxt))
            yield items


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
