"""Text end to end on real data: the VADER movie snippets (the sdist `make test` installs) embedded
with all-MiniLM-L6-v2 from the command line, a logistic head trained on the train split, and a
real server answering gRPC, HTTP and the official `openai` client with the same vectors and the
same labels as the command line; OOD and drift on inputs the head never saw."""
from __future__ import annotations

import glob
import json
import random

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from conftest import run_cli
from embedsvc.client import Client
from embedsvc.service.config import ServeConfig
from embedsvc.service.grpc_server import Server

pytestmark = pytest.mark.slow


EVERY = 3


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    """The movie snippets, their minilm-l6 store (the default encoder for a text manifest) and a
    logistic head trained from the CLI, registered in a server's data dir."""
    from embedsvc.cli import main

    root = tmp_path_factory.mktemp("movies")
    # the command line in this process (run_cli's fresh process would import torch thrice more)
    assert main(["datasets", "fetch", "sentiment-movies", "--out", str(root / "all"), "--quiet"]) == 0
    # one snippet in EVERY (the file is sorted by rating, so a stride keeps both labels and
    # every strength): embedding all 10,568 took a minute of the suite's ten
    lines = (root / "all" / "manifest.jsonl").read_text().splitlines()[::EVERY]
    (root / "data").mkdir()
    (root / "data" / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    for args in (("embed-dataset", root / "data" / "manifest.jsonl", "--out", root / "store",
                  "--quiet"),
                 ("train-head", root / "store", "--out", root / "head", "--register",
                  root / "serve", "--quiet")):
        assert main([str(a) for a in args]) == 0, args
    rows = [json.loads(x) for x in (root / "data" / "manifest.jsonl").read_text().splitlines()]
    return root, rows


def held_out(rows: list[dict]) -> list[str]:
    """The test split's snippets in a seeded random order (the file is sorted by sentiment)."""
    texts = [r["text"] for r in rows if r["split"] == "test"]
    random.Random(0).shuffle(texts)
    return texts


@pytest.fixture(scope="module")
def server(movies):
    root, _ = movies
    srv = Server(ServeConfig(port=0, http_port=0, data_dir=str(root / "serve"),
                             default_backbone="tiny-random", drift_window=200,
                             drift_interval_s=600)).start()
    yield srv
    srv.stop(grace=5)


def test_a_logistic_head_on_frozen_minilm_reaches_the_movie_accuracy(movies):
    """Issue 29's measure, on a third of the data: 0.770 measured on 690 test snippets with
    2,833 labels (0.782 on all 2,069 with 8,499: bench/text_finetune.py's head row). The floor
    sits three binomial standard errors (1.6 points each) below: another CPU's float kernels
    flip a handful of answers, not the 34 this leaves."""
    root, rows = movies
    store = json.loads((root / "store" / "manifest.json").read_text())
    assert store["provenance"]["backbone"] == "minilm-l6" and store["provenance"]["modality"] == "text"
    assert store["count"] == len(rows) and store["provenance"]["dim"] == 384
    head = json.loads((root / "head" / "head.json").read_text())
    test = sum(r["split"] == "test" for r in rows)
    print("movie head:", head["metrics"]["accuracy"], "on", head["metrics"]["n"])
    assert head["metrics"]["n"] == test and head["metrics"]["accuracy"] >= 0.72


def test_grpc_classify_with_text_answers_as_the_cli(movies, server, tmp_path):
    root, rows = movies
    texts = held_out(rows)[:64]
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n")
    r = run_cli("classify", "--texts", tmp_path / "t.txt", "--head", root / "head", "--json")
    assert r.returncode == 0, r.stderr
    local = json.loads(r.stdout)
    served = Client(f"127.0.0.1:{server.port}").classify(texts=texts, head="head")
    assert [a["label"] for a in local] == [b["label"] for b in served]
    assert np.allclose([a["probability"] for a in local], [b["probability"] for b in served],
                       atol=1e-4)
    assert np.allclose([a["ood_score"] for a in local], [b["ood_score"] for b in served], atol=1e-3)
    assert [a["id"] for a in local][:2] == [f"{tmp_path / 't.txt'}:1", f"{tmp_path / 't.txt'}:2"]


def test_the_openai_client_gets_the_vectors_grpc_embed_gives(server):
    from openai import OpenAI

    texts = ["This is an example sentence", "great", "I loved it 😍 best movie of the year!!!",
             "这部电影非常好看", "slow " * 400]
    _, resp = Client(f"127.0.0.1:{server.port}").embed(texts=texts, backbone="minilm-l6")
    grpc_vecs = np.array([v.values for v in resp.vectors], np.float32)
    client = OpenAI(base_url=f"http://127.0.0.1:{server.http_port}/v1", api_key="none",
                    max_retries=0)
    got = client.embeddings.create(model="minilm-l6", input=texts)  # asks for base64
    vecs = np.array([d.embedding for d in got.data], np.float32)
    assert vecs.shape == (5, 384) and got.model == "minilm-l6"
    # each request batches its texts its own way (other padding): equal within float noise
    assert np.abs(vecs - grpc_vecs).max() < 1e-5
    assert np.allclose(vecs[0, :3], [0.0677, 0.0635, 0.0487], atol=1e-4)
    assert list(resp.truncated) == ["4"] and resp.provenance.modality == "text"
    assert got.usage.prompt_tokens > 256  # the cut text counts its 256 tokens
    one = client.embeddings.create(model="minilm-l6", input="great", encoding_format="float")
    assert np.abs(np.array(one.data[0].embedding) - grpc_vecs[1]).max() < 1e-5
    with pytest.raises(Exception) as refused:
        client.embeddings.create(model="minilm-l6", input=[[101, 2307, 102]])
    assert refused.value.status_code == 400 and "token ids" in str(refused.value)


def _python_lines(n: int, seed: int) -> list[str]:
    """Lines of Python source from the installed packages (scikit-learn's)."""
    import sklearn

    lines = []
    for path in sorted(glob.glob(f"{sklearn.__path__[0]}/**/*.py", recursive=True))[:300]:
        with open(path, encoding="utf-8") as f:
            lines += [s for s in (x.strip() for x in f) if len(s) > 30 and not s.startswith("#")]
    random.Random(seed).shuffle(lines)
    return lines[:n]


def test_per_request_ood_flags_source_code_and_shuffled_snippets(movies, server):
    """Held-out movie snippets against lines of Python and held-out snippets with their words
    shuffled (the head's detector learnt from shuffled *training* snippets), 150 of each kind:
    AUROC >= 0.9 (0.955 measured on 200 + 400). An AUROC over 150 x 300 pairs has a standard
    error near 0.015, so 0.9 is 3 of them below what was measured."""
    root, rows = movies
    test = held_out(rows)
    rng = random.Random(1)
    held, to_shuffle = test[:150], test[150:300]
    shuffled = []
    for t in to_shuffle:
        words = t.split()
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    c = Client(f"127.0.0.1:{server.port}")
    score = lambda texts: np.array([a["ood_score"] for a in c.classify(texts=texts, head="head")])
    s_in, s_py, s_sh = score(held), score(_python_lines(150, 0)), score(shuffled)
    auroc = roc_auc_score(np.r_[np.zeros(150), np.ones(300)], np.r_[s_in, s_py, s_sh])
    print(f"OOD AUROC {auroc:.3f} (python {roc_auc_score(np.r_[np.zeros(150), np.ones(150)], np.r_[s_in, s_py]):.3f}, "
          f"shuffled {roc_auc_score(np.r_[np.zeros(150), np.ones(150)], np.r_[s_in, s_sh]):.3f}); "
          f"held-out snippets above 0.99: {(s_in > 0.99).sum()} of 150")
    assert auroc >= 0.9
    assert (s_in > 0.99).sum() <= 6  # ~1.5 expected at the calibrated 0.99; 6 is over 3 sd


def test_the_drift_gauge_rises_when_tweets_reach_the_movie_head(movies, server, tmp_path):
    root, rows = movies
    c = Client(f"127.0.0.1:{server.port}")
    test = held_out(rows)
    for lo in range(300, 500, 50):
        c.classify(texts=test[lo:lo + 50], head="head")
    stable = c.drift("head")[0]
    r = run_cli("datasets", "fetch", "sentiment-tweets", "--out", tmp_path / "tweets", "--limit", "200")
    assert r.returncode == 0, r.stderr
    tweets = [json.loads(x)["text"] for x in (tmp_path / "tweets" / "manifest.jsonl").read_text().splitlines()]
    for lo in range(0, 200, 50):
        c.classify(texts=tweets[lo:lo + 50], head="head")
    drifted = c.drift("head")[0]
    print("drift, movies:", stable.verdict, round(stable.mmd2, 5), "tweets:", drifted.verdict,
          round(drifted.mmd2, 5), drifted.decided_by)
    assert stable.verdict == "stable" and drifted.verdict == "drifted"
    assert drifted.mmd2 > stable.mmd2 and drifted.window == stable.window == 200
