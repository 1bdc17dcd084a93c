"""Backbones load from local files only: with sockets blocked, every family either loads from
its standard cache / --weights or fails with an error that names the file it expected."""
import json

import numpy as np
import pytest
import torch

from embedsvc.backbones import create_backbone
from embedsvc.errors import InvalidInputError, WeightsNotFoundError
from embedsvc.extract import FeatureExtractor


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path


def test_default_backbone_loads_and_embeds_with_sockets_blocked(no_network, photos):
    emb = FeatureExtractor(create_backbone("effnet-lite0")).embed([photos["chelsea"]])
    assert emb.vectors.shape == (1, 1280)


@pytest.mark.parametrize("name,expected", [
    ("torchvision:mobilenet_v3_small", "torch/hub/checkpoints/mobilenet_v3_small-047dcff4.pth"),
    ("timm:mobilenetv3_small_050", "models--timm--mobilenetv3_small_050.lamb_in1k"),
    ("open_clip:ViT-B-32@openai", "models--timm--vit_base_patch32_clip_224.openai"),
])
def test_missing_weights_name_the_expected_file(no_network, empty_caches, name, expected):
    with pytest.raises(WeightsNotFoundError) as exc:
        create_backbone(name)
    msg = str(exc.value)
    assert expected in msg and "Nothing is downloaded" in msg and "\n" not in msg


def test_explicit_weights_path_that_does_not_exist(no_network, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        create_backbone("effnet-lite0", weights=str(tmp_path / "nope.pth"))


def test_torchvision_loads_from_torch_home(no_network, empty_caches, photos):
    import torchvision.models as tvm

    model = tvm.get_model("mobilenet_v3_small", weights=None)
    ckpt = empty_caches / "torch" / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(model.state_dict(), ckpt)
    b = create_backbone("torchvision:mobilenet_v3_small")
    assert b.cfg.dim == 1024 and b.cfg.preprocess.input_size == (3, 224, 224)
    assert b.cfg.preprocess.interpolation == "bilinear" and b.imagenet_classifier() is not None
    v = FeatureExtractor(b).embed([photos["coffee"]]).vectors
    # the loaded weights are the saved ones, and the features come from the penultimate layer
    x = torch.randn(1, 3, 224, 224)
    model.eval()
    with torch.inference_mode():
        assert torch.allclose(b.model(x), model(x), atol=1e-5)
    assert v.shape == (1, 1024)


def test_timm_loads_from_the_hugging_face_cache(no_network, empty_caches):
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("mobilenetv3_small_050")
    snap = empty_caches / "hf" / "hub" / "models--timm--mobilenetv3_small_050.lamb_in1k" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, snap / "model.safetensors")
    b = create_backbone("timm:mobilenetv3_small_050")
    assert b.cfg.weights_path.endswith("model.safetensors")
    x = torch.randn(2, 3, 224, 224)
    model.eval()
    with torch.inference_mode():
        assert torch.allclose(b.model(x), model(x), atol=1e-5)
        assert b(x).shape == (2, b.cfg.dim)


def test_weights_of_another_architecture_are_refused(no_network, tmp_path):
    import timm

    path = tmp_path / "wrong.pth"
    torch.save(timm.create_model("mobilenetv3_small_050").state_dict(), path)
    with pytest.raises(InvalidInputError, match="does not fit"):
        create_backbone("timm:resnet18", weights=str(path))


def test_open_clip_with_a_local_checkpoint(no_network, tmp_path, photos):
    import open_clip

    # architectures are data in open_clip: a tiny one keeps the test fast
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
           "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "embedsvc-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "embedsvc-tiny-clip.json")
    model = open_clip.create_model("embedsvc-tiny-clip")
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    b = create_backbone("open_clip:embedsvc-tiny-clip", weights=str(tmp_path / "tiny.pt"))
    assert b.cfg.dim == 32 and b.cfg.preprocess.input_size == (3, 64, 64)
    emb = FeatureExtractor(b).embed([photos["chelsea"]])
    assert emb.vectors.shape == (1, 32) and np.isclose(np.linalg.norm(emb.vectors), 1, atol=1e-5)
