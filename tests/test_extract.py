"""Feature extraction on real photos: determinism, batch invariance, taps and provenance."""
import io

import numpy as np
import torch
import pytest

from embedsvc.embeddings import Embeddings
from embedsvc.errors import ImageDecodeError, InvalidInputError
from embedsvc.extract import ExtractConfig, FeatureExtractor, pad_batch, padded_size

pytestmark = pytest.mark.slow  # real EfficientNet-Lite weights (see README: Tests and CI)


def _crops(photo_images, n=32):
    """n different real images: crops of the photos at varied positions and sizes."""
    rng = np.random.default_rng(0)
    names = sorted(photo_images)
    out = []
    for i in range(n):
        img = photo_images[names[i % len(names)]]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.5, 0.9)), int(h * rng.uniform(0.5, 0.9))
        x, y = int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))
        out.append(img.crop((x, y, x + cw, y + ch)))
    return out


def test_identical_across_runs_and_batch_sizes(lite0, photo_images):
    images = _crops(photo_images)
    a = FeatureExtractor(lite0, ExtractConfig(batch_size=32)).embed(images).vectors
    b = FeatureExtractor(lite0, ExtractConfig(batch_size=32)).embed(images).vectors
    one = FeatureExtractor(lite0, ExtractConfig(batch_size=1)).embed(images).vectors
    assert a.shape == (32, 1280) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.abs(a - one).max() < 1e-5
    # different images really give different vectors
    assert np.abs(a[0] - a[1]).max() > 1e-2


def test_vectors_are_unit_length_by_default(lite0, photos):
    emb = FeatureExtractor(lite0).embed([photos["chelsea"], photos["coffee"]])
    assert np.allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
    raw = FeatureExtractor(lite0, ExtractConfig(normalize=False)).embed([photos["chelsea"]])
    assert np.linalg.norm(raw.vectors) > 2.0
    assert np.allclose(raw.vectors / np.linalg.norm(raw.vectors), emb.vectors[:1], atol=1e-5)


def test_paths_bytes_and_pil_give_the_same_vector(lite0, photos, photo_images):
    fe = FeatureExtractor(lite0)
    v = fe.embed([photos["rocket"], photos["rocket"].read_bytes(), photo_images["rocket"]]).vectors
    assert np.abs(v[0] - v[1]).max() < 1e-6 and np.abs(v[0] - v[2]).max() < 1e-6


@pytest.mark.parametrize("tap,dim", [("early", 24), ("middle", 40), ("late", 320)])
def test_layer_taps_pool_earlier_stages(lite0, photos, tap, dim):
    emb = FeatureExtractor(lite0, ExtractConfig(tap=tap)).embed([photos["chelsea"], photos["coffee"]])
    assert emb.vectors.shape == (2, dim)
    assert emb.provenance["tap"] == tap and emb.provenance["dim"] == dim
    assert np.allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)


def test_unknown_tap_lists_the_choices(lite0):
    with pytest.raises(InvalidInputError, match="early, middle, late"):
        FeatureExtractor(lite0, ExtractConfig(tap="penultimate"))


def test_provenance_travels_with_the_vectors(lite0, photos, tmp_path):
    emb = FeatureExtractor(lite0).embed([photos["chelsea"]], ids=["cat"])
    p = emb.provenance
    assert p["backbone"] == "effnet-lite0" and p["weights_sha256"] == lite0.cfg.weights_sha256
    assert p["preprocess"]["mean"] == [0.5, 0.5, 0.5] and p["normalized"] is True
    path = emb.save(tmp_path / "v.npy")
    back = Embeddings.load(path)
    assert back.ids == ("cat",) and back.provenance == p
    assert np.array_equal(back.vectors, emb.vectors)


def test_bad_image_raises_or_is_skipped(lite0, photos):
    items = [photos["chelsea"], b"garbage", photos["coffee"]]
    fe = FeatureExtractor(lite0)
    with pytest.raises(ImageDecodeError, match="bad-one"):
        fe.embed(items, ids=["cat", "bad-one", "coffee"])
    emb = fe.embed(items, ids=["cat", "bad-one", "coffee"], skip_bad=True)
    assert emb.ids == ("cat", "coffee") and emb.vectors.shape == (2, 1280)
    assert emb.skipped[0][0] == "bad-one"


def test_grayscale_photo_embeds_like_its_rgb_copy(lite0, photo_images):
    gray = photo_images["camera"]
    assert gray.mode == "L"
    buf = io.BytesIO()
    gray.convert("RGB").save(buf, format="PNG")
    v = FeatureExtractor(lite0).embed([gray, buf.getvalue()]).vectors
    assert np.abs(v[0] - v[1]).max() < 1e-6


def test_bad_batch_size_is_rejected():
    with pytest.raises(InvalidInputError, match="batch_size"):
        ExtractConfig(batch_size=0)


def test_a_padded_batch_gives_the_same_rows(lite0, photo_images):
    """On CUDA batches run padded to a power of two (extract.pad_batch); the zero rows must not
    change the real ones. Checked on the CPU, where the same padding is applied by hand."""
    assert [padded_size(n) for n in (1, 2, 3, 5, 32, 33, 64)] == [1, 2, 4, 8, 32, 64, 64]
    fe = FeatureExtractor(lite0)
    x = torch.stack([fe.prepare(img)[0] for img in _crops(photo_images, 5)])
    padded = pad_batch(x)
    assert padded.shape[0] == 8 and not padded[5:].any()
    assert np.abs(fe.embed_tensor(padded)[:5] - fe.embed_tensor(x)).max() < 1e-5
