"""The domain gap: its four measures on known distributions, and ``embedsvc gap`` on real
Fashion-MNIST embeddings of the guide's shifts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifiers.adapt import measure_gap
from classifiers.adapt.gap import coral_distance, frechet_distance, mmd_test
from embedsvc.datasets.fetch import FASHION_MNIST_CLASSES, load_fashion_mnist
from embedsvc.datasets.shifts import shift_images
from embedsvc.errors import InvalidInputError


def test_every_measure_is_near_zero_for_one_distribution_and_grows_with_the_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 32))
    same = measure_gap(a, rng.normal(size=(200, 32)))
    assert same.verdict == "similar" and same.mmd_p_value > 0.05 and same.proxy_a_distance < 0.5
    assert abs(same.mmd2) < 0.01
    gaps = [measure_gap(a, rng.normal(size=(200, 32)) + shift) for shift in (0.2, 0.5, 1.0)]
    for key in ("proxy_a_distance", "mmd2", "frechet"):
        values = [getattr(g, key) for g in gaps]
        assert values == sorted(values) and values[0] < values[-1], (key, values)
    assert [g.verdict for g in gaps][-1] == "very different"
    # CORAL sees what the means do not: the same mean, another covariance
    wide = rng.normal(size=(200, 32)) * 2
    assert coral_distance(a, wide) > 20 * coral_distance(a, rng.normal(size=(200, 32)))
    assert mmd_test(a, wide, rng)[1] < 0.05
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def test_per_class_gaps_for_labels_on_both_sides_and_bad_input_is_refused():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(120, 16)), rng.normal(size=(120, 16))
    la, lb = np.repeat(["x", "y", "z"], 40), np.repeat(["x", "y", "w"], 40)
    b[lb == "y"] += 2.0  # only class y moved
    g = measure_gap(a, b, la, lb)
    assert set(g.per_class) == {"x", "y"}
    assert g.per_class["y"].verdict == "very different" and g.per_class["x"].verdict == "similar"
    with pytest.raises(InvalidInputError, match="dimensional"):
        measure_gap(a, b[:, :8])
    with pytest.raises(InvalidInputError, match="at least"):
        measure_gap(a, b[:2])
    a[0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        measure_gap(a, b)


def _write(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    for i, (img, y) in enumerate(zip(images, labels)):
        d = folder / FASHION_MNIST_CLASSES[y]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:05d}.png")
    return folder


def test_gap_ranks_three_strengths_of_a_shift_and_calls_two_halves_of_a_split_similar(
        cli, fmnist_store, tmp_path):
    x, y = load_fashion_mnist("test")
    pick = np.concatenate([np.flatnonzero(y[1000:] == c)[:12] + 1000 for c in range(10)])
    x, y = x[pick], y[pick]  # 12 per class (per-class gaps need 10), none of them in the store
    figures = []
    for strength in (0.25, 0.5, 1.0):
        target = _write(tmp_path / f"dark{strength}", shift_images(x, "dark", strength), y)
        r = cli("gap", fmnist_store.root, target, "--json", "--quiet",
                "--png", tmp_path / f"dark{strength}.png")
        assert r.returncode == 0, r.stderr
        figures.append(json.loads(r.stdout))
    for key in ("mmd2", "frechet", "coral"):
        values = [f[key] for f in figures]
        assert values[0] < values[1] < values[2], (key, values)
    a_dist = [f["proxy_a_distance"] for f in figures]
    assert a_dist == sorted(a_dist)  # it may saturate at 2 for the strongest
    assert figures[-1]["verdict"] != "similar"
    assert set(figures[0]["per_class"]) == set(FASHION_MNIST_CLASSES)  # labelled on both sides
    png = Image.open(figures[-1]["png"])
    assert png.size[0] > 1000  # two panels: by domain and by class

    # two random halves of one split, as manifests of the images the store was not made from
    xs, ys = load_fashion_mnist("train")
    order = np.random.default_rng(0).permutation(np.arange(3000, 3300))
    halves = [_write(tmp_path / f"half{k}", xs[idx], ys[idx]) for k, idx in
              enumerate((order[:150], order[150:]))]
    r = cli("gap", *halves, "--png", tmp_path / "halves.png", "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].endswith(": similar"), r.stdout
    assert (tmp_path / "halves.png").stat().st_size > 10_000


def test_gap_of_a_missing_side_is_one_error_line(cli, tmp_path):
    r = cli("gap", tmp_path / "nope", tmp_path / "nope2", "--png", tmp_path / "g.png")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "nope" in r.stderr
    assert not (tmp_path / "g.png").exists()
