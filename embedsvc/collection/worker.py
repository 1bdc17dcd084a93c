"""A collection's background thread: started by the first poke, runs ``step()`` while it finds
work, then sleeps until poked again or until the time ``due()`` names. A step that fails is
logged and retried later: the log keeps every write, so nothing waits on it but freshness."""
from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("embedsvc.collections")
RETRY_AFTER_ERROR_S = 5.0


class Worker:
    role = "background work"  # what the log and the thread name call it

    def __init__(self, collection):  # a collection.Collection
        self.c = collection
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._idle_lock = threading.Lock()
        self.idle = threading.Event()  # set while nothing is left to do (tests and benchmarks)
        self.last_error: str | None = None

    def step(self) -> bool:
        """Do the most urgent piece of work; False when there is none."""
        raise NotImplementedError

    def due(self) -> float | None:
        """The monotonic time of work that is waiting for its time, if any."""
        return None

    def poke(self) -> None:
        with self._idle_lock:  # with _run's check: idle is never set while a poke is unseen
            self.idle.clear()
            self._wake.set()
        with self._start_lock:
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"{self.role}-{self.c.root.name}")
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current step; a long one (a rebuild) is left to die with the process:
        the log holds every write, and the next start removes what it left half-written."""
        self._stopped = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self.idle.wait(timeout)

    def _run(self) -> None:
        while not self._stopped:
            self._wake.clear()
            try:
                worked = self.step()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - the log keeps every write; retry later
                log.exception("index %r: %s failed", self.c.root.name, self.role)
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._wake.wait(RETRY_AFTER_ERROR_S)
                continue
            if not worked:
                due = self.due()
                with self._idle_lock:
                    if not self._wake.is_set() and due is None:
                        self.idle.set()
                self._wake.wait(None if due is None else max(0.0, due - time.monotonic()))
