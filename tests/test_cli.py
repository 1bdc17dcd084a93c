"""The command line with real photos: exit codes, stdout and stderr. One test runs it as a user does,
``python -m embedsvc`` in a fresh process; the others call the same ``main`` in this one."""
import json

import numpy as np
import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow  # real EfficientNet-Lite weights (see README: Tests and CI)

CAT_CLASSES = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}


def ok(proc):
    assert proc.returncode == 0, proc.stderr
    return proc


def test_models_table_lists_backbones_and_weight_status(cli):
    out = ok(cli("models", "--json")).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["effnet-lite0"]["weights"] == "present" and rows["effnet-lite0"]["default"] is True
    assert rows["effnet-lite0"]["dim"] == 1280  # numbers as numbers
    assert rows["effnet-lite2"]["input_size"] == 260 and rows["effnet-lite2"]["default"] is False
    assert rows["timm:<model>"]["dim"] is None
    assert ok(cli("models")).stdout.startswith("NAME")


def test_predict_top5_finds_the_cat_and_the_espresso(cli, photos):
    out = ok(cli("predict", photos["chelsea"], photos["coffee"], "--top", "5", "--json")).stdout
    preds = {p["id"]: [t["label"] for t in p["top"]] for p in json.loads(out)}
    assert len(preds[str(photos["chelsea"])]) == 5
    assert CAT_CLASSES & set(preds[str(photos["chelsea"])])
    assert {"espresso", "cup"} & set(preds[str(photos["coffee"])])
    human = ok(cli("predict", photos["chelsea"], "--top", "3")).stdout
    assert human.splitlines()[0] == str(photos["chelsea"]) and "1. " in human


def test_embed_writes_vectors_and_provenance(photos, tmp_path):
    out = tmp_path / "v.npy"
    proc = ok(run_cli("embed", photos["chelsea"], photos["coffee"], "--out", out))
    assert "wrote 2 x 1280" in proc.stdout
    v = np.load(out)
    meta = json.loads((tmp_path / "v.npy.json").read_text())
    assert v.shape == (2, 1280) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert meta["ids"] == [str(photos["chelsea"]), str(photos["coffee"])]
    assert meta["provenance"]["backbone"] == "effnet-lite0" and len(meta["provenance"]["weights_sha256"]) == 64


@pytest.mark.parametrize("kind", ["missing", "not-an-image", "truncated"])
def test_bad_input_exits_non_zero_with_one_line(cli, photos, tmp_path, kind):
    bad = tmp_path / f"{kind}.jpg"
    if kind == "not-an-image":
        bad.write_text("hello")
    elif kind == "truncated":
        data = photos["chelsea"].read_bytes()
        bad.write_bytes(data[: len(data) // 3])
    proc = cli("embed", photos["coffee"], bad, "--out", tmp_path / "o.npy")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("embedsvc: error:") and str(bad) in lines[0]
    assert not (tmp_path / "o.npy").exists()  # nothing half-written


def test_skip_bad_embeds_the_others(cli, photos, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "v.npy"
    proc = ok(cli("embed", photos["chelsea"], bad, photos["coffee"], "--skip-bad", "--out", out))
    assert f"skipped '{bad}'" in proc.stderr
    meta = json.loads((tmp_path / "v.npy.json").read_text())
    assert np.load(out).shape == (2, 1280) and meta["skipped"][0][0] == str(bad)
    assert str(bad) not in meta["ids"]


def test_usage_errors_and_unknown_backbone(cli, photos):
    assert cli("embed").returncode == 2
    assert cli("embed", photos["chelsea"], "--batch-size", "0").returncode == 2
    proc = cli("embed", photos["chelsea"], "--backbone", "nope")
    assert proc.returncode == 1 and "available: effnet-lite0" in proc.stderr
