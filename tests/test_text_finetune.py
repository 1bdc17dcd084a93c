"""Fine-tuning a text encoder with the same command, strategies and guarantees as an image
backbone, on the seeded tiny text encoder (real runs on minilm-l6 are bench/text_finetune.py's):
a killed run resumes to bitwise the weights of an uninterrupted one, frozen blocks stay bitwise,
and the finished run is a text encoder everywhere one is accepted (CLI, heads, the server)."""
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_same_run_weights, kill_and_resume_run, run_cli
from classifiers.finetune import FinetuneConfig, finetune

WORDS = {"pos": ["good", "great", "lovely", "superb", "fine", "happy"],
         "neg": ["bad", "awful", "poor", "dull", "sad", "boring"]}
FILLER = ["the", "film", "was", "a", "plot", "and", "with", "actors", "story", "very"]


def _snippets(n: int, seed: int) -> list[dict]:
    """Labelled snippets a few words long: filler around two words of the label's sentiment."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("pos", "neg")[i % 2]
        words = rng.sample(FILLER, rng.randint(2, 8)) + rng.sample(WORDS[label], 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="module")
def snippets(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _snippets(400, 0)))
    return path


@pytest.fixture(scope="module")
def text_run(snippets, tmp_path_factory):
    cfg = FinetuneConfig(backbone="tiny-text", strategy="partial", partial_stages=1, epochs=10,
                         batch_size=16, max_tokens=32, lr=1e-2, seed=1)
    return finetune(str(snippets), tmp_path_factory.mktemp("runs") / "partial", cfg,
                    progress=False)


def test_a_text_run_trains_its_top_block_and_leaves_the_rest_bitwise(text_run):
    from embedsvc.text.catalog import text_encoder_config
    from embedsvc.text.model import load_model

    before = load_model(text_encoder_config("tiny-text")).state_dict()
    after = load_file(str(text_run.run_dir / "model.safetensors"))
    assert before.keys() == after.keys()
    top = [k for k in after if k.startswith("encoder.layer.2.")]  # the last of 3 blocks
    frozen = [k for k in after if k.startswith(("embeddings.", "encoder.layer.0.",
                                                "encoder.layer.1.", "pooler."))]
    assert top and frozen and len(top) + len(frozen) == len(after)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert sum(not torch.equal(before[k], after[k]) for k in top) >= len(top) // 2
    meta = json.loads((text_run.run_dir / "finetuned.json").read_text())
    assert meta["modality"] == "text" and meta["parent"]["backbone"] == "tiny-text"
    assert meta["max_tokens"] == 32 and "tokenizer.json" in meta["encoder_files"]
    assert text_run.best_val_acc >= 0.9  # 40 held-out snippets (measured 1.0; chance 0.5)


@pytest.mark.parametrize("preset", ["dropout", "swap", "mask", "typos"])
def test_text_presets_change_texts_as_their_seed_says(preset):
    from classifiers.adapt.text_augment import apply_text_presets

    texts = [r["text"] for r in _snippets(50, 3)]
    a = apply_text_presets(texts, (preset,), torch.Generator().manual_seed(7), "[MASK]")
    b = apply_text_presets(texts, (preset,), torch.Generator().manual_seed(7), "[MASK]")
    c = apply_text_presets(texts, (preset,), torch.Generator().manual_seed(8), "[MASK]")
    assert a == b and a != c
    changed = sum(x != t for x, t in zip(a, texts))
    # applied with P_APPLY 0.8; dropout and typos leave a short text whole about a third of the
    # time: about 27 of 50 changed at the least (sd 3.5), and never all
    assert 0.25 * len(texts) <= changed < len(texts)
    assert all(x.strip() for x in a)
    if preset == "mask":
        assert all("[MASK]" in x for x, t in zip(a, texts) if x != t)


def test_a_killed_text_run_resumes_to_the_weights_of_an_uninterrupted_one(snippets, tmp_path):
    """As for images (tests/test_finetune.py): the three runs in fresh processes; gradual
    unfreezing, so the resumed epoch unfreezes the next block; the text presets draw from the
    epoch's generator."""
    args = ["--backbone", "tiny-text", "--strategy", "gradual", "--epochs", "4", "--batch-size",
            "8", "--max-tokens", "32", "--seed", "3", "--patience", "0", "--augment", "typos,mask"]
    whole = run_cli("finetune", snippets, *args, "--out", tmp_path / "whole", "--quiet",
                    timeout=600)
    assert whole.returncode == 0, whole.stderr
    kill_and_resume_run(snippets, args, tmp_path / "killed")
    assert_same_run_weights(tmp_path / "whole", tmp_path / "killed")


def test_a_text_run_is_a_text_encoder_in_the_cli_and_the_server(cli, text_run, tmp_path):
    from embedsvc.client import Client
    from embedsvc.service.config import ServeConfig
    from embedsvc.service.datadir import DataDir
    from embedsvc.service.grpc_server import Server

    name = f"finetuned:{text_run.run_dir}"
    tests = _snippets(24, 7)
    (tmp_path / "q.txt").write_text("\n".join(r["text"] for r in tests) + "\n")
    out = cli("classify", "--head", text_run.run_dir / "head", "--texts", tmp_path / "q.txt",
              "--json")
    assert out.returncode == 0, out.stderr
    by_cli = [a["label"] for a in json.loads(out.stdout)]
    assert np.mean([p == r["label"] for p, r in zip(by_cli, tests)]) >= 0.75
    models = cli("models")
    assert models.returncode == 0
    emb = cli("embed", "--backbone", name, "--text", "a good film", "--json")
    assert emb.returncode == 0, emb.stderr
    assert len(json.loads(emb.stdout)[0]["vector"]) == 32

    DataDir(tmp_path / "data").register_run(text_run.run_dir, "movies-ft")
    srv = Server(ServeConfig(port=0, data_dir=str(tmp_path / "data"))).start()
    try:
        with Client(f"127.0.0.1:{srv.port}") as c:
            answers = c.classify(texts=[r["text"] for r in tests], head="movies-ft", timeout=120)
            assert [a["label"] for a in answers] == by_cli
            vectors, resp = c.embed(texts=["a good film"], backbone="finetuned:movies-ft",
                                    timeout=120)
            assert vectors.shape == (1, 32) and resp.provenance.backbone == "finetuned:movies-ft"
            assert resp.provenance.modality == "text"
    finally:
        srv.stop(grace=5)


def test_wise_ft_of_a_text_run_is_a_text_encoder_between_both(text_run, tmp_path):
    from classifiers.finetune import interpolate_run
    from embedsvc.encoders import open_encoder
    from embedsvc.text.catalog import text_encoder_config
    from embedsvc.text.model import load_model

    pt = load_model(text_encoder_config("tiny-text")).state_dict()
    ft = load_file(str(text_run.run_dir / "model.safetensors"))
    out = interpolate_run(text_run.run_dir, 0.5, tmp_path / "wise")
    mid = load_file(str(out / "model.safetensors"))
    key = next(k for k in ft if not torch.equal(ft[k], pt[k]))
    assert torch.allclose(mid[key], (pt[key] + ft[key]) / 2, atol=1e-6)
    enc = open_encoder(f"finetuned:{out}")
    assert enc.modality == "text" and enc.embed(["a good film"]).vectors.shape == (1, 32)
    head = json.loads((out / "head" / "head.json").read_text())
    assert head["provenance"]["weights_sha256"] == enc.cfg.weights_sha256


@pytest.mark.parametrize("da", ["dann", "coral", "mmd"])
def test_a_text_run_adapts_to_unlabelled_target_texts(snippets, tmp_path, da):
    """Source snippets, target texts in another register (unlabelled: their labels are
    ignored); every epoch is scored by the selection bound, since the target has no labels."""
    target = tmp_path / "target.jsonl"
    target.write_text("".join(json.dumps({"text": "omg " + r["text"].upper() + " lol !!",
                                          "label": r["label"]}) + "\n"
                              for r in _snippets(120, 5)))
    cfg = FinetuneConfig(backbone="tiny-text", strategy="partial", partial_stages=1, epochs=2,
                         batch_size=16, max_tokens=32, lr=1e-2, seed=2, da=da)
    result = finetune(str(snippets), tmp_path / "run", cfg, progress=False, target=str(target))
    assert all(r["domain_loss"] is not None and r["bound"] is not None for r in result.history)
    assert json.loads((tmp_path / "run" / "run_config.json").read_text())["target"]["labelled"] is False


def test_bad_text_finetune_requests_exit_with_one_line(cli, snippets, tmp_path):
    cases = [
        (["--backbone", "tiny-random"], "holds texts, but tiny-random encodes images"),
        (["--backbone", "tiny-text", "--image-size", "64"], "--image-size is for image backbones"),
        (["--backbone", "tiny-text", "--augment", "lighting"],
         "preset 'lighting' is for images, not texts"),
    ]
    usage = [(["--backbone", "tiny-text", "--max-tokens", "2"], "max_tokens=2")]  # exit 2
    for n, (args, message) in enumerate(cases + usage):
        r = cli("finetune", snippets, *args, "--out", tmp_path / f"r{n}", "--quiet")
        assert r.returncode == (1 if n < len(cases) else 2) and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / f"r{n}" / "finetuned.json").exists()
