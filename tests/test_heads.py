"""Heads on real Fashion-MNIST embeddings: every kind learns, saves without pickle, reloads
identically in a fresh process, and refuses features made another way."""
import json
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from classifiers.heads import HEAD_KINDS, Head, TrainHeadConfig, make_head, train_head
from classifiers.heads.classify import HeadClassifier, classify_embeddings
from classifiers.heads.train import few_shot, split_store
from embedsvc.embeddings import Embeddings
from embedsvc.errors import IncompatibleError, InvalidInputError

pytestmark = pytest.mark.slow  # real EfficientNet-Lite weights (see README: Tests and CI)


@pytest.fixture(scope="module")
def split(fmnist_store):
    Xtr, ytr, Xev, yev, _ = split_store(fmnist_store, TrainHeadConfig())
    keep = few_shot(ytr, 60, seed=0)
    return Xtr[keep], ytr[keep], Xev, yev


@pytest.mark.parametrize("kind,min_acc", [("logreg", 0.72), ("linear-svm", 0.70), ("svm", 0.70),
                                          ("knn", 0.65), ("centroid", 0.60)])
def test_every_kind_learns_and_round_trips(split, fmnist_store, tmp_path, kind, min_acc):
    Xtr, ytr, Xev, yev = split
    est = make_head(kind).fit(Xtr, ytr)
    proba = est.predict_proba(Xev)
    assert proba.shape == (len(yev), 10) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    acc = np.mean(est.predict(Xev) == yev)
    assert acc >= min_acc, (kind, acc)
    head = Head(est, fmnist_store.provenance)
    head.save(tmp_path / "h")
    back = Head.load(tmp_path / "h")
    assert back.classes == head.classes
    assert np.array_equal(back.estimator.predict(Xev), est.predict(Xev))
    assert np.allclose(back.estimator.predict_proba(Xev), proba, atol=1e-6)


def test_trained_head_gives_identical_predictions_in_a_fresh_process(fmnist_store, tmp_path):
    head = train_head(fmnist_store.root, tmp_path / "h",
                      TrainHeadConfig(kind="logreg", shots=30), progress=False)
    X = fmnist_store.vectors()[-50:]
    np.save(tmp_path / "x.npy", X)
    code = ("import sys, numpy as np; from classifiers.heads import Head; "
            "h = Head.load(sys.argv[1]); x = np.load(sys.argv[2]); "
            "np.save(sys.argv[3], h.estimator.predict_proba(x))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "h"), str(tmp_path / "x.npy"),
                    str(tmp_path / "p.npy")], check=True, timeout=300)
    assert np.array_equal(np.load(tmp_path / "p.npy"), head.estimator.predict_proba(X))
    meta = json.loads((tmp_path / "h" / "head.json").read_text())
    assert meta["provenance"]["weights_sha256"] == fmnist_store.provenance["weights_sha256"]
    assert meta["classes"] == sorted(meta["classes"]) and len(meta["classes"]) == 10
    assert meta["training"]["per_class"] == {c: 30 for c in meta["classes"]}
    assert (tmp_path / "h" / "report" / "confusion.png").stat().st_size > 10_000


class _Boom:
    def __reduce__(self):
        return (print, ("pickle payload executed",))


def test_a_head_file_with_a_pickle_payload_is_refused(fmnist_store, split, tmp_path):
    Xtr, ytr, _, _ = split
    Head(make_head("centroid").fit(Xtr, ytr), fmnist_store.provenance).save(tmp_path / "h")
    # replace the arrays with an object array, which numpy can only store as a pickle
    with zipfile.ZipFile(tmp_path / "h" / "params.npz", "w") as z:
        with z.open("centroids.npy", "w") as f:
            np.lib.format.write_array(f, np.array([_Boom()], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInputError, match="pickled"):
        Head.load(tmp_path / "h")
    (tmp_path / "h" / "params.npz").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(InvalidInputError):
        Head.load(tmp_path / "h")


def test_mismatched_embeddings_are_refused(fmnist_store, split):
    Xtr, ytr, Xev, _ = split
    head = Head(make_head("logreg", Cs=(1.0,)).fit(Xtr, ytr), fmnist_store.provenance)
    other = Embeddings(Xev[:3], ("a", "b", "c"), {**fmnist_store.provenance, "backbone": "effnet-lite2"})
    with pytest.raises(IncompatibleError, match="backbone='effnet-lite0'.*'effnet-lite2'"):
        head.predict_proba(other)
    late = Embeddings(Xev[:3, :320], ("a", "b", "c"),
                      {**fmnist_store.provenance, "tap": "late", "dim": 320})
    with pytest.raises(IncompatibleError, match="dim"):
        head.predict_proba(late)
    with pytest.raises(InvalidInputError, match="1280-d"):
        head.estimator.predict(Xev[:3, :100])


def test_abstain_and_ood_score(fmnist_store, split, photos):
    Xtr, ytr, Xev, yev = split
    head = Head(make_head("knn").fit(Xtr, ytr), fmnist_store.provenance)
    clf = HeadClassifier(head)
    results, _ = clf.classify([photos["chelsea"]], ids=["cat"], top=3)
    in_dist = classify_embeddings(head, Embeddings(Xev[:20], tuple(map(str, range(20))),
                                                   fmnist_store.provenance))
    # a colour photo of a cat is far from every Fashion-MNIST training image
    assert results[0].ood_score > max(r.ood_score for r in in_dist)
    answers = classify_embeddings(head, Embeddings(Xev[:40], tuple(map(str, range(40))),
                                                   fmnist_store.provenance), abstain_below=0.9)
    assert all(r.abstained == (r.probability < 0.9) for r in answers)
    assert all((r.label == "unknown") == r.abstained for r in answers)
    assert any(r.abstained for r in answers) and not all(r.abstained for r in answers)
    with pytest.raises(InvalidInputError, match="abstain_below"):
        classify_embeddings(head, Embeddings(Xev[:1], ("a",), fmnist_store.provenance), abstain_below=1.5)


def test_config_and_input_validation(fmnist_store):
    with pytest.raises(InvalidInputError, match="available: logreg"):
        TrainHeadConfig(kind="forest")
    with pytest.raises(InvalidInputError, match="shots"):
        TrainHeadConfig(shots=0)
    with pytest.raises(InvalidInputError, match="does not take class weights"):
        make_head("knn", class_weight="balanced")
    with pytest.raises(InvalidInputError, match="at least 2 classes"):
        make_head("logreg").fit(np.ones((4, 8)), ["a"] * 4)
    assert set(HEAD_KINDS) == {"logreg", "linear-svm", "svm", "knn", "centroid"}


def test_learning_curve_report_rises_with_labels(fmnist_store, tmp_path):
    train_head(fmnist_store.root, tmp_path / "h",
               TrainHeadConfig(kind="centroid", shots=50, learning_curve=True), progress=False)
    report = (tmp_path / "h" / "report" / "report.md").read_text()
    assert "![learning curve](learning_curve.png)" in report
    assert (tmp_path / "h" / "report" / "learning_curve.png").stat().st_size > 10_000
    rows = [l.split("|") for l in report.splitlines() if l.startswith("| ") and l.count("|") == 5]
    accs = {int(r[1]): float(r[3]) for r in rows if r[1].strip().isdigit()}
    assert sorted(accs) == [1, 2, 5, 10, 20, 50]
    assert accs[50] > accs[10] > accs[1]


def test_train_head_and_classify_cli(cli, fmnist_store, tmp_path):
    p = cli("train-head", fmnist_store.root, "--kind", "centroid", "--out", tmp_path / "h", "--quiet")
    assert p.returncode == 0, p.stderr
    assert "accuracy" in p.stdout and (tmp_path / "h" / "report" / "report.md").is_file()
    row = next(r for r in fmnist_store.metadata() if r["split"] == "test" and r["label"] == "trouser")
    p = cli("classify", "--head", tmp_path / "h", row["path"], "--json", "--top", "3")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)[0]
    assert out["label"] == "trouser" and len(out["top"]) == 3 and 0 <= out["ood_score"] <= 1
    p = cli("classify", "--head", tmp_path / "nope", row["path"])
    assert p.returncode == 1 and "no head" in p.stderr
