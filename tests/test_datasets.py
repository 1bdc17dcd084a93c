"""Dataset sources and the offline dataset writers, on real data."""
import json

import numpy as np
import pytest
from PIL import Image

from embedsvc.datasets import scan_source
from embedsvc.datasets.fetch import FASHION_MNIST_CLASSES, fetch_dataset, load_fashion_mnist
from embedsvc.errors import InvalidInputError, NotFoundError


def test_fashion_mnist_is_written_as_labelled_pngs(fmnist_dir):
    x, y = load_fashion_mnist("train")
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    assert sorted(p.name for p in (fmnist_dir / "train").iterdir()) == sorted(FASHION_MNIST_CLASSES)
    # the PNG is the IDX image, byte for byte, in the folder of its label
    first = next(p for p in (fmnist_dir / "train").rglob("00000.png"))
    assert np.array_equal(np.asarray(Image.open(first)), x[0])
    assert first.parent.name == FASHION_MNIST_CLASSES[y[0]]


def test_digits_split_is_stratified_and_complete(tmp_path):
    counts = fetch_dataset("digits", tmp_path)
    assert counts == {"train": 1437, "test": 360}
    records = scan_source(tmp_path)
    assert len(records) == 1797
    assert {r.split for r in records} == {"train", "test"}
    assert {r.label for r in records} == {str(i) for i in range(10)}
    # rerunning writes nothing new and changes nothing
    before = sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*.png"))
    fetch_dataset("digits", tmp_path)
    assert sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*.png")) == before


def test_photos_are_camera_sized_jpegs_of_the_sample_photos(tmp_path):
    from embedsvc.datasets.photos import SIDE_RANGE, source_photos

    counts = fetch_dataset("photos", tmp_path / "a", limit=30)
    assert counts == {"train": 24, "test": 6}
    records = scan_source(tmp_path / "a")
    assert len(records) == 30 and {r.label for r in records} <= set(source_photos())
    for r in records:
        with Image.open(r.path) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            assert SIDE_RANGE[0] <= max(img.size) <= SIDE_RANGE[1], (r.path, img.size)
    # the same seed writes the same bytes, and a smaller limit keeps a prefix of a larger one
    fetch_dataset("photos", tmp_path / "b", limit=10)
    small = sorted((tmp_path / "b").rglob("*.jpg"))
    assert len(small) == 10
    for p in small:
        assert p.read_bytes() == (tmp_path / "a" / p.relative_to(tmp_path / "b")).read_bytes()
    fetch_dataset("photos", tmp_path / "a", limit=10)
    assert sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg")) == \
        [p.relative_to(tmp_path / "b") for p in small]
    with pytest.raises(InvalidInputError, match="holds other data"):
        fetch_dataset("digits", tmp_path / "a")


def test_unknown_dataset_lists_choices(tmp_path):
    with pytest.raises(NotFoundError, match="fashion-mnist"):
        fetch_dataset("imagenet", tmp_path)


def test_class_folders_flat_folders_and_manifests(tmp_path, photos):
    classes = tmp_path / "classes"
    for label in ("cat", "coffee"):
        (classes / label).mkdir(parents=True)
    (classes / "cat" / "a.png").write_bytes(photos["chelsea"].read_bytes())
    (classes / "coffee" / "b.png").write_bytes(photos["coffee"].read_bytes())
    recs = scan_source(classes)
    assert [(r.label, r.split) for r in recs] == [("cat", None), ("coffee", None)]

    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "x.png").write_bytes(photos["rocket"].read_bytes())
    assert scan_source(flat)[0].label is None

    csv = tmp_path / "m.csv"
    csv.write_text("path,label,split,domain\nclasses/cat/a.png,cat,train,photo\n")
    r = scan_source(csv)[0]
    assert r.path == str((classes / "cat" / "a.png").resolve()) and r.domain == "photo"

    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"path": str(flat / "x.png"), "domain": "sketch"}) + "\n")
    assert scan_source(jsonl)[0].domain == "sketch"


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(NotFoundError):
        scan_source(tmp_path / "missing")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nx.png,a\n")
    with pytest.raises(InvalidInputError, match="'path' or a 'text' column"):
        scan_source(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="holds no files"):
        scan_source(tmp_path / "empty")
