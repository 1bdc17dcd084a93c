"""What the HTTP API checks before a handler reads a byte of the body, as the gRPC interceptor
does: the bearer token, the body size limit (``max_message_bytes``), and admission: the request
takes its slot and its Content-Length of the byte budget before the body is read, and a body
of unknown length (chunked) takes its bytes as they arrive, by the same rule. Pure ASGI, in
front of the app; it also counts every ``/v1/`` answer in ``embedsvc_requests_total``, under
method ``http.<endpoint>`` and the gRPC code name.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from typing import Any

import grpc
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from ..errors import EmbedsvcError
from .admission import Ticket
from .core import EmbeddingCore
from .items import count_items, counted
from .status import HTTP_STATUS, count, http_error

CODE_KEY = "embedsvc.code"  # the scope key where an answer's gRPC code is left for counting
API = "/v1/"  # the token guards this; the page, its files, /openapi.json and health are open
WORK_METHODS = ("POST", "DELETE")  # embeddings, classify, search, upsert, delete


def error_response(scope: dict, code: grpc.StatusCode, message: str,
                   status: int | None = None) -> JSONResponse:
    scope[CODE_KEY] = code
    headers = {}
    if code == grpc.StatusCode.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = "Bearer"
    elif code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE) \
            and status in (None, 429, 503):
        headers["Retry-After"] = "1"
    body = {"error": {"message": message, "type": code.name.lower(), "code": code.name}}
    return JSONResponse(body, status or HTTP_STATUS[code], headers)


class Gate:
    def __init__(self, app, core: EmbeddingCore, token: str | None, max_body: int,
                 max_items: int):
        self.app = app
        self.core = core
        self.expected = f"Bearer {token}".encode() if token else None
        self.max_body = max_body
        self.max_items = max_items

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API):
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await error_response(scope, *refusal)(scope, receive, sending)
            else:
                await self._admitted(scope, receive, sending)
        finally:
            code = scope.get(CODE_KEY) or (grpc.StatusCode.OK if status[0] < 400
                                           else grpc.StatusCode.INTERNAL)
            endpoint = scope.get("endpoint")
            method = f"http.{endpoint.__name__}" if endpoint is not None else "http"
            count(self.core.metrics, method, code, t0)

    async def _admitted(self, scope: dict, receive, send) -> None:
        length = dict(scope["headers"]).get(b"content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        with contextlib.ExitStack() as held:  # the slot and bytes until the answer is sent
            try:
                ticket = held.enter_context(self.core.admission.request(declared or 0))
            except EmbedsvcError as exc:  # refused: nothing of the body is read
                return await error_response(scope, *http_error(exc, "http"))(scope, receive, send)
            receive = self._limited(receive, None if declared is not None else ticket)
            if scope["method"] in WORK_METHODS and counted(scope["path"]):
                try:
                    receive, refusal = await self._counted(scope, receive)
                except (EmbedsvcError, HTTPException) as exc:  # while the body arrived
                    refusal = (grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc.detail), 413) \
                        if isinstance(exc, HTTPException) else http_error(exc, "http")
                if refusal is not None:
                    return await error_response(scope, *refusal)(scope, self._empty, send)
            await self.app(scope, receive, send)

    def _refusal(self, scope: dict) -> tuple[grpc.StatusCode, str, int | None] | None:
        """(code, message, HTTP status when not the code's own), or None to let it in."""
        headers = dict(scope["headers"])
        if self.expected is not None and not hmac.compare_digest(
                headers.get(b"authorization", b""), self.expected):
            return grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token", None
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return (grpc.StatusCode.RESOURCE_EXHAUSTED, f"the request body is {int(length)} "
                    f"bytes; the limit is {self.max_body} (max_message_bytes)", 413)
        return None

    def _limited(self, receive, ticket: Ticket | None):
        """``receive``, refusing a body past ``max_message_bytes``; a body of unknown length
        takes its bytes from the admission budget as they arrive (``ticket``)."""
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            size = len(message.get("body", b""))
            seen += size
            if seen > self.max_body:
                raise HTTPException(413, f"the request body passed {self.max_body} bytes "
                                         f"(max_message_bytes)")
            if ticket is not None:
                ticket.add(size)  # TooLargeError → 413, a full budget → 429
            return message

        return limited

    async def _counted(self, scope: dict, receive):
        """Read the whole (admitted) body and count its items off the event loop before
        anything parses it: (a replaying ``receive``, None), or (None, the refusal)."""
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        loop = asyncio.get_running_loop()
        items = await loop.run_in_executor(None, count_items, scope["path"], body,
                                           self.max_items)
        if items > self.max_items:
            return None, (grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"the request has more than {self.max_items} items "
                          f"(max_items_per_request); send them in several", 413)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay, None

    @staticmethod
    async def _empty() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}
