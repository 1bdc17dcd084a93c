"""Dynamic batching across concurrent requests, as Triton does it.

Requests put single prepared inputs (an image's tensor, a text's tokens) on a bounded queue; one
worker thread per model keeps a pool of waiting inputs. It fills the pool from the queue until
``max_batch_size`` inputs, ``max_batch_tokens`` (the pool's cost padded to its costliest input:
tokens for text, 1 per image; for an encoder that packs its inputs, their sum), or
``max_queue_delay_ms`` from the oldest input's arrival; drops those whose caller gave up or whose
deadline has expired; and runs one length group of the pool as a pass (``collate``, then
``run_batch``; see ``next_group``). The rest wait for the next pass with the inputs that arrive
meanwhile. Inputs of equal cost (images) are one group, so the whole pool runs, as a plain
dynamic batcher would; so does the pool of an encoder that packs its inputs (texts end to
end, ``text/packing.py``: no padding, nothing to gain by splitting). A full queue is refused at
once (ResourceExhaustedError) instead of growing. The batcher knows nothing of modality.
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
    passed_over: int = 0  # passes run while it waited in the pool


class DynamicBatcher:
    def __init__(self, run_batch: Callable[[Any], np.ndarray],
                 collate: Callable[[Sequence[Any]], Any], config: BatchingConfig,
                 name: str = "model", on_batch: Callable[[str, int], None] | None = None,
                 packed: bool = False):
        """``packed``: ``collate`` packs its inputs without padding (``text/packing.py``), so a
        pass costs the sum of its inputs' costs and the whole pool runs as one pass."""
        self.run_batch = run_batch
        self.collate = collate
        self.packed = packed
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
    def _fill(self, pool: list[_Item], carried: _Item | None) -> tuple[bool, _Item | None]:
        """Add queued inputs to ``pool`` until it holds ``max_batch_size``, or the next would
        break the token budget (that one is returned, to join once the pool has room), or the
        delay has passed. Returns whether the stop marker came, and the input left out."""
        if carried is not None:
            if not self._fits(pool, carried):
                return False, carried
            pool.append(carried)
        # the delay counts from the oldest input's arrival, as Triton's does: under load it
        # waited through the previous pass already, and the pool takes what is queued
        until = min(i.enqueued for i in pool) + self.config.max_queue_delay_ms / 1000.0
        while len(pool) < self.config.max_batch_size:
            remaining = until - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return True, None
            if not self._fits(pool, item):
                return False, item
            pool.append(item)
        return False, None

    def _fits(self, pool: list[_Item], item: _Item) -> bool:
        if self.packed:
            return not pool or sum(i.cost for i in pool) + item.cost <= self.config.max_batch_tokens
        # padded to its costliest input, the pool would cost (n + 1) * widest
        widest = max([item.cost] + [i.cost for i in pool])
        return not pool or (len(pool) + 1) * widest <= self.config.max_batch_tokens

    def _prune(self, pool: list[_Item]) -> list[_Item]:
        """The pool less the inputs whose caller gave up or whose deadline passed."""
        now, live = time.monotonic(), []
        for item in pool:
            if item.future.cancelled():
                continue
            if item.deadline is not None and item.deadline < now:
                # first: a future its caller cancelled meanwhile takes no answer, and setting
                # one would kill this thread
                if item.future.set_running_or_notify_cancel():
                    item.future.set_exception(DeadlineExceededError(
                        f"deadline passed after {1000 * (now - item.enqueued):.0f} ms in the queue"))
                    self.expired += 1
                continue
            live.append(item)
        return live

    def _loop(self) -> None:
        pool: list[_Item] = []
        carried, stop = None, False
        while True:
            if not pool:
                if stop and carried is None:
                    return
                first = carried or self._queue.get()
                if first is None:
                    return
                pool, carried = [first], None
            if not stop:
                stop, carried = self._fill(pool, carried)
            pool = self._prune(pool)
            if not pool:
                continue
            group = list(pool) if self.packed else next_group(pool)
            self._run_group([i for i in group if i.future.set_running_or_notify_cancel()])
            ran = {id(i) for i in group}
            pool = [i for i in pool if id(i) not in ran]
            for item in pool:
                item.passed_over += 1

    def _run_group(self, items: list[_Item]) -> None:
        if not items:
            return
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


# a forward pass's fixed cost in tokens (minilm-l6 on 2 cores, padded: 7-11 ms a pass, 0.14 ms a
# token; the pool policy was measured with 80)
GROUP_OVERHEAD = 80


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



MAX_PASSED_OVER = 8  # passes an input may wait through in the pool for a better-matched group


def next_group(pool: Sequence[_Item]) -> list[_Item]:
    """The inputs of the pool to run as the next pass: of its length groups, the one that wastes
    least (its inputs' own cost over its padded cost plus ``GROUP_OVERHEAD``), unless an input
    has waited through ``MAX_PASSED_OVER`` passes, whose group then goes first. The rest stay
    pooled and meet the inputs that arrive meanwhile: short texts left behind while long ones
    run gather into fuller groups of closer lengths than any one arrival window holds."""
    groups = [[pool[k] for k in g] for g in length_groups([i.cost for i in pool])]
    oldest = max(pool, key=lambda i: i.passed_over)
    if oldest.passed_over >= MAX_PASSED_OVER:
        return next(g for g in groups if any(i is oldest for i in g))
    return max(groups, key=lambda g: sum(i.cost for i in g)
               / (len(g) * max(i.cost for i in g) + GROUP_OVERHEAD))
