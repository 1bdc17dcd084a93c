"""Layer freezing on the real effnet-lite0: frozen weights and BatchNorm statistics stay
bitwise the same through training steps; unfrozen ones learn."""
import pytest
import torch

from classifiers.finetune import (freeze_by_pattern, freeze_stages, frozen_batchnorms,
                                  stage_report, train_mode)
from embedsvc.backbones import create_backbone
from embedsvc.errors import InvalidInputError
from embedsvc.preprocess import build_transform, normalize

pytestmark = pytest.mark.slow  # real EfficientNet-Lite weights (see README: Tests and CI)


@pytest.fixture
def backbone():
    return create_backbone("effnet-lite0")  # a fresh copy: these tests change it


def test_freezing_the_first_stages_keeps_them_and_their_bn_statistics(backbone, photo_images):
    groups = backbone.layer_groups()
    assert [n for n, _ in groups][:2] == ["stem", "stage1"] and groups[-1][0] == "head"
    report = freeze_stages(backbone, 5)  # stem + stages 1-4
    assert [s.trainable for s in report.stages[:5]] == [0] * 5
    assert all(s.frozen == 0 for s in report.stages[5:]) and report.trainable > 0
    assert "total" in report.table()

    tf = build_transform(backbone.cfg.preprocess)
    imgs = [im.convert("RGB") for im in photo_images.values()]
    x = normalize(torch.stack([tf(im) for im in imgs] * 2), backbone.cfg.preprocess)
    y = torch.arange(len(x)) % 3
    head = torch.nn.Linear(backbone.cfg.dim, 3)
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    trainable = [p for p in backbone.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.SGD(trainable, lr=0.1)
    train_mode(backbone)
    assert frozen_batchnorms(backbone) and not any(bn.training for bn in frozen_batchnorms(backbone))
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(backbone(x)), y).backward()
        opt.step()
    after = backbone.model.state_dict()
    frozen_names = {n for _, names in backbone.layer_groups()[:5] for n in names}
    for name, value in after.items():
        module_path = name.rsplit(".", 1)[0]
        in_frozen = any(n.rsplit(".", 1)[0] == module_path for n in frozen_names)
        if in_frozen:  # weights and running statistics of frozen layers: bitwise equal
            assert torch.equal(value, before[name]), name
    changed = [n for _, names in backbone.layer_groups()[5:] for n in names
               if not torch.equal(after[n], before[n])]
    assert changed, "unfrozen stages should learn"


def test_freeze_by_pattern_and_errors(backbone):
    r = freeze_by_pattern(backbone, r"^blocks\.[0-2]\.")
    assert r.stages[0].frozen == 0 and r.stages[1].trainable == 0 and r.stages[4].frozen == 0
    unfrozen = freeze_by_pattern(backbone, r"^blocks\.", freeze=False)
    assert unfrozen.frozen == 0 and stage_report(backbone).frozen == 0
    with pytest.raises(InvalidInputError, match="matches no parameter"):
        freeze_by_pattern(backbone, r"^nothing")
    with pytest.raises(InvalidInputError, match="bad freeze pattern"):
        freeze_by_pattern(backbone, r"(")
    with pytest.raises(InvalidInputError, match="stage groups"):
        freeze_stages(backbone, 99)
    assert freeze_stages(backbone, len(backbone.layer_groups())).trainable == 0


def test_update_frozen_bn_lets_their_statistics_follow_the_data(backbone, photo_images):
    freeze_stages(backbone, 5)
    tf = build_transform(backbone.cfg.preprocess)
    x = normalize(torch.stack([tf(im.convert("RGB")) for im in photo_images.values()]), backbone.cfg.preprocess)
    bn = frozen_batchnorms(backbone)[0]
    before = bn.running_mean.clone()
    train_mode(backbone, update_frozen_bn=True)
    assert bn.training
    with torch.no_grad():
        backbone(x)
    assert not torch.equal(bn.running_mean, before)  # statistics moved, weights still frozen
    assert not any(p.requires_grad for p in bn.parameters())
