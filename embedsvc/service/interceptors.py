"""Checks that run before a handler reads its message: admission (room for the work) and the
bearer token. Both answer with a handler of the call's own shape, so streams get the status too."""
from __future__ import annotations

import hmac

import grpc
from google.protobuf.message import DecodeError

from ..errors import EmbedsvcError, InvalidInputError
from .core import EmbeddingCore
from .status import SERVICE_NAME, count, error_status
from .wire import bad_text_field


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Admits each unary call of the service before its message is read: the call takes a
    request slot first, then its message's bytes, then the message is parsed. A call beyond
    the limits is refused with its message unread, so 150 concurrent 2 MB calls against 8
    slots buffer 8 messages, not 150 (HTTP/2 flow control keeps the rest with the clients), and
    a message that does not parse is INVALID_ARGUMENT, not UNKNOWN."""

    def __init__(self, core: EmbeddingCore):
        self.core = core

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or \
                not handler_call_details.method.startswith(f"/{SERVICE_NAME}/"):
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        parse, behaviour, core = handler.request_deserializer, handler.unary_unary, self.core

        async def admitted(request_iterator, context):  # stream-shaped: reads when admitted
            try:
                with core.admission.request(0) as ticket:
                    raw = await _one_message(context)
                    ticket.add(len(raw))
                    try:
                        request = parse(raw)
                    except DecodeError as exc:  # "...: String field had bad UTF-8"
                        why = str(exc).rpartition(": ")[2] or "it does not parse"
                        field = bad_text_field(parse.__self__.DESCRIPTOR, raw)
                        where = f" (in {field})" if field else ""
                        raise InvalidInputError(f"the message is not a valid {method} request "
                                                f"of {SERVICE_NAME}: {why}{where}") from None
                    del raw  # parsed: the serialized copy goes before the work starts
                    return await behaviour(request, context)
            except EmbedsvcError as exc:
                code, details = error_status(exc, method)
                count(core.metrics, method, code)
                end_call(context, code, details)
            finally:
                raw = request = None  # whatever outlives the call holds no request bytes

        return grpc.stream_unary_rpc_method_handler(
            admitted, request_deserializer=None, response_serializer=handler.response_serializer)


def end_call(context, code: grpc.StatusCode, details: str) -> None:
    """End a call with a status, raising nothing. ``context.abort`` raises an AbortError that
    gRPC keeps beside the call, in a cycle with it, and whose traceback holds the handler's
    frames and so the request, until the cyclic GC (``status.forget_frames`` says how much);
    a handler that sets the code and returns sends the same status (its return value, if
    any, is discarded)."""
    context.set_code(code)
    context.set_details(details)


async def _one_message(context) -> bytes:
    """The call's message, read from the context: iterating the request iterator would leave
    gRPC's generator suspended after its first message, holding it for as long as the call's
    objects live (they form a cycle, so until the cyclic GC: 200 MiB of 2 MiB messages after
    15 s of load, measured)."""
    raw = await context.read()
    if raw is grpc.aio.EOF:
        raise InvalidInputError("the call sent no request message")
    return raw


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
