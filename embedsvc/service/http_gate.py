"""What the HTTP API checks before a handler reads a byte of the body, as the gRPC interceptors
do: the bearer token, the body size limit (``max_message_bytes``) and room for work (the early
admission check). Pure ASGI, in front of the app; it also counts every ``/v1/`` answer in
``embedsvc_requests_total``, under method ``http.<endpoint>`` and the gRPC code name.
"""
from __future__ import annotations

import hmac
import time
from typing import Any

import grpc
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from ..errors import EmbedsvcError
from .core import EmbeddingCore
from .status import HTTP_STATUS, count, error_status

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
    def __init__(self, app, core: EmbeddingCore, token: str | None, max_body: int):
        self.app = app
        self.core = core
        self.expected = f"Bearer {token}".encode() if token else None
        self.max_body = max_body

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
                await self.app(scope, self._limited(receive), sending)
        finally:
            code = scope.get(CODE_KEY) or (grpc.StatusCode.OK if status[0] < 400
                                           else grpc.StatusCode.INTERNAL)
            endpoint = scope.get("endpoint")
            method = f"http.{endpoint.__name__}" if endpoint is not None else "http"
            count(self.core.metrics, method, code, t0)

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
        if scope["method"] in WORK_METHODS:
            try:
                self.core.admission.check_room()
            except EmbedsvcError as exc:
                return (*error_status(exc, "http"), None)
        return None

    def _limited(self, receive):
        """``receive``, refusing a body (chunked, with no length said) past the limit."""
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise HTTPException(413, f"the request body passed {self.max_body} bytes "
                                         f"(max_message_bytes)")
            return message

        return limited

