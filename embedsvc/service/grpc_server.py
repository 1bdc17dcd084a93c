"""The gRPC front door: validates and converts messages, delegates to EmbeddingCore, and maps
core errors to status codes through one table. Health and reflection are served too."""
from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures
from typing import Any, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..errors import (EmbedsvcError, IncompatibleError, InvalidInputError, NotFoundError,
                      ResourceExhaustedError)
from ..v1 import embedsvc_pb2 as pb
from ..v1 import embedsvc_pb2_grpc as pb_grpc
from .batcher import DeadlineExceededError
from .config import ServeConfig
from .core import EmbeddingCore

log = logging.getLogger("embedsvc.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EmbeddingService"].full_name

# One table from core errors to gRPC status codes; the first matching class wins.
STATUS_OF: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (IncompatibleError, grpc.StatusCode.FAILED_PRECONDITION),
    (EmbedsvcError, grpc.StatusCode.INTERNAL),
)


def status_of(exc: BaseException) -> grpc.StatusCode | None:
    for cls, code in STATUS_OF:
        if isinstance(exc, cls):
            return code
    return None


def _rpc(method: Callable) -> Callable:
    """Run a handler; turn core errors into the status code the table names; count the call."""

    def wrapper(self, request, context):
        t0 = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every error must become a status, not a crash
            code = status_of(exc)
            if code is None:
                code = grpc.StatusCode.INTERNAL
                log.exception("internal error in %s", method.__name__)
                context.abort(code, f"internal error: {type(exc).__name__}")
            context.abort(code, str(exc))
        finally:
            m = self.core.metrics
            m.requests.labels(method.__name__, code.name).inc()
            m.latency.labels(method.__name__).observe(time.perf_counter() - t0)

    wrapper.__name__ = method.__name__
    return wrapper


def _deadline(context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _timing(t) -> pb.Timing:
    return pb.Timing(queue_ms=t.queue_ms, inference_ms=t.inference_ms, total_ms=t.total_ms)


def _provenance(p: dict[str, Any]) -> pb.Provenance:
    import json

    return pb.Provenance(backbone=p["backbone"], weights_sha256=p["weights_sha256"],
                         preprocess_json=json.dumps(p["preprocess"]), dim=p["dim"],
                         tap=p["tap"], normalized=p["normalized"])


def _images(msgs) -> list[tuple[str, bytes]]:
    return [(m.id or str(i), m.data) for i, m in enumerate(msgs)]


class EmbeddingServicer(pb_grpc.EmbeddingServiceServicer):
    def __init__(self, core: EmbeddingCore):
        self.core = core

    @_rpc
    def Embed(self, request, context):
        o = request.options
        emb, timing = self.core.embed(_images(request.images), o.backbone or None, o.tap,
                                      not o.raw, _deadline(context))
        return pb.EmbedResponse(
            vectors=[pb.Vector(id=i, values=v.tolist()) for i, v in zip(emb.ids, emb.vectors)],
            provenance=_provenance(emb.provenance), timing=_timing(timing))

    def EmbedStream(self, request_iterator, context):
        options = None
        for n, item in enumerate(request_iterator):
            options = options or item.options
            img_id = item.image.id or str(n)
            try:
                emb, _ = self.core.embed([(img_id, item.image.data)], options.backbone or None,
                                         options.tap, not options.raw, _deadline(context))
                yield pb.EmbedResult(vector=pb.Vector(id=img_id, values=emb.vectors[0].tolist()))
            except (InvalidInputError, DeadlineExceededError) as exc:  # this image only
                yield pb.EmbedResult(vector=pb.Vector(id=img_id), error=str(exc))
            except EmbedsvcError as exc:
                context.abort(status_of(exc) or grpc.StatusCode.INTERNAL, str(exc))

    @_rpc
    def Classify(self, request, context):
        results, timing = self.core.classify(
            _images(request.images), request.head, request.top_k,
            request.abstain_below or None, _deadline(context))
        return pb.ClassifyResponse(head=request.head or "imagenet", timing=_timing(timing), results=[
            pb.Classification(id=r["id"], label=r["label"], probability=r["probability"],
                              ood_score=r["ood_score"], abstained=r["abstained"],
                              top=[pb.LabelScore(label=l, probability=p) for l, p in r["top"]])
            for r in results])

    @_rpc
    def Search(self, request, context):
        which = request.WhichOneof("query")
        image = (request.image.id or "query", request.image.data) if which == "image" else None
        vector = list(request.vector.values) if which == "vector" else None
        hits = self.core.search(request.index, image, vector, request.k, dict(request.where),
                                _deadline(context))
        return pb.SearchResponse(hits=[pb.Hit(id=i, score=s, metadata=m) for i, s, m in hits])

    @_rpc
    def Upsert(self, request, context):
        items = []
        for it in request.items:
            which = it.WhichOneof("content")
            items.append({"id": it.id, "metadata": dict(it.metadata),
                          "image": it.image if which == "image" else None,
                          "vector": list(it.vector.values) if which == "vector" else None})
        n, total = self.core.upsert(request.index, items, _deadline(context))
        return pb.UpsertResponse(upserted=n, total=total)

    @_rpc
    def Delete(self, request, context):
        n, total = self.core.delete(request.index, list(request.ids))
        return pb.DeleteResponse(deleted=n, total=total)

    @_rpc
    def ListIndexes(self, request, context):
        return pb.ListIndexesResponse(indexes=[pb.IndexInfo(**i) for i in self.core.list_indexes()])

    @_rpc
    def ListModels(self, request, context):
        return pb.ListModelsResponse(models=[pb.ModelInfo(**m) for m in self.core.list_models()])

    @_rpc
    def ListHeads(self, request, context):
        return pb.ListHeadsResponse(heads=[pb.HeadInfo(**h) for h in self.core.list_heads()])

    @_rpc
    def GetInfo(self, request, context):
        info = self.core.info()
        c = self.core.config
        b = c.batching
        return pb.GetInfoResponse(
            version=info["version"], device=info["device"],
            default_backbone=info["default_backbone"], loaded_backbones=info["loaded_backbones"],
            batching=pb.BatchingInfo(max_batch_size=b.max_batch_size,
                                     max_queue_delay_ms=int(b.max_queue_delay_ms),
                                     max_queue_size=b.max_queue_size, **info["batching"]),
            max_images_per_request=c.max_images_per_request,
            max_bytes_per_image=c.max_bytes_per_image,
            max_pixels_per_image=c.max_pixels_per_image)


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Bearer-token check on every call except health checks (load balancers probe those)."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}"

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith("/grpc.health.v1.Health/"):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        if metadata.get("authorization") != self._expected:
            return self._deny
        return continuation(handler_call_details)


class Server:
    """A running embedsvc gRPC server; ``stop`` drains in-flight requests first."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.core = EmbeddingCore(config)
        interceptors = [TokenAuthInterceptor(config.auth_token)] if config.auth_token else []
        options = [("grpc.max_receive_message_length", config.max_message_bytes),
                   ("grpc.max_send_message_length", config.max_message_bytes)]
        self.grpc = grpc.server(futures.ThreadPoolExecutor(config.decode_workers,
                                                           thread_name_prefix="rpc"),
                                interceptors=interceptors, options=options)
        pb_grpc.add_EmbeddingServiceServicer_to_server(EmbeddingServicer(self.core), self.grpc)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc)
        address = f"{config.host}:{config.port}"
        if config.tls_cert:
            with open(config.tls_key, "rb") as k, open(config.tls_cert, "rb") as c:
                creds = grpc.ssl_server_credentials([(k.read(), c.read())])
            self.port = self.grpc.add_secure_port(address, creds)
        else:
            self.port = self.grpc.add_insecure_port(address)
        if self.port == 0:
            raise InvalidInputError(f"cannot listen on {address}")
        self.metrics_port = (self.core.metrics.serve_http(config.metrics_port, config.host)
                             if config.metrics_port is not None else None)

    def start(self) -> "Server":
        self.grpc.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("embedsvc serving on %s:%d", self.config.host, self.port)
        return self

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace`` s), then shut down."""
        self.health.enter_graceful_shutdown()
        self.grpc.stop(grace).wait()
        self.core.close()

    def serve_until_signal(self) -> None:
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
        log.info("signal received: draining and stopping")
        self.stop()
