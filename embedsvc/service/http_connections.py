"""The HTTP listener's connections: what uvicorn's httptools protocol does not bound.

uvicorn parses HTTP and times out idle keep-alive connections, but a connection that never sends
a request, or sends its headers or body a byte at a time, is held for ever, headers may be of any
size, and connections have no cap: about 4,000 silent ones once used up the process's file
descriptors, and health checks stopped answering. This protocol adds, per connection:

- a cap on open connections: past ``max_connections`` a new connection closes the oldest one
  that has no request in progress (idle, or still sending its headers), as nginx closes idle
  keep-alive connections when it runs short, so a health check always gets in; when every
  connection is busy with a request, the new one gets 503 and is closed at once;
- ``header_timeout_s`` for a request's headers (from the connection, or from the request's first
  byte), ``body_timeout_s`` for its whole body, ``max_header_bytes`` for the request line and
  headers (431).

Each refusal is counted in ``embedsvc_connections_refused_total{listener="http", reason}``.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


LINGER_S = 2.0  # how long a refused client's remaining bytes are read and dropped


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float


def _plain_response(status: int, reason: str, message: str) -> bytes:
    body = message.encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


def guarded_protocol(limits: ConnectionLimits,
                     refused: Callable[[str], None]) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with ``limits``; ``refused(reason)`` counts each refusal."""

    class GuardedProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._header_bytes = 0
            self._in_body = False
            self._discarding = False
            self._timer: asyncio.TimerHandle | None = None
            self._opened_at = self.loop.time()
            super().connection_made(transport)
            open_ = [c for c in self.connections if not c.transport.is_closing()]
            if len(open_) > limits.max_connections and not self._make_room(open_):
                refused("connections")
                transport.write(_plain_response(503, "Service Unavailable",
                                                f"{limits.max_connections} connections are "
                                                f"busy (max_connections); retry later"))
                transport.close()
                return
            self._arm(limits.header_timeout_s, "header_timeout")

        def _make_room(self, open_: list) -> bool:
            """Close the oldest connection with no request in progress; False if none."""
            idle = [c for c in open_ if c is not self and not c._busy()]
            if not idle:
                return False
            oldest = min(idle, key=lambda c: c._opened_at)
            refused("evicted")
            oldest.transport.close()
            return True

        def _busy(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _arm(self, seconds: float, reason: str) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._timed_out, reason)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _timed_out(self, reason: str) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            refused(reason)
            if reason == "header_timeout" and self._header_bytes and not self._busy():
                self.transport.write(_plain_response(408, "Request Timeout",
                                                     "the request headers did not arrive in "
                                                     "time (header_timeout_s)"))
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._discarding:
                return
            if not self._in_body:
                self._header_bytes += len(data)
            super().data_received(data)
            # still reading headers after this chunk, and past the limit: httptools would keep
            # buffering them
            if not self._in_body and self._header_bytes > limits.max_header_bytes \
                    and not self.transport.is_closing():
                refused("header_too_large")
                self._answer_and_linger(_plain_response(
                    431, "Request Header Fields Too Large",
                    f"the request line and headers passed {limits.max_header_bytes} bytes "
                    f"(max_header_bytes)"))

        def _answer_and_linger(self, response: bytes) -> None:
            """Answer, then read and drop what the client still sends for a moment before
            closing: closing at once, with its bytes unread, would reset the connection and
            the client would never read the answer (nginx's lingering close)."""
            self._disarm()
            self._discarding = True
            self.transport.write(response)
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self._timer = self.loop.call_later(LINGER_S, self.transport.close)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._timer is None:  # a keep-alive connection's next request: its own clock
                self._arm(limits.header_timeout_s, "header_timeout")

        def on_headers_complete(self) -> None:
            self._in_body = True
            self._header_bytes = 0
            self._arm(limits.body_timeout_s, "body_timeout")
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_body = False
            self._disarm()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedProtocol
