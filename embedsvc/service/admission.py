"""Admission control: how much work the server takes on at once.

A request is admitted, or refused at once with ResourceExhaustedError; it is never parked in an
unbounded queue. Two budgets: requests in progress, and the bytes those requests hold. Streams
have their own count, so idle streams can never take the slots that unary calls and health
checks need. Everything here is transport-free; the servicer maps the error to
RESOURCE_EXHAUSTED.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from ..errors import ResourceExhaustedError, TooLargeError, UnavailableError


class Admission:
    def __init__(self, max_requests: int, max_bytes: int, max_streams: int):
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.max_streams = max_streams
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self.streams = 0
        self.refused = 0
        self.closed = False

    def _check_room(self) -> None:
        self._refuse_at(self.requests, self.max_requests, "requests in progress")

    def _refuse_at(self, used: int, limit: int, what: str) -> None:
        """Under the lock: refuse when stopping, or when ``used`` has reached ``limit``."""
        if self.closed:
            raise UnavailableError("the server is shutting down")
        if used >= limit:
            self.refused += 1
            raise ResourceExhaustedError(f"{used} {what} (limit {limit}); retry later")

    @contextlib.contextmanager
    def request(self, nbytes: int = 0) -> Iterator["Ticket"]:
        """Hold one request slot and ``nbytes`` of the byte budget for the duration; the
        ticket takes more bytes as a body of unknown length arrives (``Ticket.add``)."""
        with self._lock:
            self._check_room()
            self._check_bytes(0, nbytes)
            self.requests += 1
            self.bytes += nbytes
        ticket = Ticket(self, nbytes)
        try:
            yield ticket
        finally:
            with self._lock:
                self.requests -= 1
                self.bytes -= ticket.nbytes

    def _check_bytes(self, held: int, more: int) -> None:
        """Under the lock: may a request holding ``held`` bytes take ``more``?"""
        if held + more > self.max_bytes:  # never, whatever else is in progress
            self.refused += 1
            raise TooLargeError(f"the request holds {held + more} bytes (so far); the limit of "
                                f"bytes in progress is {self.max_bytes} (max_inflight_bytes)")
        if self.bytes + more > self.max_bytes:
            self.refused += 1
            raise ResourceExhaustedError(
                f"requests in progress hold {self.bytes} bytes; {more} more would pass the "
                f"limit of {self.max_bytes}; retry later")

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        with self._lock:
            self._refuse_at(self.streams, self.max_streams, "streams open")
            self.streams += 1
        try:
            yield
        finally:
            with self._lock:
                self.streams -= 1

    def _add(self, ticket: "Ticket", nbytes: int) -> None:
        with self._lock:
            self._check_bytes(ticket.nbytes, nbytes)
            self.bytes += nbytes
            ticket.nbytes += nbytes

    def close(self) -> None:
        """Refuse everything from now on (the server is stopping)."""
        with self._lock:
            self.closed = True


class Ticket:
    """An admitted request's hold on the budgets; ``add`` counts bytes as they arrive."""

    def __init__(self, admission: Admission, nbytes: int):
        self.admission = admission
        self.nbytes = nbytes

    def add(self, nbytes: int) -> None:
        if nbytes:
            self.admission._add(self, nbytes)
