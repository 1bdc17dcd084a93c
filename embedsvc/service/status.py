"""The one table from core errors to gRPC status codes, and what an error detail may say."""
from __future__ import annotations

import os
import re
import time

import grpc

from ..errors import (DeadlineExceededError, EmbedsvcError, FailedPreconditionError,
                      InvalidInputError, NotFoundError, ResourceExhaustedError, UnavailableError)
from ..v1 import embedsvc_pb2 as pb

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


def status_of(exc: BaseException) -> grpc.StatusCode | None:
    for cls, code in STATUS_OF:
        if isinstance(exc, cls):
            return code
    return None


# An absolute path whose first component exists on this machine (/usr/..., /tmp/..., /root/...):
# it names the server's disk and never goes into an error detail. Client-made ids stay as sent.
_PATH = re.compile(r"(?<![\w.:/])/([\w.\-]+)(?:/[\w.\-]*)*")


def public_message(text: str) -> str:
    return _PATH.sub(lambda m: "<path>" if os.path.exists("/" + m.group(1)) else m.group(0), text)


def count(metrics, method: str, code: grpc.StatusCode, t0: float | None = None) -> None:
    metrics.requests.labels(method, code.name).inc()
    if t0 is not None:
        metrics.latency.labels(method).observe(time.perf_counter() - t0)
