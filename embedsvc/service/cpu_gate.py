"""Take turns on the CPU: image decoding versus model batches.

When the model runs on the CPU, torch spreads each batch over every core with OpenMP threads
that meet at barriers after each layer. A decode thread running beside them preempts one of
those threads, and the others spin at the barrier until it comes back: on a 2-core machine
decoding in parallel with inference made both slower than doing them in turn (the served rate
fell to 0.75 of the in-process decode + model rate). The gate lets any number of decodes run
together, or one batch alone; a waiting batch goes first (new decodes wait), so the model is
never starved by a stream of requests. On a GPU the model does not use the CPU cores, and the
gate is off.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class CpuGate:
    """A writer-preferring reader/writer lock: decodes share, a batch is exclusive."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._cond = threading.Condition()
        self._decoding = 0
        self._batch_waiting = 0
        self._batch_running = False

    @contextmanager
    def decoding(self) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        with self._cond:
            self._cond.wait_for(lambda: not self._batch_running and not self._batch_waiting)
            self._decoding += 1
        try:
            yield
        finally:
            with self._cond:
                self._decoding -= 1
                if not self._decoding:
                    self._cond.notify_all()

    @contextmanager
    def batch(self) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        with self._cond:
            self._batch_waiting += 1
            self._cond.wait_for(lambda: not self._batch_running and not self._decoding)
            self._batch_waiting -= 1
            self._batch_running = True
        try:
            yield
        finally:
            with self._cond:
                self._batch_running = False
                self._cond.notify_all()

