"""Proves the Lite weights are real and our key mapping and preprocessing are right."""
import numpy as np
import pytest
import torch

from classifiers.heads.imagenet import ImageNetHead
from embedsvc.backbones import create_backbone
from embedsvc.backbones.effnet_lite import convert_state_dict, weights_file
from embedsvc.extract import ExtractConfig, FeatureExtractor
from embedsvc.preprocess import build_transform, normalize

pytestmark = pytest.mark.slow  # real EfficientNet-Lite weights (see README: Tests and CI)

CAT_CLASSES = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}


def test_logits_match_the_independent_reference_implementation(lite0, photo_images):
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(weights_file("effnet-lite0"), map_location="cpu",
                                   weights_only=True), strict=True)
    ref.eval()
    tf = build_transform(lite0.cfg.preprocess)
    x = normalize(torch.stack([tf(photo_images[n].convert("RGB")) for n in ("chelsea", "coffee", "rocket")]),
                  lite0.cfg.preprocess)
    with torch.inference_mode():
        ours = lite0.model(x)
        theirs = ref(x)
    assert ours.shape == theirs.shape == (3, 1000)
    assert torch.max(torch.abs(ours - theirs)).item() < 1e-4


def test_our_preprocessing_equals_timms_eval_transform(lite0, photo_images):
    from timm.data import create_transform, resolve_model_data_config

    timm_tf = create_transform(**resolve_model_data_config(lite0.model), is_training=False)
    ours = build_transform(lite0.cfg.preprocess)
    for img in photo_images.values():
        img = img.convert("RGB")
        assert torch.equal(normalize(ours(img)[None], lite0.cfg.preprocess)[0], timm_tf(img))


def test_mapping_rejects_a_model_with_other_stages():
    old = torch.load(weights_file("effnet-lite0"), map_location="cpu", weights_only=True)
    with pytest.raises(KeyError):
        convert_state_dict(old, [1, 2, 2])  # fewer blocks than the weights have


def _top5(backbone, photos, names):
    fe = FeatureExtractor(backbone, ExtractConfig(normalize=False))
    emb = fe.embed([photos[n] for n in names], ids=names)
    return {p.id: [label for label, _ in p.top] for p in ImageNetHead.from_backbone(backbone).predict(emb)}


def test_lite0_recognises_a_cat_and_an_espresso(lite0, photos):
    top = _top5(lite0, photos, ["chelsea", "coffee"])
    assert CAT_CLASSES & set(top["chelsea"]), top["chelsea"]
    assert {"espresso", "cup"} & set(top["coffee"]), top["coffee"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["effnet-lite1", "effnet-lite2"])
def test_bigger_lite_models_recognise_the_cat_too(name, photos):
    top = _top5(create_backbone(name), photos, ["chelsea", "coffee"])
    assert CAT_CLASSES & set(top["chelsea"]), top["chelsea"]
    assert {"espresso", "cup"} & set(top["coffee"]), top["coffee"]


def test_head_refuses_normalised_or_foreign_embeddings(lite0, photos):
    from embedsvc.errors import IncompatibleError

    head = ImageNetHead.from_backbone(lite0)
    normalised = FeatureExtractor(lite0).embed([photos["chelsea"]])
    with pytest.raises(IncompatibleError, match="normalized"):
        head.predict(normalised)
    raw = FeatureExtractor(lite0, ExtractConfig(normalize=False)).embed([photos["chelsea"]])
    foreign = type(raw)(raw.vectors, raw.ids, {**raw.provenance, "weights_sha256": "0" * 64})
    with pytest.raises(IncompatibleError, match="weights_sha256"):
        head.predict(foreign)
    assert np.isclose(head.predict_proba(raw).sum(), 1.0, atol=1e-5)
