"""Drift of live traffic, per head: are the images a head classifies still like the ones it was
trained on?

Each trained head carries a sample of its training embeddings (classifiers/heads/ood.py). The
server keeps the last ``drift_window`` embeddings it classified with each head, and compares the
two samples with the test ``embedsvc gap`` decides by (classifiers/adapt/gap.py ``shift_test``:
an MMD permutation test and a domain classifier, each at ALPHA / 2): ``drifted`` where gap would
say shifted or very different, so the command and the server agree on the same data. The
threshold reported is the MMD^2 the permutation test needs.

Per request, recording costs a copy of the request's vectors into a ring buffer. The test runs
in a background thread every ``drift_interval_s`` for the heads whose window changed (and when
GetDrift asks), on at most REFERENCE training vectors against the window: with a window of 500
and 1280 dimensions, a 1000 x 1000 kernel and PERMUTATIONS shuffles.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..embeddings import l2_normalize

log = logging.getLogger("embedsvc.server")

PERMUTATIONS = 1000
REFERENCE = 500
MIN_WINDOW = 20  # fewer recent vectors: "warming up", no test yet


@dataclass(frozen=True)
class DriftReport:
    head: str
    verdict: str  # "stable", "drifted", "warming up", or "no reference" (a head without a sample)
    window: int = 0
    reference: int = 0
    mmd2: float = 0.0
    threshold: float = 0.0
    p_value: float = 1.0  # the smaller of the two tests' (each significant below ALPHA / 2)
    computed_at: float = 0.0  # unix time
    decided_by: str = ""  # which test decided, and how sure (as embedsvc gap prints it)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Window:
    def __init__(self, head: Any, size: int):
        self.head = head  # the loaded Head this window belongs to: a replaced head starts afresh
        self.vectors: deque[np.ndarray] = deque(maxlen=size)
        self.version = 0
        self.report: DriftReport | None = None
        self.reported_version = -1


class DriftMonitor:
    def __init__(self, window: int, interval_s: float, metrics, heads: Callable[[], dict]):
        self.size = window
        self.interval_s = interval_s
        self.metrics = metrics
        self._heads = heads  # name -> loaded Head (or None): the registry's current entries
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if window > 0:
            self._thread = threading.Thread(target=self._loop, name="drift", daemon=True)
            self._thread.start()

    def record(self, name: str, head: Any, vectors: np.ndarray) -> None:
        if self.size <= 0 or getattr(head, "ood", None) is None:
            return
        with self._lock:
            w = self._windows.get(name)
            if w is None or w.head is not head:
                w = self._windows[name] = _Window(head, self.size)
            w.vectors.extend(np.array(vectors, np.float32, copy=True))
            w.version += 1

    def reports(self, name: str | None = None) -> list[DriftReport]:
        """Fresh reports for one head or every head (computed now where the window changed)."""
        heads = {k: v for k, v in self._heads().items() if name is None or k == name}
        return [self._report(n, h) for n, h in sorted(heads.items()) if h is not None]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _report(self, name: str, head: Any) -> DriftReport:
        from classifiers.adapt.gap import shift_test

        if getattr(head, "ood", None) is None:
            return DriftReport(name, "no reference")
        with self._lock:
            w = self._windows.get(name)
            if w is None or w.head is not head:
                return DriftReport(name, "warming up")
            if w.reported_version == w.version and w.report is not None:
                return w.report
            window, version = np.stack(w.vectors), w.version
        if len(window) < MIN_WINDOW:
            return DriftReport(name, "warming up", len(window))
        rng = np.random.default_rng(0)
        ref = head.ood.reference
        ref = ref[rng.choice(len(ref), min(REFERENCE, len(ref)), replace=False)]
        test = shift_test(np.asarray(ref, np.float64), l2_normalize(window).astype(np.float64),
                          0, PERMUTATIONS)
        report = DriftReport(name, "stable" if test.verdict == "similar" else "drifted",
                             len(window), len(ref), float(test.mmd2), test.mmd_threshold,
                             min(test.mmd_p_value, test.domain_p_value), time.time(),
                             test.decided_by)
        with self._lock:
            if w.version == version:
                w.report, w.reported_version = report, version
        self.metrics.observe_drift(report)
        return report

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self._lock:
                    stale = [n for n, w in self._windows.items() if w.reported_version != w.version]
                heads = self._heads() if stale else {}  # one scan of the heads folder per round
                for name in stale:
                    if heads.get(name) is not None:
                        self._report(name, heads[name])
            except Exception:  # noqa: BLE001 - the monitor must never take the server down
                log.exception("drift check failed")
