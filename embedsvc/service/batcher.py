"""Dynamic batching across concurrent requests, as Triton does it.

Requests put single prepared inputs (an image's tensor, a text's tokens) on a bounded queue; one
worker thread per model takes the first waiting input, then keeps collecting until
``max_batch_size`` inputs, ``max_batch_tokens`` (the batch's cost padded to its costliest input:
tokens for text, 1 per image), or ``max_queue_delay_ms`` have passed, drops those whose deadline
has expired, and runs them as one batch (``collate``, then ``run_batch``). An input that does
not fit the batch being formed opens the next one. A full queue is refused at once
(ResourceExhaustedError) instead of growing. The batcher knows nothing of modality.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DeadlineExceededError, ResourceExhaustedError, UnavailableError
from .config import BatchingConfig


@dataclass
class _Item:
    prepared: Any
    cost: int
    deadline: float | None  # time.monotonic() value
    future: Future
    enqueued: float


class DynamicBatcher:
    def __init__(self, run_batch: Callable[[Any], np.ndarray],
                 collate: Callable[[Sequence[Any]], Any], config: BatchingConfig,
                 name: str = "model", on_batch: Callable[[str, int], None] | None = None):
        self.run_batch = run_batch
        self.collate = collate
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
    def submit(self, prepared: Any, deadline: float | None = None, cost: int = 1) -> Future:
        item = _Item(prepared, cost, deadline, Future(), time.monotonic())
        try:
            with self._lock:  # closed and put together: nothing lands behind the stop marker
                if self._closed:
                    raise UnavailableError(f"{self.name} is being unloaded; retry")
                self._queue.put_nowait(item)
        except queue.Full:
            raise ResourceExhaustedError(
                f"{self.name}: {self.config.max_queue_size} inputs already queued; retry later"
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
    def _collect(self, first: _Item) -> tuple[list[_Item], bool, _Item | None]:
        """A batch starting with ``first``; whether the stop marker came; and the input that
        did not fit the token budget (it starts the next batch)."""
        batch, stop, widest = [first], False, first.cost
        # the delay counts from the first input's arrival, as Triton's does: under load it
        # waited through the previous pass already, and the batch starts with what is queued
        until = first.enqueued + self.config.max_queue_delay_ms / 1000.0
        while len(batch) < self.config.max_batch_size:
            remaining = until - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            # padded to its costliest input, the batch would cost (n + 1) * widest
            if (len(batch) + 1) * max(widest, item.cost) > self.config.max_batch_tokens:
                return batch, stop, item
            batch.append(item)
            widest = max(widest, item.cost)
        return batch, stop, None

    def _loop(self) -> None:
        carried = None
        while True:
            first = carried or self._queue.get()
            if first is None:
                return
            batch, stop, carried = self._collect(first)
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
            if stop and carried is None:
                return
            if stop:  # the marker came after the carried input: run it, then stop
                self._queue.put(None)

    def _run(self, items: list[_Item]) -> None:
        for group in length_groups([i.cost for i in items]):
            self._run_group([items[k] for k in group])

    def _run_group(self, items: list[_Item]) -> None:
        try:
            out = self.run_batch(self.collate([i.prepared for i in items]))
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


GROUP_OVERHEAD = 80  # a forward pass's fixed cost in tokens: minilm-l6 on 2 cores, 11 ms a pass, 0.14 ms a token


def length_groups(costs: Sequence[int]) -> list[list[int]]:
    """The positions of a collected batch split into runs of similar cost, each run to be one
    forward pass: a pass costs its padded size (its length x its largest cost) plus
    ``GROUP_OVERHEAD``, and the split minimises the sum (dynamic programming over the costs
    sorted). Texts of 20 and 250 tokens in one pass pay 250 for each; apart, 20 and 250 and
    one more pass. Equal costs (images) stay one pass."""
    order = sorted(range(len(costs)), key=lambda k: costs[k])
    if not order or costs[order[0]] == costs[order[-1]]:
        return [order]
    sorted_costs = [costs[k] for k in order]
    n = len(order)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for end in range(1, n + 1):  # best[end]: the first `end` sorted items in passes
        for start in range(end):
            total = best[start] + (end - start) * sorted_costs[end - 1] + GROUP_OVERHEAD
            if total < best[end]:
                best[end], cut[end] = total, start
    groups, end = [], n
    while end:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]

