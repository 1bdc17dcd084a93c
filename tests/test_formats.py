"""The ecosystem's dataset formats in: the same images as a class folder, as webdataset shards
(written by the ``webdataset`` package), as parquet (written by ``pyarrow``) and as a ``datasets``
folder (``save_to_disk``) give bitwise the same vectors and the same labels; a run over tar
shards SIGKILLed part-way resumes with every row once."""
import json
import shutil

import numpy as np
import pytest

from conftest import kill_embed_dataset
from embedsvc.datasets import read_input_bytes, scan_source
from embedsvc.store import EmbedDatasetConfig, EmbeddingStore, embed_dataset

pytestmark = pytest.mark.slow  # real EfficientNet-Lite weights (see README: Tests and CI)

PER_CLASS = 12


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """120 of scikit-learn's digits as a class folder (12 a class), and the same files, in the
    same order, written in the other three formats."""
    from embedsvc.datasets.fetch import fetch_dataset

    src = tmp_path_factory.mktemp("digits-src")
    fetch_dataset("digits", src)
    root = tmp_path_factory.mktemp("formats")
    folder = root / "folder"
    for cls in sorted((src / "train").iterdir()):
        (folder / cls.name).mkdir(parents=True)
        for p in sorted(cls.glob("*.png"))[:PER_CLASS]:
            shutil.copy(p, folder / cls.name / p.name)
    records = scan_source(folder)
    images = [read_input_bytes(r.path) for r in records]
    labels = [r.label for r in records]

    import webdataset as wds

    (root / "shards").mkdir()
    with wds.ShardWriter(str(root / "shards" / "%05d.tar"), maxcount=32, verbose=0) as sink:
        for i, (data, label) in enumerate(zip(images, labels)):
            sink.write({"__key__": f"sample{i:05d}", "png": data, "cls": label,
                        "json": {"source": "digits"}})

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"key": [f"{i:05d}" for i in range(len(images))],
                             "jpg": pa.array(images, pa.binary()), "label": labels}),
                   root / "digits.parquet", row_group_size=50)

    import datasets

    names = sorted(set(labels))
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in images],
         "label": [names.index(label) for label in labels]},
        features=datasets.Features({"image": datasets.Image(),
                                    "label": datasets.ClassLabel(names=names)}))
    ds.save_to_disk(str(root / "hf"), num_shards=2)
    return root


def _store(src, out) -> EmbeddingStore:
    embed_dataset(src, out, EmbedDatasetConfig(shard_size=64), progress=False)
    return EmbeddingStore.open(out)


def test_four_formats_give_the_same_vectors_and_labels(digits, tmp_path):
    folder = _store(digits / "folder", tmp_path / "folder")
    assert folder.count == 10 * PER_CLASS
    for name, src in (("wds", digits / "shards" / "{00000..00003}.tar"),
                      ("parquet", digits / "digits.parquet"), ("hf", digits / "hf")):
        store = _store(src, tmp_path / name)
        assert np.array_equal(store.vectors(), folder.vectors()), name
        assert [r["label"] for r in store.metadata()] == [r["label"] for r in folder.metadata()], name
        assert [r["sha256"] for r in store.metadata()] == [r["sha256"] for r in folder.metadata()], name
        assert len({r["path"] for r in store.metadata()}) == folder.count, name
    # a record's name says where it lives, and reads it back
    row = EmbeddingStore.open(tmp_path / "wds").row(5)
    assert "#sample00005.png" in row["path"] and read_input_bytes(row["path"])[:4] == b"\x89PNG"


def test_a_killed_run_over_tar_shards_resumes_with_every_row_once(cli, digits, tmp_path):
    src = str(digits / "shards" / "{00000..00003}.tar")
    embed_dataset(src, tmp_path / "clean", EmbedDatasetConfig(shard_size=16, batch_size=16),
                  progress=False)
    clean = EmbeddingStore.open(tmp_path / "clean")
    killed = tmp_path / "killed"
    kill_embed_dataset(src, killed, "--shard-size", "16", "--batch-size", "16")
    partial = EmbeddingStore.open(killed)
    assert 0 < partial.count < clean.count, "the kill should land part-way"

    resumed = cli("embed-dataset", src, "--out", killed, "--shard-size", "16", "--batch-size", "16",
                  "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{partial.count} of {clean.count} inputs were already done" in resumed.stdout
    store = EmbeddingStore.open(killed)
    assert [r["path"] for r in store.metadata()] == [r["path"] for r in clean.metadata()]
    assert [r["id"] for r in store.metadata()] == list(range(clean.count))
    assert np.array_equal(store.vectors(), clean.vectors())


def test_texts_from_tar_shards_parquet_and_datasets_equal_a_manifest(tmp_path):
    """Text in each format: ``.txt`` members of shards, a parquet text column and a ``datasets``
    string column give the vectors a JSONL manifest of the same texts gives."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    import webdataset as wds

    texts = [f"review {i}: the film was {'wonderful' if i % 2 else 'a dull mess'}" for i in range(24)]
    labels = ["pos" if i % 2 else "neg" for i in range(24)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)))
    with wds.TarWriter(str(tmp_path / "t.tar")) as sink:
        for i, (t, y) in enumerate(zip(texts, labels)):
            sink.write({"__key__": f"{i:04d}", "txt": t, "json": {"label": y}})
    pq.write_table(pa.table({"body": texts, "label": labels}), tmp_path / "t.parquet")
    datasets.Dataset.from_dict({"sentence": texts, "label": labels}).save_to_disk(str(tmp_path / "hf"))

    def store(src, out, **columns):
        from embedsvc.datasets import Columns

        embed_dataset(src, tmp_path / out, EmbedDatasetConfig(columns=Columns(**columns)), progress=False)
        return EmbeddingStore.open(tmp_path / out)

    ref = store(manifest, "ref")
    assert ref.count == 24 and ref.provenance["backbone"] == "minilm-l6"
    for got in (store(tmp_path / "t.tar", "tar"), store(tmp_path / "t.parquet", "pq", text="body"),
                store(tmp_path / "hf", "hf-store")):
        assert np.array_equal(got.vectors(), ref.vectors())
        assert [r["label"] for r in got.metadata()] == labels


def test_client_upsert_takes_tar_shards_as_a_folder_is_taken(cli, digits, tmp_path):
    """``client upsert`` reads shards (and parquet, datasets folders) as embed-dataset does:
    every image, its label, and content ids from the member's bytes."""
    from embedsvc.client import Client
    from embedsvc.service.config import ServeConfig
    from embedsvc.service.grpc_server import Server

    srv = Server(ServeConfig(port=0, data_dir=str(tmp_path / "data"), default_backbone="tiny-random")).start()
    try:
        target = f"127.0.0.1:{srv.port}"
        shards = str(digits / "shards" / "{00000..00003}.tar")
        r = cli("client", "upsert", "--server", target, "--index", "wds", shards, "--content-ids")
        assert r.returncode == 0, r.stderr
        again = cli("client", "upsert", "--server", target, "--index", "wds", digits / "hf",
                    "--content-ids")  # the same images: the same ids, so nothing is added
        assert again.returncode == 0, again.stderr
        with Client(target) as c:
            info = {i.name: i for i in c.indexes()}["wds"]
            assert info.count == 10 * PER_CLASS
            hits = c.search("wds", image=read_input_bytes(scan_source(digits / "folder")[0].path), k=1)
            assert hits[0]["metadata"]["label"] == "0"
    finally:
        srv.stop(grace=5)
