"""Closing a domain gap: the domain losses on tiny tensors, the augmentation presets, MixStyle,
aligned heads on real Fashion-MNIST embeddings, and the advisor's adaptation rules."""
from __future__ import annotations


import math

import numpy as np
import pytest
import torch

from classifiers.adapt.align import fit_alignment
from classifiers.adapt.augment import PRESETS, apply_presets, parse_presets
from classifiers.adapt.gap import Gap
from classifiers.adapt.losses import (DomainLoss, coral_loss, dann_ramp, entropy_loss, mmd_loss,
                                      reverse_gradient)
from classifiers.adapt.mixstyle import MixStyle, early_stage_modules
from classifiers.finetune.advisor import recommend, recommend_adaptation
from embedsvc.errors import InvalidInputError


# -- the domain losses ------------------------------------------------------------------------------
def test_gradient_reversal_is_the_identity_forward_and_flips_the_gradient_backward():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.5 * w)
    assert dann_ramp(0.0) == 0.0 and 0.99 < dann_ramp(1.0) < 1.0
    assert dann_ramp(0.1) < dann_ramp(0.3) < dann_ramp(0.6)


def test_dann_trains_the_discriminator_and_sends_the_features_the_opposite_gradient():
    torch.manual_seed(0)
    loss = DomainLoss("dann", 8).eval()  # no dropout: two forwards give the same values
    s, t = torch.randn(16, 8, requires_grad=True), torch.randn(16, 8) + 2
    value = loss(s, t, progress=1.0)
    value.backward()
    assert value.item() > 0
    assert all(p.grad.abs().sum() > 0 for p in loss.discriminator.parameters())
    # the discriminator's own loss without the reversal: the features' gradient has the other sign
    plain_s = s.detach().clone().requires_grad_()
    labels = torch.cat([torch.zeros(16), torch.ones(16)])
    torch.nn.functional.binary_cross_entropy_with_logits(
        loss.discriminator(torch.cat([plain_s, t])), labels).backward()
    assert torch.allclose(s.grad, -dann_ramp(1.0) * plain_s.grad, atol=1e-7)
    assert plain_s.grad.abs().sum() > 0


def test_coral_is_zero_for_the_same_covariance_and_grows_with_a_different_one():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 5, generator=g)
    assert coral_loss(a, a + 3.0).item() == pytest.approx(0.0, abs=1e-7)  # a shift, same covariance
    assert coral_loss(a, a[torch.randperm(64, generator=g)]).item() == pytest.approx(0.0, abs=1e-7)
    assert coral_loss(a, a * torch.tensor([1, 1, 1, 1, 4.0])).item() > 0.05


def test_mmd_is_about_zero_for_two_samples_of_one_distribution_and_not_for_two():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g)
    same = mmd_loss(a, b).item()
    shifted = mmd_loss(a, b + 1.5).item()
    assert 0 <= same < 0.01 and shifted > 10 * same and shifted > 0.1
    x = torch.randn(8, 3, requires_grad=True)
    mmd_loss(x, torch.randn(8, 3) + 1).backward()
    assert x.grad.abs().sum() > 0  # differentiable: a backbone can train through it


def test_entropy_is_low_for_confident_predictions_and_an_unknown_method_lists_the_valid_ones():
    assert entropy_loss(torch.tensor([[20.0, 0, 0]])).item() < 1e-6
    assert entropy_loss(torch.zeros(2, 4)).item() == pytest.approx(np.log(4), rel=1e-5)
    with pytest.raises(InvalidInputError, match="dann, coral, mmd"):
        DomainLoss("adabn", 4)


# -- augmentation presets and MixStyle ------------------------------------------------------------
def _batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(4, 3, 48, 48, dtype=torch.uint8)
    x[:, :, 12:36, 16:32] = 200  # an object on a dark background
    return x + torch.randint(0, 20, x.shape, generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_changes_images_reproducibly_and_keeps_their_shape(preset):
    x = _batch()
    a = apply_presets(x, (preset,), torch.Generator().manual_seed(7))
    b = apply_presets(x, (preset,), torch.Generator().manual_seed(7))
    c = apply_presets(x, (preset,), torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b)  # the epoch's generator decides: resumed runs see the same images
    assert not torch.equal(a, x) and not torch.equal(a, c)


def test_lighting_darkens_and_brightens_and_camera_blurs():
    x = _batch().repeat(8, 1, 1, 1)
    lit = apply_presets(x, ("lighting",), torch.Generator().manual_seed(0)).float().mean(dim=(1, 2, 3))
    base = x.float().mean()
    assert lit.min() < 0.7 * base and lit.max() > 0.95 * base
    cam = apply_presets(x, ("camera",), torch.Generator().manual_seed(0)).float()
    edge = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()  # noqa: E731
    assert edge(cam[:, :, 20:28]) < edge(x.float()[:, :, 20:28])  # the object's edges are softer


def test_preset_names_are_checked():
    assert parse_presets("camera, lighting,camera") == ("camera", "lighting")
    assert parse_presets("") == ()
    with pytest.raises(InvalidInputError, match="lighting, camera, background, style"):
        parse_presets("fog")


def test_mixstyle_mixes_feature_statistics_in_training_only(lite0):
    torch.manual_seed(0)
    mix = MixStyle(p=1.0)
    x = torch.randn(6, 4, 5, 5) * torch.arange(1, 7).view(6, 1, 1, 1)
    y = mix(x)
    assert not torch.equal(y, x)
    assert y.mean(dim=(2, 3)).std() < x.mean(dim=(2, 3)).std() * 1.5  # statistics moved, not blown up
    mix.eval()
    assert torch.equal(mix(x), x)
    modules = early_stage_modules(lite0)
    assert len(modules) == 3 and any(modules[0] is m for m in lite0.model.blocks[0].modules())


def test_augment_preview_writes_a_grid(cli, photos, tmp_path):
    from PIL import Image

    image = next(iter(photos.values()))
    p = cli("augment-preview", image, "--augment", "lighting,camera", "--n", "7", "--size", "96",
            "--out", tmp_path / "grid.png")
    assert p.returncode == 0, p.stderr
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (4 * 98, 2 * 98)
    bad = cli("augment-preview", image, "--augment", "fog")
    assert bad.returncode == 2 and "lighting, camera, background, style" in bad.stderr


# -- aligned heads ----------------------------------------------------------------------------------
def test_alignment_gives_the_source_the_targets_statistics():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(2000, 6))
    t = rng.normal(size=(2000, 6)) @ np.diag([3, 1, 1, 0.5, 1, 2]) + 5
    for method in ("coral", "mean-std"):
        a = fit_alignment(method, s, t).apply(s)
        assert np.allclose(a.mean(0), t.mean(0), atol=1e-6)
        # the ridge pulls small variances up a little; the stds move most of the way
        gap_before, gap_after = np.abs(s.std(0) - t.std(0)), np.abs(a.std(0) - t.std(0))
        assert (gap_after < 0.25).all() and gap_after.sum() < gap_before.sum() / 4
    with pytest.raises(InvalidInputError, match="coral, mean-std"):
        fit_alignment("whiten", s, t)
    with pytest.raises(InvalidInputError, match="at least 20"):
        fit_alignment("coral", s, t[:5])


N_SHIFTED = 600


@pytest.mark.slow
def test_a_coral_head_beats_the_unaligned_one_on_a_shifted_store_and_stores_its_transform(
        cli, fmnist_store, fmnist_dir, tmp_path):
    """Real embeddings: the store's source against Fashion-MNIST test images on a textured
    background (the shift where a CORAL head gains most in bench/domain_shift.py)."""
    from classifiers.heads import Head
    from embedsvc.datasets.fetch import fetch_dataset

    fetch_dataset("fashion-mnist-background", tmp_path / "cam", limit=N_SHIFTED)
    target = tmp_path / "target"
    ran = cli("embed-dataset", tmp_path / "cam" / "test", "--out", target, "--quiet")
    assert ran.returncode == 0, ran.stderr
    out = tmp_path / "head"
    # 60 per class: two logistic-regression fits (aligned and not) in a few seconds
    ran = cli("train-head", fmnist_store.root, "--target", target, "--align", "coral", "--shots", "60",
              "--out", out, "--quiet")
    assert ran.returncode == 0, ran.stderr
    head = Head.load(out)
    m = head.metrics
    assert head.alignment is not None and head.alignment.method == "coral"
    assert head.training["target_labelled"] == m["n"] == N_SHIFTED
    # The gain must exceed two binomial standard errors of one accuracy at n = 600 (about 3.5
    # points). Measured: 0.780 against 0.707 (+7.3); the last digits another CPU's kernels give
    # move a few borderline images (the camera shift, +2.7 on 300 images, failed a 3-point
    # margin on an AMD EPYC machine by one image), not the 20 this leaves.
    acc = m["unaligned_accuracy"]
    assert m["accuracy"] - acc > 2 * math.sqrt(acc * (1 - acc) / m["n"]), m
    assert "aligned (coral)" in ran.stdout and "unaligned_accuracy" in ran.stdout
    bad = cli("train-head", fmnist_store.root, "--align", "coral", "--out", tmp_path / "h2")
    assert bad.returncode == 2 and "--target" in bad.stderr


# -- the advisor ------------------------------------------------------------------------------------
def _gap(verdict: str) -> Gap:
    from classifiers.adapt.gap import ShiftTest

    a = {"similar": 0.1, "shifted": 1.0, "very different": 1.9}[verdict]
    p = 0.001 if verdict != "similar" else 0.5
    gap = Gap(300, 300, ShiftTest(0.01, p, 0.005, 0.5 - a / 4, p), 1.0, 1e-4, {})
    assert gap.verdict == verdict and abs(gap.proxy_a_distance - a) < 1e-9
    return gap


def test_the_advisor_recommends_the_adaptation_the_data_allows():
    rec = recommend(2000, 10)
    few = recommend_adaptation(_gap("very different"), 10, "camera")
    assert few.method == "target-finetune" and few.preset == "camera"
    assert "--target-labelled T --augment camera" in few.commands("S", "T", rec)[0]
    unl = recommend_adaptation(_gap("very different"), 0, None)
    assert unl.method == "da" and unl.da == "dann"
    cmds = unl.commands("S", "T", rec)
    assert "--align coral" in cmds[0] and "--target-data T --da dann" in cmds[1]
    assert recommend_adaptation(_gap("shifted"), 2, "lighting").da == "coral"
    assert recommend_adaptation(_gap("similar"), 0, None).method == "none"
    assert recommend_adaptation(None, 0, "background").preset == "background"
