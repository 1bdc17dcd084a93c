"""The gRPC front door: validates and converts messages, delegates to EmbeddingCore, and maps
core errors to status codes through one table. Health and reflection are served too.

An asyncio server: an idle stream or a slow client costs a coroutine, not a thread, so nothing a
client does can take the slots Health needs. The core's blocking work (decoding, waiting for a
batch) runs in a bounded thread pool behind admission control (``admission.Admission``): a
request beyond the limits is refused at once with RESOURCE_EXHAUSTED, never parked.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..errors import DeadlineExceededError, InvalidInputError
from ..quantize import check_encoding, encode
from ..v1 import embedsvc_pb2 as pb
from ..v1 import embedsvc_pb2_grpc as pb_grpc
from .config import ServeConfig
from .core import EmbeddingCore
from .inputs import Input
from .interceptors import AdmissionInterceptor, TokenAuthInterceptor, end_call
from .listen import FILES_RESERVE, check_listen_addresses, ensure_fd_limit
from .status import PER_ITEM_ERRORS, SERVICE_NAME, count as _count, error_status, public_message

log = logging.getLogger("embedsvc.server")
_ENDED = (asyncio.CancelledError, grpc.aio.AbortError)  # the call is over: nothing to map


def _rpc(method: Callable) -> Callable:
    """Run a unary handler; turn core errors into the status code the table names; count it."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        t0 = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await method(self, request, context)
        except _ENDED:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:  # noqa: BLE001 - every error must become a status, not a crash
            code, details = error_status(exc, method.__name__)
            end_call(context, code, details)
        finally:
            request = None  # noqa: F841 - nothing that outlives the call holds the request
            _count(self.core.metrics, method.__name__, code, t0)

    return wrapper


def _timing(t) -> pb.Timing:
    return pb.Timing(queue_ms=t.queue_ms, inference_ms=t.inference_ms, total_ms=t.total_ms)


def _encoding(options) -> str:
    name = pb.Encoding.Name(options.encoding) if options.encoding in pb.Encoding.values() else \
        str(options.encoding)
    return check_encoding(name.lower())


def _vectors(emb, encoding: str) -> list:
    if encoding == "float":
        return [pb.Vector(id=i, values=v.tolist()) for i, v in zip(emb.ids, emb.vectors)]
    return [pb.Vector(id=i, codes=c.tobytes())
            for i, c in zip(emb.ids, encode(emb.vectors, encoding, emb.ids))]


def _values(vector, what: str) -> list[float]:
    if vector.codes:
        raise InvalidInputError(f"{what}: vectors are sent as float values; codes are only "
                                f"what Embed returns")
    return list(vector.values)


def _provenance(p: dict[str, Any]) -> pb.Provenance:
    import json

    return pb.Provenance(backbone=p["backbone"], weights_sha256=p["weights_sha256"],
                         preprocess_json=json.dumps(p["preprocess"]) if p.get("preprocess") else "",
                         dim=p["dim"], tap=p["tap"], normalized=p["normalized"],
                         modality=p.get("modality") or "image",
                         tokenizer_sha256=p.get("tokenizer_sha256") or "",
                         max_length=p.get("max_length") or 0, pooling=p.get("pooling") or "")


def _input(m: pb.Input, default_id: str) -> Input:
    """A proto Input (or an unset one: no content) → the core's Input."""
    which = m.WhichOneof("content")
    if which is None:
        raise InvalidInputError(f"input {m.id or default_id!r} has neither image nor text")
    return Input(m.id or default_id, m.image if which == "image" else None,
                 m.text if which == "text" else None)


def _inputs(images, inputs) -> list[Input]:
    """A request's ``images`` then its ``inputs``, numbered in that order for default ids."""
    out = [Input(m.id or str(i), image=m.data) for i, m in enumerate(images)]
    return out + [_input(m, str(len(out) + i)) for i, m in enumerate(inputs)]


class EmbeddingServicer(pb_grpc.EmbeddingServiceServicer):
    def __init__(self, core: EmbeddingCore, pool: ThreadPoolExecutor):
        self.core = core
        self.pool = pool

    async def _work(self, context, fn: Callable[[float], Any]):
        """An admitted call's work (AdmissionInterceptor admitted it before reading it)."""
        return await self.core.run(self.pool, context.time_remaining(), fn)

    @_rpc
    async def Embed(self, request, context):
        o = request.options
        inputs = _inputs(request.images, request.inputs)
        encoding = _encoding(o)

        def work(d: float):
            emb, timing = self.core.embed(inputs, o.backbone or None, o.tap, not o.raw, d,
                                          dimensions=o.dimensions or None)
            return emb, timing, _vectors(emb, encoding)

        emb, timing, vectors = await self._work(context, work)
        return pb.EmbedResponse(
            vectors=vectors, provenance=_provenance(emb.provenance), timing=_timing(timing),
            truncated=list(emb.truncated))

    async def EmbedStream(self, request_iterator, context):
        t0, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            with self.core.admission.stream():
                async for result in self._stream(request_iterator, context):
                    yield result
        except _ENDED:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:  # noqa: BLE001
            code, details = error_status(exc, "EmbedStream")
            end_call(context, code, details)
        finally:
            _count(self.core.metrics, "EmbedStream", code, t0)

    async def _stream(self, request_iterator, context):
        idle = self.core.config.stream_idle_timeout_s
        items = request_iterator.__aiter__()
        options, n = None, 0
        while True:
            try:
                item = await asyncio.wait_for(items.__anext__(), idle)
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise DeadlineExceededError(f"no message for {idle:g} s; the stream is closed") from None
            if options is None:
                options, encoding = item.options, _encoding(item.options)
            img_id = (item.input.id if item.HasField("input") else item.image.id) or str(n)
            n += 1
            try:
                one = (_input(item.input, img_id) if item.HasField("input")
                       else Input(img_id, image=item.image.data))
                with self.core.admission.request(item.ByteSize()):  # each message on its own
                    vector = await self._work(context, lambda d: _vectors(self.core.embed(
                        [one], options.backbone or None, options.tap, not options.raw, d,
                        dimensions=options.dimensions or None)[0], encoding)[0])
                yield pb.EmbedResult(vector=vector)
            except PER_ITEM_ERRORS as exc:  # this input only; the stream goes on
                yield pb.EmbedResult(vector=pb.Vector(id=img_id), error=public_message(str(exc)))

    @_rpc
    async def Classify(self, request, context):
        inputs = _inputs(request.images, request.inputs)
        results, timing = await self._work(context, lambda d: self.core.classify(
            inputs, request.head, request.top_k,
            request.abstain_below or None, d, request.max_ood_score or None))
        return pb.ClassifyResponse(head=request.head or "imagenet", timing=_timing(timing), results=[
            pb.Classification(id=r["id"], label=r["label"], probability=r["probability"],
                              ood_score=r["ood_score"], abstained=r["abstained"],
                              truncated=r["truncated"],
                              top=[pb.LabelScore(label=l, probability=p) for l, p in r["top"]])
            for r in results])

    @_rpc
    async def Search(self, request, context):
        which = request.WhichOneof("query")
        query = (Input(request.image.id or "query", image=request.image.data) if which == "image"
                 else _input(request.input, "query") if which == "input" else None)
        vector = _values(request.vector, "the query vector") if which == "vector" else None
        hits = await self._work(context, lambda d: self.core.search(
            request.index, query, vector, request.k, dict(request.where), d))
        return pb.SearchResponse(hits=[pb.Hit(id=i, score=s, metadata=m) for i, s, m in hits])

    @_rpc
    async def Upsert(self, request, context):
        items = []
        for n, it in enumerate(request.items):
            which = it.WhichOneof("content")
            items.append({"id": it.id if it.HasField("id") else None, "metadata": dict(it.metadata),
                          "image": it.image if which == "image" else None,
                          "text": it.text if which == "text" else None,
                          "vector": _values(it.vector, f"item #{n}'s vector") if which == "vector"
                          else None})
        ids, total = await self._work(context,
                                      lambda d: self.core.upsert(request.index, items, d,
                                                                 request.dimensions or None))
        return pb.UpsertResponse(upserted=len(ids), total=total, ids=ids)

    @_rpc
    async def Delete(self, request, context):
        n, total = await self._work(context,
                                    lambda d: self.core.delete(request.index, request.ids))
        return pb.DeleteResponse(deleted=n, total=total)

    @_rpc
    async def ListIndexes(self, request, context):
        return pb.ListIndexesResponse(indexes=[pb.IndexInfo(**i) for i in self.core.list_indexes()])

    @_rpc
    async def ListModels(self, request, context):
        return pb.ListModelsResponse(models=[pb.ModelInfo(**m) for m in self.core.list_models()])

    @_rpc
    async def ListHeads(self, request, context):
        heads = await self._work(context, lambda d: self.core.list_heads())
        return pb.ListHeadsResponse(heads=[pb.HeadInfo(**h) for h in heads])

    @_rpc
    async def GetDrift(self, request, context):
        reports = await self._work(context, lambda d: self.core.drift(request.head))
        return pb.GetDriftResponse(heads=[pb.HeadDrift(**r) for r in reports])

    @_rpc
    async def GetInfo(self, request, context):
        info = await self._work(context, lambda d: self.core.info())
        return pb.GetInfoResponse(**{**info, "batching": pb.BatchingInfo(**info["batching"]),
                                     "snapshots": [pb.IndexSnapshot(**s)
                                                   for s in info["snapshots"]]})


class Server:
    """A running embedsvc gRPC server (its event loop in a thread of its own); ``stop`` drains
    in-flight requests first."""

    def __init__(self, config: ServeConfig):
        self.config = config
        if threading.current_thread() is threading.main_thread():
            # over a file size limit a write should fail with EFBIG (answered as a full disk),
            # not kill the process
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        check_listen_addresses(config)
        # both listeners' connections at their caps, plus files, must fit the process's limit
        ensure_fd_limit(2 * config.max_connections + FILES_RESERVE, "max_connections")
        self.core = EmbeddingCore(config)
        self.pool = ThreadPoolExecutor(config.decode_workers, thread_name_prefix="work")
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="grpc-loop", daemon=True)
        self._thread.start()
        self.http = None
        try:
            self.port = self._call(self._build())
            self.metrics_port = (self.core.metrics.serve_http(config.metrics_port, config.host,
                                                              config.auth_token)
                                 if config.metrics_port is not None else None)
            if config.http_port is not None:
                from .http_server import HttpServer  # fastapi loads only when asked for

                self.http = HttpServer(self.core, self.pool, config)
        except BaseException:
            self._shutdown_loop()
            self.core.close()
            raise
        self.http_port = self.http.port if self.http is not None else None
        self._stopped = False

    def _call(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _build(self) -> int:
        c = self.config
        interceptors = [TokenAuthInterceptor(c.auth_token)] if c.auth_token else []
        interceptors.append(AdmissionInterceptor(self.core))
        options = [("grpc.max_receive_message_length", c.max_message_bytes),
                   ("grpc.max_send_message_length", c.max_message_bytes),
                   ("grpc.so_reuseport", 0)]  # a second server on a taken port must fail
        # Without BDP probing each stream's receive window stays at 64 KiB: a request refused
        # before its message is read leaves the rest of its bytes with the client, instead of
        # megabytes per connection in gRPC's buffers (measured: RSS growth under the load test
        # about halved). High-latency links may turn it on for throughput.
        options.append(("grpc.http2.bdp_probe", int(c.http2_bdp_probe)))
        options += [
            # connections: a cap (gRPC refuses the excess at once), a connection that has not
            # finished its HTTP/2 handshake is closed (a silent TCP connection costs a file
            # descriptor until then), and one with no call for a while too
            ("grpc.max_allowed_incoming_connections", c.max_connections),
            ("grpc.server_handshake_timeout_ms", int(1000 * c.header_timeout_s)),
            ("grpc.max_connection_idle_ms", int(1000 * c.grpc_idle_timeout_s)),
            ("grpc.max_concurrent_streams", c.max_concurrent_streams),
            ("grpc.max_metadata_size", c.max_header_bytes),
            ("grpc.absolute_max_metadata_size", c.max_header_bytes),
            # keepalive enforcement: the server pings an idle client every 60 s (dead peers
            # go within 80 s), and a client that pings more often than every 10 s without a
            # call is told so (GOAWAY after 2 strikes), as gRPC's keepalive guide advises
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 2),
        ]
        self.grpc = grpc.aio.server(interceptors=interceptors, options=options)
        pb_grpc.add_EmbeddingServiceServicer_to_server(EmbeddingServicer(self.core, self.pool),
                                                       self.grpc)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc)
        address = f"{c.host}:{c.port}"
        try:
            if c.tls_cert:
                with open(c.tls_key, "rb") as k, open(c.tls_cert, "rb") as f:
                    creds = grpc.ssl_server_credentials([(k.read(), f.read())])
                port = self.grpc.add_secure_port(address, creds)
            else:
                port = self.grpc.add_insecure_port(address)
        except RuntimeError:
            port = 0
        if port == 0:
            raise InvalidInputError(f"cannot listen on {address}: the port is in use or the "
                                    f"address is not on this machine")
        return port

    def start(self) -> "Server":
        async def start():
            await self.grpc.start()
            for name in ("", SERVICE_NAME):
                await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

        self._call(start())
        if self.http is not None:
            self.http.start()
        log.info("embedsvc serving on %s:%d", self.config.host, self.port)
        return self

    def stop(self, grace: float = 30.0) -> None:
        """Refuse new work, let in-flight requests finish (up to ``grace`` s), then shut down."""
        if self._stopped:
            return
        self._stopped = True
        self.core.admission.close()

        async def stop():
            await self.health.enter_graceful_shutdown()
            await self.grpc.stop(grace)

        http = threading.Thread(target=self.http.stop, args=(grace,), name="http-stop") \
            if self.http is not None else None
        try:
            if http is not None:  # both drain at once
                http.start()
            self._call(stop(), timeout=grace + 10)
            if http is not None:
                http.join(grace + 10)
        finally:
            self.core.close()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def serve_until_signal(self, grace: float = 30.0) -> None:
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        # Python runs signal handlers in the main thread, between bytecodes: a wait without a
        # timeout may never return to run one (a server once ignored SIGTERM for an hour), so
        # wake up every second
        while not done.wait(1.0):
            pass
        log.info("signal received: draining and stopping")
        self.stop(grace)
