"""Checks that run before a handler reads its message: admission (room for the work) and the
bearer token. Both answer with a handler of the call's own shape, so streams get the status too."""
from __future__ import annotations

import hmac

import grpc

from ..errors import EmbedsvcError
from .core import EmbeddingCore
from .status import SERVICE_NAME, count, status_of


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Refuses work calls while every request slot is taken, before their message is read: a
    refused 50 MB request costs no memory. (The handler takes the slot for real; this is the
    early, message-free check.)"""

    WORK = tuple(f"/{SERVICE_NAME}/{m}" for m in ("Embed", "Classify", "Search", "Upsert", "Delete"))

    def __init__(self, core: EmbeddingCore):
        self.core = core

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method not in self.WORK:
            return handler
        try:
            self.core.admission.check_room()
            return handler
        except EmbedsvcError as exc:
            code, details = status_of(exc), str(exc)
        method = handler_call_details.method.rsplit("/", 1)[-1]

        async def refuse(request_iterator, context):  # stream-shaped: never reads the message
            count(self.core.metrics, method, code)
            await context.abort(code, details)

        return grpc.stream_unary_rpc_method_handler(refuse)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Bearer-token check on every call, streams included, except health checks (load balancers
    probe those). The token is compared in constant time."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith("/grpc.health.v1.Health/"):
            return await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = metadata.get("authorization", "")
        given = given.encode() if isinstance(given, str) else bytes(given)
        if hmac.compare_digest(given, self._expected):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        return _deny_like(handler)


def _deny_like(handler) -> grpc.RpcMethodHandler:
    """A handler of the same shape (unary or streaming) that answers UNAUTHENTICATED."""

    async def deny(request_or_iterator, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    streaming_in = bool(handler and handler.request_streaming)
    streaming_out = bool(handler and handler.response_streaming)
    make = {(False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler}[(streaming_in, streaming_out)]
    return make(deny)
