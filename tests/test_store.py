"""Embedding stores: resumable after SIGKILL, safe with bad files, bound to their backbone."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import FMNIST_STORE_COUNT, kill_embed_dataset, run_cli
from embedsvc.errors import IncompatibleError
from embedsvc.store import EmbedDatasetConfig, EmbeddingStore, embed_dataset

pytestmark = pytest.mark.slow  # real EfficientNet-Lite weights (see README: Tests and CI)


@pytest.fixture(scope="module")
def digits_manifest(tmp_path_factory):
    """320 real digit images (scikit-learn's load_digits) listed in a CSV manifest."""
    from embedsvc.datasets.fetch import fetch_dataset

    root = tmp_path_factory.mktemp("digits")
    fetch_dataset("digits", root)
    files = sorted((root / "train").rglob("*.png"))[::4][:320]
    manifest = root / "subset.csv"
    manifest.write_text("path,label,split\n" + "".join(f"{p},{p.parent.name},train\n" for p in files))
    return manifest


def _run_cli(*args):
    return subprocess.Popen([sys.executable, "-m", "embedsvc", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_store_layout_and_metadata(fmnist_store):
    s = fmnist_store
    assert s.count == FMNIST_STORE_COUNT and s.dim == 1280 and s.dtype == "float32"
    v = s.vectors()
    assert v.shape == (FMNIST_STORE_COUNT, 1280) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    row = s.row(0)
    assert set(row) >= {"id", "path", "label", "split", "sha256", "width", "height"}
    assert row["width"] == row["height"] == 28 and len(row["sha256"]) == 64
    m = json.loads((s.root / "manifest.json").read_text())
    assert m["provenance"]["backbone"] == "effnet-lite0" and m["count"] == FMNIST_STORE_COUNT
    assert {r["split"] for r in s.metadata()} == {"train", "test"}


def test_killed_run_resumes_with_every_row_exactly_once(cli, digits_manifest, tmp_path):
    clean = tmp_path / "clean"
    embed_dataset(digits_manifest, clean, EmbedDatasetConfig(shard_size=64), progress=False)

    killed = tmp_path / "killed"
    kill_embed_dataset(digits_manifest, killed, "--shard-size", "64")
    partial = EmbeddingStore.open(killed)
    assert 0 < partial.count < 320, "the kill should land part-way"

    resumed = cli("embed-dataset", digits_manifest, "--out", killed, "--shard-size", "64", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{partial.count} of 320 inputs were already done" in resumed.stdout

    a, b = EmbeddingStore.open(clean), EmbeddingStore.open(killed)
    assert [r["path"] for r in b.metadata()] == [r["path"] for r in a.metadata()]
    assert [r["id"] for r in b.metadata()] == list(range(320))
    assert np.array_equal(a.vectors(), b.vectors())
    assert not list((killed / "shards").glob(".*.tmp"))


def test_ctrl_c_keeps_what_was_embedded_whatever_the_shard_size(digits_manifest, tmp_path):
    """SIGINT part-way through 150 images with the default shard size (4,096): the batch in
    progress is committed, the message says how to resume, and the rerun finishes the store an
    uninterrupted run makes."""
    import re
    import shutil

    tree = tmp_path / "photos"
    for line in digits_manifest.read_text().splitlines()[1:151]:
        path, label, _ = line.split(",")
        (tree / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tree / label / os.path.basename(path))
    clean = run_cli("embed-dataset", tree, "--out", tmp_path / "clean", "--quiet")
    assert clean.returncode == 0, clean.stderr

    proc = _run_cli("embed-dataset", tree, "--out", tmp_path / "cut")
    said, seen = "", 0
    while seen < 60:  # tqdm's bar on stderr: "NN/150"
        chunk = proc.stderr.read(1)
        assert chunk, f"the run ended before 60 images: {said}"
        said += chunk
        seen = max([seen, *map(int, re.findall(r"(\d+)/150", said[-40:]))])
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=60)
    said += rest
    assert proc.returncode == 130, said
    assert "rerun the same command to resume" in said.splitlines()[-1], said

    resumed = run_cli("embed-dataset", tree, "--out", tmp_path / "cut", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    done = int(re.search(r"(\d+) of 150 inputs were already done", resumed.stdout).group(1))
    print(f"SIGINT at {seen} of 150 images: the rerun found {done} done")
    assert done >= 50, resumed.stdout
    a, b = EmbeddingStore.open(tmp_path / "clean"), EmbeddingStore.open(tmp_path / "cut")
    assert b.metadata() == a.metadata()
    assert np.array_equal(a.vectors(), b.vectors())  # bitwise: the same batches


def test_bad_files_are_skipped_and_listed(tmp_path, photos):
    src = tmp_path / "src" / "things"
    src.mkdir(parents=True)
    (src / "cat.png").write_bytes(photos["chelsea"].read_bytes())
    (src / "zero.png").write_bytes(b"")
    (src / "text.jpg").write_text("not an image")
    data = photos["coffee"].read_bytes()
    (src / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.new("L", (9000, 9000)).save(src / "bomb.png")  # 81 MP in a small file
    (src / "coffee.png").write_bytes(data)
    report = embed_dataset(tmp_path / "src", tmp_path / "store", progress=False)
    store = EmbeddingStore.open(tmp_path / "store")
    assert sorted(os.path.basename(r["path"]) for r in store.metadata()) == ["cat.png", "coffee.png"]
    reasons = {os.path.basename(r["path"]): r["reason"] for r in report.skipped}
    assert set(reasons) == {"zero.png", "text.jpg", "truncated.png", "bomb.png"}
    assert "0 bytes" in reasons["zero.png"] and "exceeds the limit" in reasons["bomb.png"]
    listed = [json.loads(l) for l in (tmp_path / "store" / "errors.jsonl").read_text().splitlines()]
    assert {os.path.basename(r["path"]) for r in listed} == set(reasons)
    # a rerun does not retry or duplicate anything
    again = embed_dataset(tmp_path / "src", tmp_path / "store", progress=False)
    assert again.added == 0 and again.already_done == 6 and EmbeddingStore.open(tmp_path / "store").count == 2


def test_dedup_by_content_hash_and_float16(tmp_path, photos):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "b.png"):
        (src / name).write_bytes(photos["rocket"].read_bytes())
    (src / "c.png").write_bytes(photos["coffee"].read_bytes())
    r = embed_dataset(src, tmp_path / "s", EmbedDatasetConfig(dedup=True, dtype="float16", workers=2),
                      progress=False)
    assert r.added == 2 and r.skipped == [{"path": str((src / "b.png").resolve()),
                                          "reason": "duplicate of row 0"}]
    s = EmbeddingStore.open(tmp_path / "s")
    assert np.load(s.root / "shards" / "00000.npy").dtype == np.float16
    assert s.vectors().dtype == np.float32


def test_refuses_vectors_from_another_backbone(tmp_path, photos):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(photos["chelsea"].read_bytes())
    embed_dataset(src, tmp_path / "s", progress=False)
    before = (tmp_path / "s" / "manifest.json").read_bytes()
    with pytest.raises(IncompatibleError, match="backbone"):
        embed_dataset(src, tmp_path / "s", EmbedDatasetConfig(backbone="effnet-lite1"), progress=False)
    with pytest.raises(IncompatibleError, match="dim=1280|tap"):
        embed_dataset(src, tmp_path / "s", EmbedDatasetConfig(tap="late"), progress=False)
    assert (tmp_path / "s" / "manifest.json").read_bytes() == before


def test_a_commit_grows_the_last_shard_and_a_killed_writers_tail_is_cut(tmp_path):
    """Commits extend the last shard in place until it is full; what a writer appended and never
    committed (killed before the manifest) is invisible to readers and cut by the next writer."""
    from embedsvc.store import shard_files

    prov = {"backbone": "x", "dim": 4}
    rng = np.random.default_rng(0)
    v = rng.standard_normal((10, 4)).astype(np.float32)
    store = EmbeddingStore.open_or_create(tmp_path / "s", prov)
    store.append(v[:3], [{"path": f"p{i}"} for i in range(3)], [{"path": "bad", "reason": "r"}], 6)
    store.append(v[3:5], [{"path": f"p{i}"} for i in range(3, 5)], [], 6)  # fills 00000 to 6
    store.append(v[5:6], [{"path": "p5"}], [], 6)  # a new shard
    assert [(s.name, s.count, s.inputs) for s in store.shards] == [("00000", 5, 6), ("00001", 1, 1)]
    shard = tmp_path / "s" / "shards" / "00001"
    assert np.array_equal(np.load(tmp_path / "s" / "shards" / "00000.npy"), v[:5])  # a plain .npy
    # a writer killed after appending, before committing
    shard_files.append_vectors(shard.with_suffix(".npy"), 1, v[6:9], "float32")
    shard_files.append_lines(shard.with_suffix(".jsonl"), 1, b'{"path": "ghost"}\n')
    reader = EmbeddingStore.open(tmp_path / "s")
    assert reader.count == 6 and [r["path"] for r in reader.metadata()][-1] == "p5"
    assert np.array_equal(reader.vectors(), v[:6]) and reader.skipped() == [{"path": "bad", "reason": "r"}]
    writer = EmbeddingStore.open_or_create(tmp_path / "s", prov)
    assert np.load(shard.with_suffix(".npy")).shape == (1, 4)
    assert shard.with_suffix(".jsonl").read_text().count("\n") == 1
    writer.append(v[9:], [{"path": "p9"}], [], 6)
    again = EmbeddingStore.open(tmp_path / "s")
    assert np.array_equal(again.take([5, 6]), v[[5, 9]]) and again.row(6)["path"] == "p9"
