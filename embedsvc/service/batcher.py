"""Dynamic batching across concurrent requests, as Triton does it.

Requests put single preprocessed images on a bounded queue; one worker thread per model takes
the first waiting image, then keeps collecting until ``max_batch_size`` images or
``max_queue_delay_ms`` have passed, drops those whose deadline has expired, and runs them as
one batch. A full queue is refused at once (ResourceExhaustedError) instead of growing.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import DeadlineExceededError, ResourceExhaustedError, UnavailableError
from .config import BatchingConfig


@dataclass
class _Item:
    tensor: torch.Tensor
    deadline: float | None  # time.monotonic() value
    future: Future
    enqueued: float


class DynamicBatcher:
    def __init__(self, run_batch: Callable[[torch.Tensor], np.ndarray], config: BatchingConfig,
                 name: str = "model", on_batch: Callable[[str, int], None] | None = None):
        self.run_batch = run_batch
        self.on_batch = on_batch
        self.config = config
        self.name = name
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=config.max_queue_size)
        self._lock = threading.Lock()
        self.batch_sizes: Counter[int] = Counter()
        self.expired = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    # -- client side ------------------------------------------------------------------------------
    def submit(self, tensor: torch.Tensor, deadline: float | None = None) -> Future:
        item = _Item(tensor, deadline, Future(), time.monotonic())
        try:
            with self._lock:  # closed and put together: nothing lands behind the stop marker
                if self._closed:
                    raise UnavailableError(f"{self.name} is being unloaded; retry")
                self._queue.put_nowait(item)
        except queue.Full:
            raise ResourceExhaustedError(
                f"{self.name}: {self.config.max_queue_size} images already queued; retry later"
            ) from None
        return item.future

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def stats(self) -> dict[str, int]:
        with self._lock:
            sizes = dict(self.batch_sizes)
        return {"batches": sum(sizes.values()), "images": sum(k * v for k, v in sizes.items()),
                "largest_batch": max(sizes, default=0), "expired": self.expired}

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new work, finish what is queued, then stop the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:  # the worker is stuck; its daemon thread ends with the process
            return
        self._thread.join(timeout)

    # -- worker side ------------------------------------------------------------------------------
    def _collect(self, first: _Item) -> tuple[list[_Item], bool]:
        batch, stop = [first], False
        until = time.monotonic() + self.config.max_queue_delay_ms / 1000.0
        while len(batch) < self.config.max_batch_size:
            remaining = until - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            now = time.monotonic()
            live = []
            for item in batch:
                # first: a future its caller cancelled (its deadline passed while waiting) takes
                # no answer, and setting one would kill this thread
                if not item.future.set_running_or_notify_cancel():
                    continue
                if item.deadline is not None and item.deadline < now:
                    item.future.set_exception(DeadlineExceededError(
                        f"deadline passed after {1000 * (now - item.enqueued):.0f} ms in the queue"))
                    self.expired += 1
                else:
                    live.append(item)
            if live:
                self._run(live)
            if stop:
                return

    def _run(self, items: list[_Item]) -> None:
        try:
            out = self.run_batch(torch.stack([i.tensor for i in items]))
        except Exception as exc:  # the batch fails, the worker lives on
            for i in items:
                i.future.set_exception(exc)
            return
        with self._lock:
            self.batch_sizes[len(items)] += 1
        if self.on_batch is not None:
            self.on_batch(self.name, len(items))
        for i, row in zip(items, out):
            i.future.set_result(row)
