"""``embedsvc export``: the clip-retrieval layout is read by autofaiss's own CLI and
embedding-reader (in the venv ``make test`` gives them, see the Makefile) and its index finds
what ``embedsvc search`` finds; the parquet file reads back in pyarrow with the store's vectors,
rows and provenance; a failed export leaves nothing behind."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


AUTOFAISS = Path(sys.prefix) / "share" / "embedsvc" / "autofaiss" / "bin"
K = 5
QUERIES = (0, 7, 150, 333)

# run with the autofaiss venv's python: its faiss loads the index autofaiss wrote, and
# embedding-reader reads the embeddings with the metadata beside them, as clip-retrieval does
READ_BACK = """
import json, sys
import faiss
from embedding_reader import EmbeddingReader
out, index_path, queries, k = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
reader = EmbeddingReader(out + "/img_emb", file_format="parquet_npy", metadata_folder=out + "/metadata",
                         meta_columns=["id", "image_path", "label"])
parts = list(reader(batch_size=10**6, start=0, end=reader.count, show_progress=False))
import numpy as np
emb = np.concatenate([e for e, _ in parts])
meta = [row for _, m in parts for row in m.to_dict("records")]
_, found = faiss.read_index(index_path).search(emb[queries].astype("float32"), k)
print(json.dumps({"count": int(reader.count), "ids": [int(m["id"]) for m in meta],
                  "paths": [m["image_path"] for m in meta], "found": found.tolist()}))
"""

PARQUET_READ_BACK = """
import sys
import numpy as np
from embedding_reader import EmbeddingReader
reader = EmbeddingReader(sys.argv[1], file_format="parquet", embedding_column="embedding",
                         meta_columns=["id"])
parts = list(reader(batch_size=10**6, start=0, end=reader.count, show_progress=False))
print(reader.count, np.concatenate([e for e, _ in parts]).astype(np.float32).tobytes().hex())
"""


def test_clip_retrieval_export_is_read_and_indexed_by_autofaiss(cli, tiny_store, tmp_path):
    assert (AUTOFAISS / "autofaiss").is_file(), "the autofaiss venv is missing: run make test"
    out = tmp_path / "emb"
    done = cli("export", tiny_store.root, out, "--format", "clip-retrieval")
    assert done.returncode == 0, done.stderr
    shards = len(tiny_store.shards)
    assert sorted(p.name for p in (out / "img_emb").iterdir()) == sorted(f"img_emb_{n}.npy" for n in range(shards))
    assert len(list((out / "metadata").iterdir())) == shards

    index = tmp_path / "knn.index"
    built = subprocess.run([str(AUTOFAISS / "autofaiss"), "build_index", "--embeddings", str(out / "img_emb"),
                            "--index_path", str(index), "--index_infos_path", str(tmp_path / "infos.json"),
                            "--metric_type", "ip", "--max_index_memory_usage", "1G",
                            "--current_memory_available", "2G"], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    infos = json.loads((tmp_path / "infos.json").read_text())
    assert infos["nb vectors"] == tiny_store.count and infos["vectors dimension"] == tiny_store.dim

    read = subprocess.run([str(AUTOFAISS / "python"), "-c", READ_BACK, str(out), str(index),
                           json.dumps(QUERIES), str(K)], capture_output=True, text=True, timeout=300)
    assert read.returncode == 0, read.stderr[-2000:]
    got = json.loads(read.stdout)
    meta = tiny_store.metadata()
    assert got["count"] == tiny_store.count
    assert got["ids"] == [r["id"] for r in meta] and got["paths"] == [r["path"] for r in meta]
    for q, found in zip(QUERIES, got["found"]):
        ours = cli("search", tiny_store.root, "--id", q, "-k", K, "--json")
        assert ours.returncode == 0, ours.stderr
        assert [h["id"] for h in json.loads(ours.stdout)] == found, q


def test_parquet_export_reads_back_with_the_stores_vectors_and_provenance(cli, tiny_store, tmp_path):
    out = tmp_path / "store.parquet"
    done = cli("export", tiny_store.root, out, "--format", "parquet")
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(-1, tiny_store.dim)
    assert vectors.dtype == np.float32 and np.array_equal(vectors, tiny_store.vectors())
    meta = tiny_store.metadata()
    assert table.column("id").to_pylist() == [r["id"] for r in meta]
    assert table.column("label").to_pylist() == [r["label"] for r in meta]
    assert table.column("path").to_pylist() == [r["path"] for r in meta]
    kv = table.schema.metadata
    assert json.loads(kv[b"embedsvc.provenance"]) == tiny_store.provenance
    assert json.loads(kv[b"embedsvc.store"])["count"] == tiny_store.count
    # embedding-reader (what autofaiss reads with) takes the file's embedding column as it is
    read = subprocess.run([str(AUTOFAISS / "python"), "-c", PARQUET_READ_BACK, str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert read.returncode == 0, read.stderr[-2000:]
    got = np.frombuffer(bytes.fromhex(read.stdout.split()[1]), np.float32).reshape(-1, tiny_store.dim)
    assert read.stdout.split()[0] == str(tiny_store.count) and np.array_equal(got, tiny_store.vectors())


def test_export_refuses_an_existing_target_and_leaves_nothing_when_it_fails(cli, tiny_store, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    refused = cli("export", tiny_store.root, out, "--format", "parquet")
    assert refused.returncode != 0 and "exists" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"
    replaced = cli("export", tiny_store.root, out, "--format", "parquet", "--overwrite")
    assert replaced.returncode == 0 and pq.read_table(out).num_rows == tiny_store.count

    missing = cli("export", tmp_path / "no-store", tmp_path / "x.parquet", "--format", "parquet")
    assert missing.returncode != 0 and len(missing.stderr.splitlines()) == 1
    assert not (tmp_path / "x.parquet").exists()
    # a target whose folder cannot take it: the error is one line and nothing is left behind
    blocked = tmp_path / "file"
    blocked.write_text("a file, not a folder")
    failed = cli("export", tiny_store.root, blocked / "out", "--format", "clip-retrieval")
    assert failed.returncode != 0 and len(failed.stderr.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "taken"]  # no partial left
    assert blocked.read_text() == "a file, not a folder"
