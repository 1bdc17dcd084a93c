"""Fine-tuning jobs on real Fashion-MNIST images with the real effnet-lite0 (64 px to stay quick):
frozen weights stay bitwise, gradual unfreezing follows its order, a killed run resumes to the
same weights, and a run plugs into embed / classify / the gRPC server as finetuned:RUN_DIR."""
import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_same_run_weights, kill_and_resume_run, run_cli
from classifiers.finetune import FinetuneConfig, finetune, interpolate_run, recommend
from classifiers.finetune.schedule import lr_factor, lr_multiplier, trainable_depth
from embedsvc.backbones import create_backbone

pytestmark = pytest.mark.slow  # real EfficientNet-Lite weights (see README: Tests and CI)

SIZE = 64


def _manifest(root: Path, path: Path, per_class: int, split: str = "train") -> Path:
    rows = ["path,label"]
    for cls in sorted(p for p in (root / split).iterdir() if p.is_dir()):
        rows += [f"{f},{cls.name}" for f in sorted(cls.glob("*.png"))[:per_class]]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def ft_data(fmnist_dir, tmp_path_factory) -> Path:
    return _manifest(fmnist_dir, tmp_path_factory.mktemp("ft") / "train.csv", 30)


@pytest.fixture(scope="module")
def partial_run(ft_data, tmp_path_factory):
    cfg = FinetuneConfig(strategy="partial", partial_stages=1, epochs=2, image_size=SIZE, seed=1)
    return finetune(str(ft_data), tmp_path_factory.mktemp("runs") / "partial", cfg, progress=False)


def _groups(backbone) -> dict[str, list[str]]:
    return dict(backbone.layer_groups())


def _module_keys(state: dict, param_names: list[str]) -> list[str]:
    """Parameters and the buffers (BatchNorm statistics) of the modules that own them."""
    modules = {n.rsplit(".", 1)[0] for n in param_names}
    return [k for k in state if k.rsplit(".", 1)[0] in modules]


def test_schedules_of_every_strategy():
    cfg = FinetuneConfig(partial_stages=2, unfreeze_every=2, probe_epochs=3, epochs=10, warmup_epochs=1)
    n = 8  # backbone groups
    assert [trainable_depth(cfg, "linear", e, n) for e in range(3)] == [1, 1, 1]
    assert [trainable_depth(cfg, "partial", e, n) for e in range(3)] == [3, 3, 3]
    assert [trainable_depth(cfg, "full", e, n) for e in range(3)] == [9, 9, 9]
    assert [trainable_depth(cfg, "gradual", e, n) for e in range(0, 20, 2)] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 9]
    assert [trainable_depth(cfg, "lp-ft", e, n) for e in range(5)] == [1, 1, 1, 9, 9]
    d = FinetuneConfig(backbone_lr_ratio=0.5, layer_decay=0.8)
    assert [lr_multiplier(d, k) for k in range(3)] == pytest.approx([1.0, 0.5, 0.4])
    factors = [lr_factor(cfg, s, 10) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:])) and factors[-1] < 0.01


def test_partial_run_leaves_frozen_stages_bitwise_and_trains_the_rest(partial_run):
    parent = create_backbone("effnet-lite0")
    before = parent.model.state_dict()
    after = load_file(str(partial_run.run_dir / "model.safetensors"))
    groups = _groups(parent)
    frozen = [n for g in ("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6") for n in groups[g]]
    frozen_keys = _module_keys(before, frozen)
    assert any("running_mean" in k for k in frozen_keys)  # BatchNorm statistics are checked too
    for k in frozen_keys:
        assert torch.equal(before[k], after[k]), k
    trained = _module_keys(before, groups["stage7"])
    assert sum(not torch.equal(before[k], after[k]) for k in trained) >= len(trained) // 2
    rows = (partial_run.run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,trainable_groups") and len(rows) == 3
    assert (partial_run.run_dir / "curves.png").stat().st_size > 10_000
    meta = json.loads((partial_run.run_dir / "finetuned.json").read_text())
    assert meta["format"] == 1 and meta["written_by"]["torch"] and meta["written_by"]["timm"]
    assert meta["parent"]["backbone"] == "effnet-lite0" and meta["preprocess"]["input_size"] == [3, SIZE, SIZE]
    assert len(meta["classes"]) == 10 and meta["strategy"] == "partial"


def test_gradual_unfreezes_from_the_top_in_order(ft_data, tmp_path):
    cfg = FinetuneConfig(strategy="gradual", epochs=2, unfreeze_every=1, image_size=SIZE)
    run = finetune(str(ft_data), tmp_path / "gradual", cfg, progress=False)
    assert [r["trainable_groups"] for r in run.history] == [1, 2]
    assert run.history[0]["trainable_params"] < run.history[1]["trainable_params"]
    parent = create_backbone("effnet-lite0")
    before, after = parent.model.state_dict(), load_file(str(run.run_dir / "model.safetensors"))
    groups = _groups(parent)
    # epoch 1: only the classifier; epoch 2: plus the last stage group. Nothing below moved.
    assert any(not torch.equal(before[k], after[k]) for k in _module_keys(before, groups["stage7"]))
    for k in _module_keys(before, groups["stage6"] + groups["stem"]):
        assert torch.equal(before[k], after[k]), k


@pytest.fixture(scope="module")
def ft_target(tmp_path_factory) -> Path:
    """Unlabelled target images: Fashion-MNIST test images behind a worse camera."""
    from embedsvc.datasets.fetch import fetch_dataset

    out = tmp_path_factory.mktemp("target")
    fetch_dataset("fashion-mnist-camera", out, limit=120)
    return out / "test"


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(ft_data, ft_target, tmp_path):
    """The uninterrupted run, the killed one and its resumption, each in a fresh process, so all
    three run with the same thread count (bitwise equality needs the same reduction order; in
    this process an earlier test may have left another, seen with OMP_NUM_THREADS=1).
    Everything a resume must restore at once: gradual (the resumed epoch unfreezes the next
    group), the target batches, the presets, MixStyle and DANN's discriminator."""
    args = ["--strategy", "gradual", "--epochs", "2", "--image-size", str(SIZE), "--seed", "3",
            "--patience", "0", "--target-data", str(ft_target), "--da", "dann",
            "--augment", "style,camera", "--entropy-weight", "0.1"]
    whole = run_cli("finetune", ft_data, *args, "--out", tmp_path / "whole", "--quiet",
                    timeout=600)
    assert whole.returncode == 0, whole.stderr
    run = tmp_path / "killed"
    kill_and_resume_run(ft_data, args, run)
    assert_same_run_weights(tmp_path / "whole", run)
    assert (tmp_path / "whole" / "metrics.csv").read_text().splitlines()[0] == (run / "metrics.csv").read_text().splitlines()[0]
    rows = [r.split(",") for r in (run / "metrics.csv").read_text().splitlines()]
    for key in ("domain_loss", "a_distance", "bound"):  # every epoch scored by the bound
        assert all(r[rows[0].index(key)] for r in rows[1:]), key
    assert json.loads((run / "run_config.json").read_text())["target"]["labelled"] is False


def test_target_options_are_checked_before_anything_runs(cli, ft_data, ft_target, tmp_path):
    p = cli("finetune", ft_data, "--out", tmp_path / "r", "--da", "dann")
    assert p.returncode == 2 and "needs target data" in p.stderr
    p = cli("finetune", ft_data, "--out", tmp_path / "r", "--target-data", ft_target,
            "--target-labelled", ft_target)
    assert p.returncode == 2 and "give one target" in p.stderr
    p = cli("finetune", ft_data, "--out", tmp_path / "r", "--augment", "fog")
    assert p.returncode == 2 and "available: images: lighting" in p.stderr
    other = tmp_path / "other" / "cat"
    other.mkdir(parents=True)
    for f in list(ft_target.rglob("*.png"))[:3]:
        shutil.copy(f, other / f.name)
    p = cli("finetune", ft_data, "--out", tmp_path / "r", "--target-labelled", other.parent,
            "--image-size", str(SIZE), "--quiet")
    assert p.returncode == 1 and "not among the source classes" in p.stderr
    assert not (tmp_path / "r" / "finetuned.json").exists()


def test_finetuned_backbone_and_head_in_embed_and_classify(cli, partial_run, fmnist_dir):
    name = partial_run.backbone_name
    test_images = [sorted((fmnist_dir / "test" / c).glob("*.png"))[0] for c in ("sneaker", "trouser", "bag")]
    emb = cli("embed", "-b", f"finetuned:{partial_run.run_dir}", *test_images,
              "--out", partial_run.run_dir / "e.npy")
    assert emb.returncode == 0, emb.stderr
    prov = json.loads((partial_run.run_dir / "e.npy.json").read_text())["provenance"]
    assert prov["backbone"] == name and prov["preprocess"]["input_size"] == [3, SIZE, SIZE]
    cls = cli("classify", "--head", partial_run.run_dir / "head", "--json", *test_images)
    assert cls.returncode == 0, cls.stderr
    labels = [r["label"] for r in json.loads(cls.stdout)]
    assert len(labels) == 3 and set(labels) <= set(json.loads((partial_run.run_dir / "finetuned.json").read_text())["classes"])


def test_a_finetuned_run_answers_classify_in_the_server(partial_run, fmnist_dir, tmp_path):

    from embedsvc.client import Client
    from embedsvc.service.config import ServeConfig
    from embedsvc.service.grpc_server import Server

    from embedsvc.service.datadir import DataDir

    DataDir(tmp_path).register_run(partial_run.run_dir, "fmnist-ft")
    srv = Server(ServeConfig(port=0, data_dir=str(tmp_path))).start()
    try:
        with Client(f"127.0.0.1:{srv.port}") as c:
            classes = sorted(p.name for p in (fmnist_dir / "test").iterdir())
            images = [sorted((fmnist_dir / "test" / cls).glob("*.png"))[i] for cls in classes for i in range(4)]
            answers = c.classify([p.read_bytes() for p in images], head="fmnist-ft", top_k=3, timeout=120)
            truth = [p.parent.name for p in images]
            acc = np.mean([a["label"] == t for a, t in zip(answers, truth)])
            assert acc >= 0.4, acc  # 40 test images, 10 classes: chance is 0.1
            vectors, resp = c.embed([images[0].read_bytes()], backbone="finetuned:fmnist-ft", timeout=120)
            assert vectors.shape == (1, 1280) and resp.provenance.backbone == "finetuned:fmnist-ft"
            assert "finetuned:fmnist-ft" in [m.name for m in c.models()]
            # a client never names a server path, and learns nothing about one
            for name in (f"finetuned:{partial_run.run_dir}", "finetuned:../fmnist-ft", "finetuned:nope"):
                with pytest.raises(grpc.RpcError) as exc:
                    c.embed([images[0].read_bytes()], backbone=name, timeout=60)
                assert exc.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
                assert str(tmp_path) not in exc.value.details() and str(partial_run.run_dir) not in exc.value.details()
    finally:
        srv.stop(grace=5)


def test_interpolation_spans_pretrained_to_finetuned(partial_run, tmp_path):
    ft = load_file(str(partial_run.run_dir / "model.safetensors"))
    pt = create_backbone("effnet-lite0").model.state_dict()
    mids = {}
    for alpha in (0.0, 0.5, 1.0):
        out = interpolate_run(partial_run.run_dir, alpha, tmp_path / f"wise{alpha}")
        mids[alpha] = load_file(str(out / "model.safetensors"))
    key = next(k for k in ft if k.startswith("conv_head") and not torch.equal(ft[k], pt[k]))
    assert torch.equal(mids[0.0][key], pt[key]) and torch.equal(mids[1.0][key], ft[key])
    assert torch.allclose(mids[0.5][key], (pt[key] + ft[key]) / 2, atol=1e-6)
    head = json.loads((tmp_path / "wise0.5" / "head" / "head.json").read_text())
    assert head["provenance"]["backbone"] == f"finetuned:{(tmp_path / 'wise0.5').resolve()}"
    backbone = create_backbone(head["provenance"]["backbone"])
    assert backbone.cfg.weights_sha256 == head["provenance"]["weights_sha256"]


def test_advise_follows_the_decision_guide(cli, fmnist_dir, tmp_path):
    def advise_cli(per_class: int, *extra: str) -> str:
        data = _manifest(fmnist_dir, tmp_path / f"d{per_class}.csv", per_class)
        p = cli("advise", data, "--quiet", *extra)
        assert p.returncode == 0, p.stderr
        return p.stdout

    out = advise_cli(30)
    assert "300 labelled images" in out and "recommended strategy: linear" in out
    assert "--strategy linear" in out
    out = advise_cli(300)
    assert "3000 labelled images" in out and "recommended strategy: partial" in out
    # 20,000 images: the rule is a function of counts, checked on the function itself
    assert recommend(20_000, 10).strategy == "full"
    # a target from the same distribution is close: the size decides
    same = advise_cli(30, "--target", str(_manifest(fmnist_dir, tmp_path / "t.csv", 30, "test")))
    assert "(similar;" in same and "recommended strategy: linear" in same


def test_domain_gap_to_photos_is_large_and_unfreezes_more(fmnist_dir, photos, tmp_path):
    from classifiers.finetune import domain_gap

    from PIL import Image

    data = _manifest(fmnist_dir, tmp_path / "d.csv", 3)
    photo_dir = tmp_path / "photos"
    photo_dir.mkdir()
    rng = np.random.default_rng(0)
    for name, p in photos.items():  # six different views of each real photo
        img = Image.open(p).convert("RGB")
        for i in range(6):
            w, h = img.size
            s = int(min(w, h) * rng.uniform(0.5, 0.9))
            x, y = rng.integers(0, w - s + 1), rng.integers(0, h - s + 1)
            img.crop((x, y, x + s, y + s)).save(photo_dir / f"{name}-{i}.png")
    gap = domain_gap(str(data), str(photo_dir), progress=False)
    assert gap.n_a == 30 and gap.n_b == 6 * len(photos)
    assert gap.verdict == "very different", gap
    assert recommend(30, 10, gap).strategy == "partial"


def test_bad_finetune_requests_exit_with_one_line(cli, ft_data, partial_run, tmp_path):
    p = cli("finetune", str(ft_data), "--out", str(partial_run.run_dir))
    assert p.returncode == 1 and "already holds a run" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = cli("finetune", "--resume", str(tmp_path / "nothing"))
    assert p.returncode == 1 and "nothing to resume" in p.stderr
    unlabelled = tmp_path / "u.csv"
    unlabelled.write_text("path\n" + "\n".join(l.split(",")[0] for l in ft_data.read_text().splitlines()[1:5]) + "\n")
    p = cli("finetune", str(unlabelled), "--out", str(tmp_path / "u"))
    assert p.returncode == 1 and "no label" in p.stderr
    p = cli("finetune", str(ft_data), "--out", str(tmp_path / "x"), "--strategy", "bogus")
    assert p.returncode == 2
    p = cli("interpolate", str(partial_run.run_dir), "--alpha", "1.5")
    assert p.returncode == 2 and "--alpha" in p.stderr  # a usage error since issue 10
    p = cli("embed", "-b", f"finetuned:{tmp_path / 'nothing'}", str(ft_data))
    assert p.returncode == 1 and "finetuned.json" in p.stderr
