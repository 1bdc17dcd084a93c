"""int8 and binary codes a client receives: ``encoding_format`` in /v1/embeddings (the real
``openai`` client too), ``EmbedOptions.encoding`` over gRPC, ``client embed --encoding`` and
``embed --json --encoding``: the same codes everywhere, computed from each vector alone."""
import base64
import json

import grpc
import httpx
import numpy as np
import pytest

from embedsvc.client import Client
from embedsvc.service.config import ServeConfig
from embedsvc.service.grpc_server import Server
from embedsvc.v1 import embedsvc_pb2 as pb
from embedsvc.v1 import embedsvc_pb2_grpc as pb_grpc

TEXTS = ["a fine film, warm and funny", "dull and far too long", "the plot made no sense",
         "I would watch it again"]


def _cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _steps_apart(a, b) -> int:
    return int(np.abs(np.asarray(a, np.int64) - np.asarray(b, np.int64)).max())


def test_codes_are_the_same_over_every_transport_and_the_cli(cli, tiny_store, tmp_path):
    out = tmp_path / "p32"
    assert cli("project", tiny_store.root, "--dimensions", "32", "--out", out).returncode == 0
    image = tiny_store.row(3)["path"]
    data = open(image, "rb").read()
    srv = Server(ServeConfig(port=0, http_port=0, data_dir=str(tmp_path / "data"),
                             default_backbone="tiny-random", projections=[str(out)])).start()
    try:
        with Client(f"127.0.0.1:{srv.port}") as client:
            floats, _ = client.embed(texts=TEXTS, backbone="tiny-text")
            int8, _ = client.embed(texts=TEXTS, backbone="tiny-text", encoding="int8")
            bits, resp = client.embed(texts=TEXTS, backbone="tiny-text", encoding="binary")
            # int8: each vector scaled to +-127 by its own largest magnitude; cosine kept
            assert int8.dtype == np.int8 and int8.shape == floats.shape
            assert (np.abs(int8).max(axis=1) == 127).all()
            assert _cosine(int8, floats).min() > 0.999
            # binary: one bit a dimension, set where the value is > 0, highest bit first
            assert bits.dtype == np.uint8 and bits.shape == (len(TEXTS), floats.shape[1] // 8)
            assert np.array_equal(np.unpackbits(bits, axis=1).astype(bool), floats > 0)
            assert resp.provenance.dim == floats.shape[1] and not resp.vectors[0].values
            # EfficientNet's pooled features are all >= 0 (ReLU6): binary is refused for them
            with pytest.raises(grpc.RpcError) as exc:
                client.embed([image], backbone="effnet-lite0", encoding="binary")
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "dimensions" in exc.value.details()
            # projected vectors (PCA, centred) have signs worth coding
            projected, _ = client.embed([image], backbone="tiny-random", dimensions=32)
            image_bits, _ = client.embed([image], backbone="tiny-random", dimensions=32,
                                         encoding="binary")
            assert np.array_equal(image_bits, np.packbits(projected > 0, axis=1))
            # a stream codes each item alone; a refused item does not end the stream
            stream = list(client.stub.EmbedStream(iter([
                pb.EmbedItem(input=pb.Input(id="t", text=TEXTS[0]), options=pb.EmbedOptions(
                    backbone="tiny-text", encoding=pb.INT8))])))
            # one text alone is padded differently from four: its floats may differ in the last
            # bits, and a value on a rounding boundary by one step
            assert _steps_apart(np.frombuffer(stream[0].vector.codes, np.int8), int8[0]) <= 1
            stub = pb_grpc.EmbeddingServiceStub(client.channel)
            for bad in (pb.EmbedRequest(inputs=[pb.Input(text="x")],
                                        options=pb.EmbedOptions(encoding=7)),
                        pb.SearchRequest(index="none", vector=pb.Vector(codes=b"\x01"))):
                with pytest.raises(grpc.RpcError) as exc:
                    (stub.Embed if isinstance(bad, pb.EmbedRequest) else stub.Search)(bad)
                assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()

        base = f"http://127.0.0.1:{srv.http_port}"
        with httpx.Client(base_url=base, timeout=60) as http:
            for encoding, want in (("int8", int8), ("binary", bits)):
                r = http.post("/v1/embeddings", json={"model": "tiny-text", "input": TEXTS,
                                                      "encoding_format": encoding})
                assert r.status_code == 200, r.text
                assert [d["embedding"] for d in r.json()["data"]] == want.tolist()
            r = http.post("/v1/embeddings", json={"model": "effnet-lite0", "encoding_format": "binary",
                                                  "input": [{"image": base64.b64encode(data).decode()}]})
            assert r.status_code == 400 and "dimensions" in r.json()["error"]["message"], r.text
            r = http.post("/v1/embeddings", json={"model": "tiny-text", "input": TEXTS,
                                                  "encoding_format": "int4"})
            assert r.status_code == 400 and "int8" in r.text, r.text
        from openai import OpenAI

        openai = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        got = openai.embeddings.create(model="tiny-text", input=TEXTS, encoding_format="int8")
        assert [d.embedding for d in got.data] == int8.tolist()
    finally:
        srv.stop(grace=5)

    # the CLI, locally and through the server, prints the same codes
    local = cli("embed", "--backbone", "tiny-text", *sum((["--text", t] for t in TEXTS), []),
                "--json", "--encoding", "int8")
    assert local.returncode == 0, local.stderr
    assert _steps_apart(np.array([row["vector"] for row in json.loads(local.stdout)]), int8) <= 1
    assert {row["dim"] for row in json.loads(local.stdout)} == {floats.shape[1]}
    refused = cli("embed", "--backbone", "tiny-text", "--text", "x", "--encoding", "int8")
    assert refused.returncode == 1 and "--json" in refused.stderr
