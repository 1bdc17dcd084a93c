"""A thin Python client over the generated stubs: bytes or paths (images) or strings (texts) in,
numpy and dicts out. Every call that embeds takes ``images`` or ``texts=``, not both."""
from __future__ import annotations

import json
import os
from typing import Any, Iterator, Sequence

import grpc
import numpy as np

from .datasets.containers import read_input_bytes
from .v1 import embedsvc_pb2 as pb
from .v1 import embedsvc_pb2_grpc as pb_grpc

ImageInput = str | os.PathLike | bytes
RpcError = grpc.RpcError  # what every call raises; ``.code().name`` and ``.details()`` say why


# UNAVAILABLE is retried, with backoff: gRPC's server refuses a new stream (RST_STREAM
# REFUSED_STREAM, before any handler sees it) while a connection's open streams plus those it
# is still releasing exceed max_concurrent_streams, so a client that keeps its connection at
# that limit gets some of its calls refused (measured: 258 of 5,678 calls, 80 threads on one
# channel, limit 60); a draining server answers it too. gRPC retries a refused stream once by
# itself; this policy goes on for up to five attempts (gRPC's cap), backing off up to 1 s (a
# longer backoff makes every call to a dead server wait it out before failing). Every call is safe to repeat: reads
# change nothing, an upsert of the same ids again leaves the same state, and so does a delete
# (whose count, repeated after a lost answer, is of the ids still there).
RETRY_SERVICE_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": pb.DESCRIPTOR.services_by_name["EmbeddingService"].full_name}],
    "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.05s", "maxBackoff": "1s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """Options of every channel the clients open: message limits both ways, the retry policy,
    and a retry buffer that holds a whole message (gRPC's default, 256 KiB, would leave a
    request of a few images unretried)."""
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.service_config", RETRY_SERVICE_CONFIG),
            ("grpc.per_rpc_retry_buffer_size", max_message_bytes)]


def _options(backbone: str, raw: bool, tap: str, dimensions: int, encoding: str) -> pb.EmbedOptions:
    return pb.EmbedOptions(backbone=backbone, raw=raw, tap=tap, dimensions=dimensions,
                           encoding=pb.Encoding.Value(encoding.upper()))


def vectors_of(vectors: Sequence[pb.Vector], encoding: str = "float") -> np.ndarray:
    """The rows of Embed's answer: float32, or the int8 / packed uint8 codes."""
    if encoding == "float":
        return np.array([v.values for v in vectors], dtype=np.float32)
    dtype = np.int8 if encoding == "int8" else np.uint8
    return np.array([np.frombuffer(v.codes, dtype) for v in vectors])


def message_to_dict(msg) -> dict[str, Any]:
    """A response message as plain JSON-ready values: numbers stay numbers (protobuf's own
    JSON printer turns 64-bit integers into strings) and every field is present."""
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = dict(value)
        elif field.message_type is not None:
            out[field.name] = ([message_to_dict(v) for v in value]
                               if field.is_repeated else message_to_dict(value))
        elif field.is_repeated:
            out[field.name] = list(value)
        else:
            out[field.name] = value
    return out


def _image(i: int, img: ImageInput, image_id: str | None) -> pb.Image:
    if isinstance(img, (str, os.PathLike)):
        # a file, or a member of a tar shard, parquet or Arrow file (datasets/containers.py)
        return pb.Image(id=image_id or str(img), data=read_input_bytes(str(img)))
    return pb.Image(id=image_id or str(i), data=bytes(img))


def _texts(texts: Sequence[str], ids: Sequence[str] | None) -> list[pb.Input]:
    return [pb.Input(id=ids[i] if ids else str(i), text=t) for i, t in enumerate(texts)]


def _query(images: Sequence[ImageInput], texts: Sequence[str] | None,
           ids: Sequence[str] | None) -> dict[str, list]:
    """A request's ``images`` or ``inputs`` field, from images or texts."""
    if texts is not None:
        return {"inputs": _texts(texts, ids)}
    return {"images": [_image(i, img, ids[i] if ids else None) for i, img in enumerate(images)]}


class Client:
    """``Client("localhost:50051", token=...)``; every call takes an optional ``timeout`` (s)."""

    def __init__(self, target: str, token: str | None = None, root_certificates: bytes | None = None,
                 max_message_bytes: int = 64 << 20):
        options = channel_options(max_message_bytes)
        if root_certificates is not None:
            self.channel = grpc.secure_channel(
                target, grpc.ssl_channel_credentials(root_certificates), options)
        else:
            self.channel = grpc.insecure_channel(target, options)
        self.stub = pb_grpc.EmbeddingServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def embed(self, images: Sequence[ImageInput] = (), ids: Sequence[str] | None = None,
              backbone: str = "", raw: bool = False, tap: str = "",
              timeout: float | None = None, texts: Sequence[str] | None = None,
              dimensions: int = 0, encoding: str = "float") -> tuple[np.ndarray, pb.EmbedResponse]:
        """``dimensions``: 0 for the encoder's own, else one the server projects to.
        ``encoding``: float (float32 rows), int8 (int8 rows) or binary (packed uint8 rows)."""
        resp = self.stub.Embed(pb.EmbedRequest(
            **_query(images, texts, ids), options=_options(backbone, raw, tap, dimensions, encoding)),
            timeout=timeout, metadata=self.metadata)
        return vectors_of(resp.vectors, encoding), resp

    def embed_stream(self, images: Sequence[ImageInput] = (), ids: Sequence[str] | None = None,
                     backbone: str = "", raw: bool = False, tap: str = "",
                     timeout: float | None = None, texts: Sequence[str] | None = None,
                     ) -> Iterator[pb.EmbedResult]:
        """One answer per input, in order; a bad one is answered with its ``error``."""
        def items():
            for i, one in enumerate(texts if texts is not None else images):
                options = pb.EmbedOptions(backbone=backbone, raw=raw, tap=tap) if i == 0 else None
                name = ids[i] if ids else None
                if texts is not None:
                    yield pb.EmbedItem(input=pb.Input(id=name or str(i), text=one), options=options)
                else:
                    yield pb.EmbedItem(image=_image(i, one, name), options=options)

        return self.stub.EmbedStream(items(), timeout=timeout, metadata=self.metadata)

    def health(self, timeout: float | None = None) -> str:
        """The standard gRPC health check's status: SERVING, NOT_SERVING, ..."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        resp = health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout, metadata=self.metadata)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def classify(self, images: Sequence[ImageInput] = (), head: str = "imagenet", top_k: int = 5,
                 abstain_below: float = 0.0, ids: Sequence[str] | None = None,
                 timeout: float | None = None, max_ood_score: float = 0.0,
                 texts: Sequence[str] | None = None) -> list[dict[str, Any]]:
        resp = self.stub.Classify(pb.ClassifyRequest(
            **_query(images, texts, ids), head=head, top_k=top_k, abstain_below=abstain_below,
            max_ood_score=max_ood_score),
            timeout=timeout, metadata=self.metadata)
        return [{"id": r.id, "label": r.label, "probability": r.probability,
                 "ood_score": r.ood_score, "abstained": r.abstained, "truncated": r.truncated,
                 "top": [(t.label, t.probability) for t in r.top]} for r in resp.results]

    def drift(self, head: str = "", timeout: float | None = None) -> list[pb.HeadDrift]:
        """Drift of each trained head's recent inputs from its training data (GetDrift)."""
        return list(self.stub.GetDrift(pb.GetDriftRequest(head=head), timeout=timeout,
                                       metadata=self.metadata).heads)

    def info(self, timeout: float | None = None) -> pb.GetInfoResponse:
        return self.stub.GetInfo(pb.GetInfoRequest(), timeout=timeout, metadata=self.metadata)

    def models(self, timeout: float | None = None) -> list[pb.ModelInfo]:
        return list(self.stub.ListModels(pb.ListModelsRequest(), timeout=timeout,
                                         metadata=self.metadata).models)

    def heads(self, timeout: float | None = None) -> list[pb.HeadInfo]:
        return list(self.stub.ListHeads(pb.ListHeadsRequest(), timeout=timeout,
                                        metadata=self.metadata).heads)

    def search(self, index: str, image: ImageInput | None = None,
               vector: Sequence[float] | None = None, k: int = 10,
               where: dict[str, str] | None = None, timeout: float | None = None,
               text: str | None = None) -> list[dict]:
        req = pb.SearchRequest(index=index, k=k, where=where or {})
        if image is not None:
            req.image.CopyFrom(_image(0, image, "query"))
        if text is not None:
            req.input.CopyFrom(pb.Input(id="query", text=text))
        if vector is not None:
            req.vector.CopyFrom(pb.Vector(values=list(map(float, vector))))
        resp = self.stub.Search(req, timeout=timeout, metadata=self.metadata)
        return [{"id": h.id, "score": h.score, "metadata": dict(h.metadata)} for h in resp.hits]

    def upsert(self, index: str, items: Sequence[dict[str, Any]],
               timeout: float | None = None, dimensions: int = 0) -> pb.UpsertResponse:
        """items: {"id": int (optional: left out, the server assigns one), "image": path or
        bytes, "text": str, or "vector": floats, "metadata": dict}. The answer's ``ids`` are the
        ids used. ``dimensions``: a new index's, by one of the server's projections."""
        msgs = []
        for it in items:
            m = pb.UpsertItem(metadata=it.get("metadata") or {})
            if it.get("id") is not None:
                m.id = int(it["id"])
            if it.get("image") is not None:
                m.image = _image(0, it["image"], None).data
            elif it.get("text") is not None:
                m.text = it["text"]
            elif it.get("vector") is not None:
                m.vector.CopyFrom(pb.Vector(values=list(map(float, it["vector"]))))
            msgs.append(m)
        return self.stub.Upsert(pb.UpsertRequest(index=index, items=msgs, dimensions=dimensions),
                                timeout=timeout, metadata=self.metadata)

    def delete(self, index: str, ids: Sequence[int], timeout: float | None = None) -> pb.DeleteResponse:
        return self.stub.Delete(pb.DeleteRequest(index=index, ids=list(ids)), timeout=timeout,
                                metadata=self.metadata)

    def indexes(self, timeout: float | None = None) -> list[pb.IndexInfo]:
        return list(self.stub.ListIndexes(pb.ListIndexesRequest(), timeout=timeout,
                                          metadata=self.metadata).indexes)


class AsyncClient:
    """The same calls for asyncio code: ``await AsyncClient(target).embed([...])``."""

    def __init__(self, target: str, token: str | None = None, max_message_bytes: int = 64 << 20):
        options = channel_options(max_message_bytes)
        self.channel = grpc.aio.insecure_channel(target, options)
        self.stub = pb_grpc.EmbeddingServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def embed(self, images: Sequence[ImageInput] = (), ids: Sequence[str] | None = None,
                    backbone: str = "", raw: bool = False, tap: str = "",
                    timeout: float | None = None, texts: Sequence[str] | None = None,
                    dimensions: int = 0, encoding: str = "float") -> np.ndarray:
        resp = await self.stub.Embed(pb.EmbedRequest(
            **_query(images, texts, ids), options=_options(backbone, raw, tap, dimensions, encoding)),
            timeout=timeout, metadata=self.metadata)
        return vectors_of(resp.vectors, encoding)

    async def classify(self, images: Sequence[ImageInput] = (), head: str = "imagenet",
                       top_k: int = 5, timeout: float | None = None,
                       texts: Sequence[str] | None = None) -> list[dict[str, Any]]:
        resp = await self.stub.Classify(pb.ClassifyRequest(
            **_query(images, texts, None), head=head, top_k=top_k),
            timeout=timeout, metadata=self.metadata)
        return [{"id": r.id, "label": r.label, "probability": r.probability,
                 "top": [(t.label, t.probability) for t in r.top]} for r in resp.results]
