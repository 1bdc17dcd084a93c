import hashlib

import pytest

from embedsvc.backbones import (
    DEFAULT_BACKBONE,
    BackboneEntry,
    create_backbone,
    list_backbones,
    register_backbone,
    resolve,
)
from embedsvc.errors import NotFoundError

pytestmark = pytest.mark.slow  # real EfficientNet-Lite weights (see README: Tests and CI)


def test_default_is_lite0_and_listed_with_weights_present():
    assert DEFAULT_BACKBONE == "effnet-lite0"
    rows = {e.name: e for e in list_backbones()}
    for name in ("effnet-lite0", "effnet-lite1", "effnet-lite2"):
        assert rows[name].weights_status() == "present"
        assert rows[name].dim == 1280
    assert {"timm:<model>", "torchvision:<model>", "open_clip:<model>"} <= set(rows)


def test_unknown_name_lists_the_choices():
    with pytest.raises(NotFoundError) as exc:
        resolve("resnet-9000")
    msg = str(exc.value)
    assert "resnet-9000" in msg and "effnet-lite0" in msg and "timm:<model>" in msg


def test_registering_a_name_twice_is_an_error():
    entry = resolve("effnet-lite0")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(BackboneEntry("effnet-lite0", "timm", "dup", entry.builder))


def test_config_reports_provenance(lite0):
    cfg = lite0.cfg
    assert cfg.name == "effnet-lite0" and cfg.architecture == "tf_efficientnet_lite0"
    assert cfg.dim == 1280
    assert cfg.preprocess.input_size == (3, 224, 224)
    assert cfg.preprocess.mean == (0.5, 0.5, 0.5) and cfg.preprocess.std == (0.5, 0.5, 0.5)
    assert cfg.preprocess.interpolation == "bicubic" and cfg.preprocess.crop_pct == 0.875
    assert cfg.num_params == sum(p.numel() for p in lite0.parameters())
    with open(cfg.weights_path, "rb") as f:
        assert cfg.weights_sha256 == hashlib.sha256(f.read()).hexdigest()
    prov = cfg.provenance()
    assert prov["weights_sha256"] == cfg.weights_sha256 and prov["dim"] == 1280


@pytest.mark.parametrize("name,size", [("effnet-lite1", 240), ("effnet-lite2", 260)])
def test_bigger_lite_models_carry_their_own_preprocessing(name, size):
    b = create_backbone(name)
    assert b.cfg.preprocess.input_size == (3, size, size)
    assert b.cfg.dim == 1280


def test_layer_groups_cover_every_parameter_once(lite0):
    groups = lite0.layer_groups()
    names = [n for _, ns in groups for n in ns]
    assert groups[0][0] == "stem" and groups[-1][0] == "head"
    assert sorted(names) == sorted(n for n, _ in lite0.model.named_parameters())
