"""The HTTP/JSON front door, beside gRPC on the same ``EmbeddingCore``. Like the servicer it
validates, converts and delegates; an error goes through status.py's one table to a gRPC code,
and from there to the HTTP status Google's APIs give that code (``HTTP_STATUS``).

FastAPI, because request bodies are validated from the type hints in http_models.py into 400s
that name the field, the OpenAPI document (``/openapi.json``) is generated from the same models,
and routing and static files come from Starlette, all well kept and widely used; uvicorn (with
the httptools parser) serves it. Nothing here parses HTTP.

The page at ``/`` is plain HTML and JavaScript in ``web/``, no build step.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import grpc
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import EmbedsvcError, InvalidInputError
from ..quantize import encode
from .core import EmbeddingCore
from .http_gate import error_response
from .inputs import Input
from .http_models import (ClassifyRequest, DeleteRequest, EmbeddingsRequest, EmbeddingsResponse,
                          ErrorResponse, SearchRequest, UpsertRequest)
from .status import http_error

WEB = Path(__file__).with_name("web")
ERRORS = {s: {"model": ErrorResponse} for s in (400, 401, 404, 413, 429, 503, 504)}
# the page's own files may only talk to this server, and never run inline script
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                           "object-src 'none'; base-uri 'none'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
_SPACE = re.compile(r"\s+")


class _JSON(JSONResponse):
    """JSON with numpy scalars as the plain numbers they hold."""

    def render(self, content: Any) -> bytes:
        # backslashreplace: a lone surrogate that reached an answer leaves as a JSON escape
        # (\udXXX) instead of failing the whole answer
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                          default=_plain).encode("utf-8", "backslashreplace")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


class _Failed(Exception):
    """An error already turned into its code, public message and HTTP status."""

    def __init__(self, code: grpc.StatusCode, message: str, status: int):
        self.code, self.message, self.status = code, message, status


def decode_image(text: str, what: str) -> bytes:
    """A base64 string or base64 data URI → bytes (line breaks, as ``base64`` writes, allowed)."""
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise InvalidInputError(f"{what}: a data URI must be base64, like "
                                    f"'data:image/png;base64,iVBOR...'")
    try:
        return base64.b64decode(_SPACE.sub("", text), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"{what} is neither base64 nor a base64 data URI") from None


def _timeout(request: Request) -> float | None:
    """The caller's deadline, in seconds, from ``X-Request-Timeout`` (gRPC's grpc-timeout)."""
    text = request.headers.get("x-request-timeout")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value:
        raise InvalidInputError(f"X-Request-Timeout must be a number of seconds > 0, got {text!r}")
    return value


class _Runner:
    """Run an admitted request's blocking work (the gate admitted it, with the same budgets as
    gRPC) in the shared worker pool, and turn any error into its status once."""

    def __init__(self, core: EmbeddingCore, pool: ThreadPoolExecutor):
        self.core, self.pool = core, pool

    async def __call__(self, request: Request, fn: Callable[[float], Any]) -> Any:
        try:
            return await self.core.run(self.pool, _timeout(request), fn)
        except Exception as exc:  # noqa: BLE001 - every error becomes a status, not a crash
            endpoint = request.scope.get("endpoint")
            raise _Failed(*http_error(exc, getattr(endpoint, "__name__", "http"))) from None


def _input(it, n: int, what: str, default_id: str | None = None) -> Input:
    """A plain string (a text) or a typed ``InputIn`` → the core's Input."""
    default_id = default_id or str(n)
    if isinstance(it, str):
        return Input(default_id, text=it)
    if isinstance(it, (int, list)):
        raise InvalidInputError(f"{what}: token ids are not accepted; the server tokenises: "
                                f"send the text as a string")
    if (it.image is None) == (it.text is None):
        raise InvalidInputError(f"{what}: an input needs exactly one of image or text")
    image = None if it.image is None else decode_image(it.image, what)
    return Input(it.id or default_id, image, it.text)


def _inputs(images, inputs, first: str = "images") -> list[Input]:
    out = [Input(it.id or str(n), image=decode_image(it.data, f"{first}[{n}]"))
           for n, it in enumerate(images)]
    return out + [_input(it, len(out) + n, f"inputs[{n}]") for n, it in enumerate(inputs)]


def _vectors(emb, encoding: str) -> list:
    if encoding == "base64":  # OpenAI's: the float32 bytes, little-endian
        return [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in emb.vectors]
    # float32 → the same doubles a gRPC client reads; codes → small integers
    return encode(emb.vectors, encoding, emb.ids).tolist()


class _OffLoopJSON(Request):
    """A request whose JSON body is parsed in a thread, not on the event loop that answers
    every connection (an 8 MB body once kept /healthz waiting for seconds)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await asyncio.get_running_loop().run_in_executor(None, json.loads, body)
        return self._json


class _OffLoopRoute(APIRoute):
    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_OffLoopJSON(request.scope, request.receive))

        return route


def create_app(core: EmbeddingCore, pool: ThreadPoolExecutor) -> FastAPI:
    app = FastAPI(title="embedsvc", version=__version__, docs_url=None, redoc_url=None,
                  description="Image and text embeddings, classification and vector search "
                              "over HTTP/JSON, on the same core as the gRPC API. POST "
                              "/v1/embeddings takes OpenAI's request shape (strings are texts; "
                              "images go as {'image': base64}). Send 'Authorization: Bearer TOKEN' "
                              "when the server has a token; X-Request-Timeout sets a deadline "
                              "in seconds.")
    app.router.route_class = _OffLoopRoute
    run = _Runner(core, pool)
    _errors(app)

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse, responses=ERRORS,
              tags=["embed"])
    async def embeddings(body: EmbeddingsRequest, request: Request):
        given = [body.input] if isinstance(body.input, str) else body.input
        backbone = None if body.model in ("", "default") else body.model

        def work(deadline: float):
            inputs = [_input(it, n, f"input[{n}]", f"input[{n}]") for n, it in enumerate(given)]
            emb, timing = core.embed(inputs, backbone, body.tap, body.normalize, deadline,
                                     dimensions=body.dimensions)
            return emb, timing, _vectors(emb, body.encoding_format)

        emb, timing, vectors = await run(request, work)
        texts = emb.provenance.get("modality") == "text"
        cut = set(emb.truncated)
        return _JSON({
            "object": "list", "model": emb.provenance["backbone"],
            "data": [{"object": "embedding", "index": n, "embedding": v}
                     for n, v in enumerate(vectors)],
            "usage": {"prompt_tokens": emb.tokens, "total_tokens": emb.tokens,
                      "images": 0 if texts else len(vectors), "texts": len(vectors) if texts else 0},
            "truncated": [n for n, i in enumerate(emb.ids) if i in cut],
            "provenance": emb.provenance, "timing": asdict(timing)})

    @app.post("/v1/classify", responses=ERRORS, tags=["classify"])
    async def classify(body: ClassifyRequest, request: Request):
        results, timing = await run(request, lambda d: core.classify(
            _inputs(body.images, body.inputs), body.head, body.top_k, body.abstain_below, d,
            body.max_ood_score))
        for r in results:
            r["top"] = [{"label": label, "probability": p} for label, p in r["top"]]
        return _JSON({"head": body.head, "results": results, "timing": asdict(timing)})

    @app.post("/v1/search", responses=ERRORS, tags=["search"])
    async def search(body: SearchRequest, request: Request):
        def work(deadline: float):
            if body.image is not None and body.input is not None:
                raise InvalidInputError("a search needs exactly one of image, input or vector")
            query = None
            if body.image is not None:
                query = Input(body.image.id or "query", decode_image(body.image.data, "image"))
            elif body.input is not None:
                query = _input(body.input, 0, "input")
            hits = core.search(body.index, query, body.vector, body.k, body.where, deadline)
            return core.gallery.with_thumbnails(body.index, hits)

        return _JSON({"hits": await run(request, work)})

    @app.post("/v1/indexes/{name}/upsert", responses=ERRORS, tags=["indexes"])
    async def upsert(name: str, body: UpsertRequest, request: Request):
        def work(deadline: float):
            items = [{"id": it.id, "metadata": it.metadata, "vector": it.vector, "text": it.text,
                      "image": None if it.image is None else decode_image(it.image, f"items[{n}]")}
                     for n, it in enumerate(body.items)]
            return core.upsert(name, items, deadline, body.dimensions)

        ids, total = await run(request, work)
        return _JSON({"upserted": len(ids), "total": total, "ids": ids})

    @app.delete("/v1/indexes/{name}/items", responses=ERRORS, tags=["indexes"])
    async def delete(name: str, body: DeleteRequest, request: Request):
        n, total = await run(request, lambda d: core.delete(name, body.ids))
        return _JSON({"deleted": n, "total": total})

    @app.get("/v1/indexes", tags=["indexes"])
    async def indexes():
        return _JSON({"indexes": core.list_indexes()})

    @app.get("/v1/indexes/{name}/map", responses=ERRORS, tags=["indexes"])
    async def index_map(name: str, request: Request, limit: int = Query(2000)):
        return _JSON(await run(request, lambda d: core.gallery.index_map(name, limit)))

    @app.get("/v1/indexes/{name}/items/{item_id}/thumbnail", responses=ERRORS, tags=["indexes"],
             response_class=Response)
    async def thumbnail(name: str, item_id: int, request: Request):
        data = await run(request, lambda d: core.gallery.thumbnail(name, item_id))
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    @app.get("/v1/models", tags=["models"])
    async def models():
        rows = core.list_models()  # OpenAI's list holds models; name patterns go beside it
        return _JSON({"object": "list", "data": [
            {"id": m["name"], "object": "model", "created": 0, "owned_by": m["library"], **m}
            for m in rows if not m["family"]],
            "families": [m for m in rows if m["family"]]})

    @app.get("/v1/heads", tags=["heads"])
    async def heads(request: Request):
        return _JSON({"heads": await run(request, lambda d: core.list_heads())})

    @app.get("/v1/heads/{name}", responses=ERRORS, tags=["heads"])
    async def head_report(name: str, request: Request):
        return _JSON(await run(request, lambda d: core.gallery.head_report(name)))

    @app.get("/v1/heads/{name}/figures/{figure}", responses=ERRORS, tags=["heads"],
             response_class=Response)
    async def head_figure(name: str, figure: str, request: Request):
        data = await run(request, lambda d: core.gallery.head_figure(name, figure))
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.get("/v1/drift", responses=ERRORS, tags=["heads"])
    async def drift(request: Request, head: str = ""):
        return _JSON({"heads": await run(request, lambda d: core.drift(head))})

    @app.get("/v1/info", tags=["info"])
    async def info(request: Request):
        return _JSON(await run(request, lambda d: core.info()))

    @app.get("/healthz", tags=["health"])
    async def healthz():
        """Liveness: the process answers."""
        return _JSON({"status": "SERVING"})

    @app.get("/readyz", tags=["health"])
    async def readyz():
        """Readiness: 503 once the server drains (SIGTERM), so a load balancer stops sending."""
        if core.admission.closed:
            return _JSON({"status": "NOT_SERVING"}, 503)
        return _JSON({"status": "SERVING"})

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=WEB), name="static")
    return app


def _errors(app: FastAPI) -> None:
    """Every error leaves as ``{"error": {"message", "type", "code"}}`` (OpenAI's shape)."""

    async def failed(request: Request, exc: _Failed):
        return error_response(request.scope, exc.code, exc.message, exc.status)

    async def core_error(request: Request, exc: EmbedsvcError):
        return error_response(request.scope, *http_error(exc, "http"))

    async def invalid(request: Request, exc: RequestValidationError):
        if request.method in ("POST", "DELETE") and "content-type" not in request.headers:
            return error_response(request.scope, grpc.StatusCode.INVALID_ARGUMENT,
                                  "the body must be JSON, said with Content-Type: "
                                  "application/json (the request had no Content-Type)")
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if request.method in ("POST", "DELETE") and not kind.endswith("json"):
            return error_response(request.scope, grpc.StatusCode.INVALID_ARGUMENT,
                                  f"the body must be JSON (Content-Type: application/json), "
                                  f"got Content-Type {kind!r}")
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        return error_response(request.scope, grpc.StatusCode.INVALID_ARGUMENT,
                              f"{where}: {first.get('msg', 'invalid')}{more}")

    async def http_error(request: Request, exc: HTTPException):
        code = {404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED}.get(
            exc.status_code, grpc.StatusCode.INVALID_ARGUMENT)
        return error_response(request.scope, code, str(exc.detail), exc.status_code)

    async def bug(request: Request, exc: Exception):  # logged by error_status with its trace
        return error_response(request.scope, *http_error(exc, "http"))

    app.add_exception_handler(Exception, bug)
    app.add_exception_handler(_Failed, failed)
    app.add_exception_handler(EmbedsvcError, core_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)

