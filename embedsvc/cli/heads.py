"""``train-head`` and ``classify``: light scikit-learn heads on stored embeddings."""
from __future__ import annotations

import argparse
from pathlib import Path

from classifiers.adapt.align import ALIGNMENTS
from classifiers.heads import KIND_NAMES

from ..wording import count
from . import output
from .common import (EXIT_ERROR, EXIT_OK, MAX_OOD_HELP, UsageError, command, device, err, inputs_given, text_options,
                     non_negative_int, positive_int, probability, refuse_existing, warn)


def cmd_train_head(args: argparse.Namespace) -> int:
    from classifiers.heads.artifact import HEAD_JSON
    from classifiers.heads.train import TrainHeadConfig, train_head

    refuse_existing(Path(args.out) / HEAD_JSON, "a head", args.overwrite)
    if args.align and not args.target:
        raise UsageError(f"--align {args.align} needs --target TARGET_STORE to align to")
    config = TrainHeadConfig(kind=args.kind, shots=args.shots, seed=args.seed,
                             class_weight=args.class_weight, learning_curve=args.learning_curve,
                             align=args.align,
                             **({"eval_split": args.eval_split} if args.eval_split else {}))
    head = train_head(args.store, args.out, config, progress=not args.quiet, target=args.target)
    for note in head.training.get("notes", []):
        warn(note)
    m = head.metrics
    print(f"{head.kind} head: {count(head.training['train_examples'], 'training example')}, "
          f"{count(len(head.classes), 'class')}, fitted in {m['fit_seconds']:.1f} s")
    print(f"  evaluated on {m['n']} ({head.training['split']})")
    if head.ood is not None:
        from classifiers.heads.train import ood_summary

        print(f"  OOD score: {ood_summary(head.ood.describe())}")
    if head.alignment is not None:
        print(f"  aligned ({head.alignment.method}) to {head.training['target_vectors']} target vectors")
    for key in ("accuracy", "unaligned_accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy"):
        if key in m:
            print(f"  {key:<18} {m[key]:.4f}")
    print(f"wrote {args.out} (head.json, params.npz) and {args.out}/report/report.md")
    if args.register:
        register_head(args.out, args.register, Path(args.out).resolve().name)
    return EXIT_OK


def register_head(head_dir: str | Path, data_dir: str, name: str) -> None:
    """Install a head folder into a server's data dir as heads/NAME."""
    from ..service.datadir import DataDir

    target = DataDir(Path(data_dir)).register_head(head_dir, name)
    print(f"registered as head {target.name!r} in {data_dir} (a running server picks it up)")


def cmd_classify(args: argparse.Namespace) -> int:
    from classifiers.heads.classify import HeadClassifier
    from ..encoders import check_query

    inputs, ids, modality = inputs_given(args)
    clf = HeadClassifier(args.head, device=args.device)
    check_query(modality, clf.head.provenance, f"head {args.head!r}")
    if args.max_ood is not None and clf.head.ood is not None:
        if note := clf.head.ood.resolution_note(args.max_ood):
            warn(note)
    results, emb = clf.classify(inputs, ids=ids, top=args.top,
                                abstain_below=args.abstain_below, skip_bad=args.skip_bad,
                                max_ood=args.max_ood)
    for item, reason in emb.skipped:
        warn(f"skipped {item!r}: {reason}")
    if not results:
        err("no image could be classified")
        return EXIT_ERROR
    if args.json:
        output.print_json([output.classification(r.id, r.label, r.probability, r.ood_score,
                                                 r.abstained, r.top) for r in results])
        return EXIT_OK
    for r in results:
        tops = ", ".join(f"{l} {p:.1%}" for l, p in r.top)
        print(f"{output.short(r.id)}\t{r.label}\t{r.probability:.3f}\tood={r.ood_score:.3f}\t[{tops}]")
    return EXIT_OK


def register(sub) -> None:
    p = command(sub, "train-head", "train a classifier head on a store's embeddings",
                ["embedsvc train-head stores/digits --out heads/digits",
                 "embedsvc train-head stores/digits --kind svm --shots 10 --out heads/digits-10shot",
                 "embedsvc train-head stores/digits --out heads/digits --register /srv/embedsvc",
                 "embedsvc train-head stores/fmnist --target stores/fmnist-dark --align coral --out heads/dark"],
                cmd_train_head)
    p.add_argument("store", help="embedding store folder with labelled rows")
    p.add_argument("--kind", choices=KIND_NAMES, default="logreg", help="which estimator")
    p.add_argument("--out", "-o", required=True, help="head folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace a head already in --out")
    p.add_argument("--eval-split", metavar="SPLIT",
                   help="split to evaluate on; default 'test', or a stratified hold-out of the "
                        "training rows when the store is not split (a named split must exist)")
    p.add_argument("--shots", type=positive_int,
                   help="labelled examples per class (few-shot; a warning names short classes)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed for sampling and splits")
    p.add_argument("--class-weight", choices=["balanced"], help="reweight imbalanced classes")
    p.add_argument("--target", metavar="TARGET_STORE",
                   help="a store of target-domain embeddings (same backbone): evaluate on its labels, "
                        "if any, and align to it with --align")
    p.add_argument("--align", choices=ALIGNMENTS,
                   help="move the training features into the target's statistics before fitting "
                        "(coral: covariance; mean-std: per dimension)")
    p.add_argument("--learning-curve", action="store_true",
                   help="also accuracy vs labels per class (1, 2, 5, ... all), table and PNG")
    p.add_argument("--register", metavar="DATA_DIR",
                   help="also install the head into a server's data dir (heads/<name of --out>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command(sub, "classify", "classify images or texts with a trained head",
                ["embedsvc classify x.png --head heads/digits",
                 "embedsvc classify --text 'a gripping, beautiful film' --head heads/movies",
                 "embedsvc classify --texts reviews.txt --head heads/movies --json",
                 "embedsvc classify *.png --head heads/digits --abstain-below 0.5 --json",
                 "embedsvc classify *.jpg --head heads/fmnist --max-ood 0.99"],
                cmd_classify)
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files (for a head on images)")
    text_options(p, "classify (for a head on text)")
    p.add_argument("--head", required=True, help="head folder (from train-head)")
    p.add_argument("--top", type=positive_int, default=5, help="labels per image")
    p.add_argument("--abstain-below", type=probability, metavar="P",
                   help="answer 'unknown' when the top probability is below P, in [0, 1]")
    p.add_argument("--max-ood", type=probability, metavar="S", help=MAX_OOD_HELP)
    p.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--skip-bad", action="store_true", help="report unreadable images, go on")
    p.add_argument("--json", action="store_true", help="print JSON")
