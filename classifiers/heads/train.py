"""``train-head``: fit a head on a store's train split, evaluate it honestly, write the report."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.adapt.align import check_alignment, fit_alignment
from embedsvc.atomic import atomic_write_bytes
from embedsvc.provenance import check_compatible
from embedsvc.wording import count
from embedsvc.errors import InvalidInputError
from embedsvc.store import EmbeddingStore

from .artifact import Head
from .evaluate import confusion_png, learning_curve_png, metrics
from .kinds import HEAD_KINDS, make_head
from .ood import DEFAULT_MAX_OOD, fit_reference

LEARNING_CURVE_SHOTS = (1, 2, 5, 10, 20, 50, 100)
MAX_TARGET = 5000  # target vectors the alignment is fitted on (a seeded sample beyond that)


@dataclass(frozen=True)
class TrainHeadConfig:
    kind: str = "logreg"
    eval_split: str = "test"
    train_split: str = "train"
    shots: int | None = None  # labelled examples per class (few-shot); None = all
    seed: int = 0
    class_weight: str | None = None  # "balanced" for imbalanced data
    holdout: float = 0.2  # stratified hold-out when the store has no splits
    learning_curve: bool = False
    align: str | None = None  # adapt/align.py ALIGNMENTS, fitted on a target store

    def __post_init__(self) -> None:
        if self.align is not None:
            check_alignment(self.align)
        if self.kind not in HEAD_KINDS:
            raise InvalidInputError(f"unknown head kind {self.kind!r}; available: {', '.join(HEAD_KINDS)}")
        if self.shots is not None and self.shots < 1:
            raise InvalidInputError(f"shots must be >= 1, got {self.shots}")
        if self.class_weight not in (None, "balanced"):
            raise InvalidInputError(f"class_weight must be 'balanced' or unset, got {self.class_weight!r}")
        if not 0.0 < self.holdout < 1.0:
            raise InvalidInputError(f"holdout must be in (0, 1), got {self.holdout}")


def few_shot(y: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Indices of ``shots`` examples per class (all of a class that has fewer), seeded."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(y == c))[:shots] for c in np.unique(y)]
    return np.sort(np.concatenate(picked))


def split_store(store: EmbeddingStore, config: TrainHeadConfig):
    """(X_train, y_train, X_eval, y_eval, how the split was made)."""
    meta = store.metadata()
    labelled = np.array([i for i, r in enumerate(meta) if r.get("label") is not None])
    if len(labelled) == 0:
        raise InvalidInputError(f"store {str(store.root)!r} has no labelled rows to train a head on")
    X = store.vectors()[labelled]
    y = np.array([meta[i]["label"] for i in labelled], dtype=str)
    splits = np.array([meta[i].get("split") for i in labelled], dtype=object)
    tr, ev = splits == config.train_split, splits == config.eval_split
    present = sorted({str(s) for s in splits if s is not None})
    if tr.any() and ev.any():
        how = f"store splits: train={config.train_split!r}, eval={config.eval_split!r}"
    elif set(present) - {config.train_split}:
        # the store is split, just not as asked: evaluating on another split would be a surprise
        missing, use = ((config.train_split, "train on") if ev.any() else
                        (config.eval_split, "evaluate on"))
        raise InvalidInputError(f"store {str(store.root)!r} has no {missing!r} split to {use} "
                                f"(its splits: {', '.join(present)})")
    else:
        from sklearn.model_selection import train_test_split

        if present:  # only a training split: hold out part of it
            X, y = X[tr], y[tr]
        classes, counts = np.unique(y, return_counts=True)
        if (counts < 2).any():
            raise InvalidInputError(
                f"a stratified hold-out needs 2 examples of every class; only 1 of "
                f"{', '.join(map(repr, classes[counts < 2][:5].tolist()))}")
        idx = np.arange(len(y))
        tr_idx, ev_idx = train_test_split(idx, test_size=config.holdout, random_state=config.seed,
                                          stratify=y)
        tr, ev = np.isin(idx, tr_idx), np.isin(idx, ev_idx)
        how = f"stratified hold-out of {config.holdout:.0%} (the store has no {config.eval_split!r} split)"
    return X[tr], y[tr], X[ev], y[ev], how


def target_rows(target_path: str | Path, provenance: dict[str, Any], classes: np.ndarray,
                seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(vectors for the alignment, labelled vectors and labels for evaluation, notes) of a target
    store made the way the source was. Labels never reach the alignment; rows whose label the
    head does not know cannot be scored and are left out of the evaluation."""
    store = EmbeddingStore.open(target_path)
    check_compatible(provenance, store.provenance, f"target store {str(target_path)!r}")
    X, meta = store.vectors(), store.metadata()
    if len(X) == 0:
        raise InvalidInputError(f"target store {str(target_path)!r} is empty")
    labels = np.array([str(r.get("label")) if r.get("label") is not None else "" for r in meta])
    known = np.isin(labels, classes)
    notes = []
    if (labels != "").any() and not known.all():
        notes.append(f"{int((~known & (labels != '')).sum())} target rows have labels the head "
                     f"does not know; they are not in the target evaluation")
    sample = X if len(X) <= MAX_TARGET else X[np.random.default_rng(seed).choice(len(X), MAX_TARGET, replace=False)]
    return sample, X[known], labels[known], notes


def train_head(store_path: str | Path, out: str | Path,
               config: TrainHeadConfig = TrainHeadConfig(), progress: bool = True,
               target: str | Path | None = None) -> Head:
    """Fit and evaluate a head. With ``target`` (a store of target-domain embeddings), the
    evaluation is on the target's labels when it has any, and ``config.align`` first moves the
    training features into the target's statistics (adapt/align.py)."""
    if config.align is not None and target is None:
        raise InvalidInputError(f"--align {config.align} needs --target TARGET_STORE to align to")
    store = EmbeddingStore.open(store_path)
    Xtr, ytr, Xev, yev, how = split_store(store, config)
    notes = []
    if config.shots is not None:
        classes, counts = np.unique(ytr, return_counts=True)
        if (counts < config.shots).any():
            short = ", ".join(f"{c} {n}" for c, n in zip(classes, counts) if n < config.shots)
            notes.append(f"--shots {config.shots}: fewer examples in {short}; using all of those")
        keep = few_shot(ytr, config.shots, config.seed)
        Xtr, ytr = Xtr[keep], ytr[keep]
    alignment, target_info = None, {}
    if target is not None:
        Xal, Xt, yt, target_notes = target_rows(target, store.provenance, np.unique(ytr), config.seed)
        notes += target_notes
        if config.align is not None:
            alignment = fit_alignment(config.align, Xtr, Xal)
        target_info = {"target": str(Path(target).resolve()), "target_vectors": int(len(Xal)),
                       "target_labelled": int(len(yt))}
    Xfit = Xtr if alignment is None else alignment.apply(Xtr)
    t0 = time.perf_counter()
    est = make_head(config.kind, config.class_weight).fit(Xfit, ytr)
    fit_s = time.perf_counter() - t0
    if target is not None and len(yt):
        Xev, yev = Xt, yt
        how = f"all {len(yt)} labelled rows of the target store (their labels fit nothing)"
    elif alignment is not None:
        Xev = alignment.apply(Xev)
        how += "; held-out source moved by the alignment (the target store has no labels)"
    m = metrics(est, Xev, yev)
    if alignment is not None and target_info["target_labelled"]:  # what the alignment bought
        m["unaligned_accuracy"] = metrics(make_head(config.kind, config.class_weight).fit(Xtr, ytr),
                                          Xev, yev)["accuracy"]
    m["fit_seconds"] = round(fit_s, 3)
    classes, counts = np.unique(ytr, return_counts=True)
    training = {
        **target_info,
        "store": str(Path(store_path).resolve()),
        "split": how,
        "train_examples": int(len(ytr)),
        "per_class": {str(c): int(n) for c, n in zip(classes, counts)},
        "config": asdict(config),
        "notes": notes,
    }
    ood = fit_reference(Xfit, config.seed, _atypical(store, alignment, config.seed))
    if ood is not None and (note := ood.resolution_note(DEFAULT_MAX_OOD)):
        notes.append(note)
    head = Head(est, store.provenance, m, training, ood, alignment, store.projection())
    out = Path(out)
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    confusion_png(est, Xev, yev, report / "confusion.png",
                  f"{config.kind} head — accuracy {m['accuracy']:.3f} on {m['n']} held-out")
    curve = learning_curve(Xfit, ytr, Xev, yev, config, progress) if config.learning_curve else None
    if curve:
        learning_curve_png(curve, report / "learning_curve.png",
                           f"{config.kind} head on {store.provenance['backbone']} features")
    atomic_write_bytes(report / "report.md", render_report(head, curve).encode())
    head.save(out)
    return head


MAX_ATYPICAL = 1000  # corrupted training inputs the OOD detector learns from


def _atypical(store: EmbeddingStore, alignment, seed: int) -> np.ndarray | None:
    """Embeddings of training inputs corrupted on purpose (texts: words shuffled, word salad),
    moved by the head's alignment like its training embeddings; None for images."""
    from embedsvc.encoders import atypical_vectors

    train = [r for r in store.metadata() if r.get("split") in (None, "train")]
    X = atypical_vectors(store.provenance, train, MAX_ATYPICAL, seed)
    return X if X is None or alignment is None else alignment.apply(X)


def learning_curve(Xtr, ytr, Xev, yev, config: TrainHeadConfig, progress: bool) -> list[dict[str, Any]]:
    smallest = int(np.unique(ytr, return_counts=True)[1].min())
    steps = [s for s in LEARNING_CURVE_SHOTS if s < smallest] + [smallest]
    rows = []
    it = steps
    if progress:
        from tqdm import tqdm

        it = tqdm(steps, desc="learning curve", unit="step")
    for shots in it:
        keep = few_shot(ytr, shots, config.seed)
        est = make_head(config.kind, config.class_weight).fit(Xtr[keep], ytr[keep])
        rows.append({"shots": shots, "train_examples": int(len(keep)), **metrics(est, Xev, yev)})
    return rows


def ood_summary(d: dict[str, Any]) -> str:
    """One line on what a head's OOD score can resolve (``OODReference.describe``)."""
    return (f"distance to the {d['k']}th nearest training example, calibrated on "
            f"{d['calibration']} training examples ({d['calibrated']}): counted in steps of "
            f"{1 / d['calibration']:.3f} up to {d['tail_from']:.2f}, a fitted exponential tail above "
            f"(scale {d['tail_scale']:.3f}); default threshold {d['default_max_ood']:g}"
            + (f"; joined with a detector of {d['detector']['negatives']} inputs corrupted on "
               f"purpose (held-out AUROC {d['detector']['held_out_auroc']:.3f})"
               if d.get("detector") else ""))


def render_report(head: Head, curve: list[dict[str, Any]] | None) -> str:
    m, t = head.metrics, head.training
    lines = [
        f"# {head.kind} head on {head.provenance['backbone']} embeddings", "",
        f"- features: {head.provenance['backbone']} (weights sha256 "
        f"{head.provenance['weights_sha256'][:12]}…), {head.provenance['dim']}-d, "
        f"tap {head.provenance['tap']}, normalized={head.provenance['normalized']}",
        f"- data: {count(t['train_examples'], 'training example')}, "
        f"{count(len(head.classes), 'class')}; {t['split']}",
        "", "| metric | value |", "|---|---|",
    ]
    if head.ood is not None:
        lines.insert(-3, f"- OOD score: {ood_summary(head.ood.describe())}")
    if head.alignment is not None:
        lines.insert(-3, f"- alignment: {head.alignment.method} to {t.get('target_vectors')} vectors "
                         f"of {t.get('target')}")
    for key in ("accuracy", "unaligned_accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy",
                "n", "fit_seconds"):
        if key in m:
            v = m[key]
            lines.append(f"| {key} | {v:.4f} |" if isinstance(v, float) and key != "fit_seconds"
                         else f"| {key} | {v} |")
    lines += ["", "![confusion matrix](confusion.png)", ""]
    if curve:
        lines += ["## Learning curve", "", "| labels per class | train examples | accuracy | macro-F1 |",
                  "|---|---|---|---|"]
        lines += [f"| {r['shots']} | {r['train_examples']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} |"
                  for r in curve]
        lines += ["", "![learning curve](learning_curve.png)", ""]
    return "\n".join(lines)
