"""A thin Python client over the generated stubs: bytes or paths in, numpy and dicts out."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import grpc
import numpy as np

from .v1 import embedsvc_pb2 as pb
from .v1 import embedsvc_pb2_grpc as pb_grpc

ImageInput = str | os.PathLike | bytes


def _image(i: int, img: ImageInput, image_id: str | None) -> pb.Image:
    if isinstance(img, (str, os.PathLike)):
        return pb.Image(id=image_id or str(img), data=Path(img).read_bytes())
    return pb.Image(id=image_id or str(i), data=bytes(img))


class Client:
    """``Client("localhost:50051", token=...)``; every call takes an optional ``timeout`` (s)."""

    def __init__(self, target: str, token: str | None = None, root_certificates: bytes | None = None,
                 max_message_bytes: int = 64 << 20):
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes)]
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

    def _images(self, images: Sequence[ImageInput], ids: Sequence[str] | None):
        return [_image(i, img, ids[i] if ids else None) for i, img in enumerate(images)]

    def embed(self, images: Sequence[ImageInput], ids: Sequence[str] | None = None,
              backbone: str = "", raw: bool = False, tap: str = "",
              timeout: float | None = None) -> tuple[np.ndarray, pb.EmbedResponse]:
        resp = self.stub.Embed(pb.EmbedRequest(
            images=self._images(images, ids),
            options=pb.EmbedOptions(backbone=backbone, raw=raw, tap=tap)),
            timeout=timeout, metadata=self.metadata)
        return np.array([v.values for v in resp.vectors], dtype=np.float32), resp

    def classify(self, images: Sequence[ImageInput], head: str = "imagenet", top_k: int = 5,
                 abstain_below: float = 0.0, ids: Sequence[str] | None = None,
                 timeout: float | None = None) -> list[dict[str, Any]]:
        resp = self.stub.Classify(pb.ClassifyRequest(
            images=self._images(images, ids), head=head, top_k=top_k, abstain_below=abstain_below),
            timeout=timeout, metadata=self.metadata)
        return [{"id": r.id, "label": r.label, "probability": r.probability,
                 "ood_score": r.ood_score, "abstained": r.abstained,
                 "top": [(t.label, t.probability) for t in r.top]} for r in resp.results]

    def info(self, timeout: float | None = None) -> pb.GetInfoResponse:
        return self.stub.GetInfo(pb.GetInfoRequest(), timeout=timeout, metadata=self.metadata)

    def models(self, timeout: float | None = None) -> list[pb.ModelInfo]:
        return list(self.stub.ListModels(pb.ListModelsRequest(), timeout=timeout,
                                         metadata=self.metadata).models)

    def heads(self, timeout: float | None = None) -> list[pb.HeadInfo]:
        return list(self.stub.ListHeads(pb.ListHeadsRequest(), timeout=timeout,
                                        metadata=self.metadata).heads)
