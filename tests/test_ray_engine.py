"""``embed-dataset --engine ray`` on a local Ray instance: the store it makes is the local
engine's, bit for bit, and a killed run resumes without duplicates or gaps."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from embedsvc.store import EmbedDatasetConfig, EmbeddingStore, embed_dataset

pytest.importorskip("ray.data", reason="the [ray] extra (make test installs it)")

SHARD, BATCH = "32", "16"


@pytest.fixture(scope="module")
def source(fmnist_dir, tmp_path_factory):
    """150 Fashion-MNIST images in class folders, one undecodable file and one duplicate."""
    root = tmp_path_factory.mktemp("ray-src")
    files = sorted((fmnist_dir / "test").rglob("*.png"), key=lambda p: p.name)[:150]
    for p in files:
        (root / p.parent.name).mkdir(exist_ok=True)
        shutil.copy(p, root / p.parent.name / p.name)
    (root / "bag" / "broken.png").write_bytes(b"not a png")
    shutil.copy(files[0], root / "bag" / "zz-copy.png")
    return root


def test_a_killed_ray_run_resumes_into_the_store_the_local_engine_makes(source, tmp_path, cli):
    local = tmp_path / "local"
    embed_dataset(source, local, EmbedDatasetConfig(shard_size=int(SHARD), batch_size=int(BATCH),
                                                    dedup=True), progress=False)
    args = ["embed-dataset", str(source), "--out", str(tmp_path / "ray"), "--engine", "ray",
            "--shard-size", SHARD, "--batch-size", BATCH, "--dedup", "--quiet"]
    # its own process group: the kill takes the local Ray instance with it, as a job's end does
    killed = subprocess.Popen([sys.executable, "-m", "embedsvc", *args], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest, deadline = tmp_path / "ray" / "manifest.json", time.time() + 240
    while time.time() < deadline and killed.poll() is None:
        if manifest.is_file() and json.loads(manifest.read_text())["shards"]:
            break
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(30)
    partial = EmbeddingStore.open(tmp_path / "ray")
    assert 0 < partial.count < 150, "the kill should land part-way"

    resumed = subprocess.run([sys.executable, "-m", "embedsvc", *args], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    # our warnings only (the skipped files, the 28-px images), none of Ray's log lines
    assert all(l.startswith("embedsvc: warning:") for l in resumed.stderr.splitlines()), \
        resumed.stderr
    done = sum(s.inputs for s in partial.shards)
    assert f"{done} of 152 inputs were already done" in resumed.stdout

    a, b = EmbeddingStore.open(local), EmbeddingStore.open(tmp_path / "ray")
    assert b.provenance == a.provenance
    assert [r["id"] for r in b.metadata()] == list(range(150))  # no gap, no duplicate
    assert b.metadata() == a.metadata()
    assert np.array_equal(a.vectors(), b.vectors())  # bitwise: the same batches on the CPU
    assert sorted(r["reason"].split(" (")[0] for r in b.skipped()) == sorted(
        r["reason"].split(" (")[0] for r in a.skipped())
    assert len(b.skipped()) == 2 and (tmp_path / "ray" / "errors.jsonl").is_file()


def test_ray_options_belong_to_the_ray_engine(source, tmp_path, cli):
    r = cli("embed-dataset", source, "--out", tmp_path / "s", "--actors", "2")
    assert r.returncode == 2 and "--engine ray" in r.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own, at its first use here
def test_texts_on_ray_make_the_local_engine_s_store(tmp_path):
    """Texts of mixed lengths, in more than one length-sorted window: the same rows, truncation
    notes and vectors (bitwise: the same sorted batches) as the local engine."""
    from embedsvc.store.ray_engine import embed_dataset_ray

    rows = [{"text": ("word " * (i * 7 % 150)) + f"text {i}", "label": "ab"[i % 2]} for i in range(90)]
    rows[5] = {"path": str(tmp_path / "missing.txt"), "label": "a"}  # cannot be read
    manifest = tmp_path / "texts.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = EmbedDatasetConfig(backbone="tiny-text", batch_size=4, shard_size=32)
    embed_dataset(manifest, tmp_path / "local", config, progress=False)
    report = embed_dataset_ray(manifest, tmp_path / "ray", config, progress=False)
    assert report.added == 89 and report.unit == "text"
    a, b = EmbeddingStore.open(tmp_path / "local"), EmbeddingStore.open(tmp_path / "ray")
    assert b.provenance == a.provenance and b.provenance["modality"] == "text"
    assert b.metadata() == a.metadata() and sum(r["truncated"] for r in b.metadata()) > 0
    assert np.array_equal(a.vectors(), b.vectors())
    assert [r["path"] for r in b.skipped()] == [str(tmp_path / "missing.txt")]
