"""The one table from core errors to gRPC status codes, and what an error detail may say."""
from __future__ import annotations

import logging
import os
import re
import time

import grpc

from ..errors import (DeadlineExceededError, EmbedsvcError, FailedPreconditionError,
                      InvalidInputError, NotFoundError, ResourceExhaustedError, TooLargeError,
                      UnavailableError)
from ..v1 import embedsvc_pb2 as pb

log = logging.getLogger("embedsvc.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EmbeddingService"].full_name

# One table from core errors to gRPC status codes; the first matching class wins.
STATUS_OF: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (EmbedsvcError, grpc.StatusCode.INTERNAL),
)
# errors that concern one image of a stream: answered in its EmbedResult, the stream goes on
PER_ITEM_ERRORS = (InvalidInputError, DeadlineExceededError, ResourceExhaustedError)


# The HTTP API answers each code with the HTTP status Google's APIs and grpc-gateway give it;
# the body names the code too, so a 400 still says which of its three causes it was.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def status_of(exc: BaseException) -> grpc.StatusCode | None:
    for cls, code in STATUS_OF:
        if isinstance(exc, cls):
            return code
    return None


def error_status(exc: BaseException, where: str) -> tuple[grpc.StatusCode, str]:
    """The status and the detail a client gets for ``exc``: an internal error is logged with
    its traceback and answered without one."""
    code = status_of(exc)
    if code is None or code == grpc.StatusCode.INTERNAL:
        log.error("internal error in %s", where, exc_info=exc)
        code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
    else:
        message = public_message(str(exc))
    forget_frames(exc)
    return code, message


def forget_frames(exc: BaseException) -> None:
    """Drop the tracebacks of ``exc`` and of the exceptions it chains, once it is answered.

    Their frames hold the failed request's locals (megabytes of image bytes), and an exception
    that ends up in a reference cycle (gRPC keeps a call's error beside its context, whose
    frames refer back to it) lives until the cyclic GC, which runs by object counts, not bytes:
    measured, 64 clients sending 2 MiB images that do not decode grew the server's RSS by
    3 GB in 8 s. Only the code and the message outlive the call."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        todo += [e.__cause__, e.__context__]


def http_error(exc: BaseException, where: str) -> tuple[grpc.StatusCode, str, int]:
    """``error_status`` and the HTTP status: the code's own, but 413 for a request that no load
    lets through (retrying cannot help, so no 429)."""
    code, message = error_status(exc, where)
    return code, message, 413 if isinstance(exc, TooLargeError) else HTTP_STATUS[code]


# An absolute path whose first component exists on this machine (/usr/..., /tmp/..., /root/...):
# it names the server's disk and never goes into an error detail. Client-made ids stay as sent.
_PATH = re.compile(r"(?<![\w.:/])/([\w.\-]+)(?:/[\w.\-]*)*")


def public_message(text: str) -> str:
    return _PATH.sub(lambda m: "<path>" if os.path.exists("/" + m.group(1)) else m.group(0), text)


def count(metrics, method: str, code: grpc.StatusCode, t0: float | None = None) -> None:
    metrics.requests.labels(method, code.name).inc()
    if t0 is not None:
        metrics.latency.labels(method).observe(time.perf_counter() - t0)
