"""``embedsvc`` command line. Each subcommand is a thin shell over the public Python API.

Exit codes: 0 success, 1 an error in the input or the environment (one line on stderr),
2 bad usage (argparse), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from .malloc import tune_malloc

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _err(msg: str) -> None:
    print(f"embedsvc: error: {msg}", file=sys.stderr)


def _warn(msg: str) -> None:
    print(f"embedsvc: warning: {msg}", file=sys.stderr)


# -- models -----------------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> int:
    from .backbones import DEFAULT_BACKBONE, list_backbones

    rows = [("NAME", "LIBRARY", "DIM", "INPUT", "WEIGHTS", "DESCRIPTION")]
    for e in list_backbones():
        name = e.name + (" (default)" if e.name == DEFAULT_BACKBONE else "")
        rows.append((name, e.library, str(e.dim or "-"), str(e.input_size or "-"),
                     e.weights_status(), e.description))
    if args.json:
        print(json.dumps([dict(zip([h.lower() for h in rows[0]], r)) for r in rows[1:]], indent=2))
        return EXIT_OK
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return EXIT_OK


# -- embed / predict --------------------------------------------------------------------------
def _extractor(args: argparse.Namespace, normalize: bool, tap: str):
    from .backbones import create_backbone
    from .extract import ExtractConfig, FeatureExtractor

    backbone = create_backbone(args.backbone, weights=args.weights)
    config = ExtractConfig(batch_size=args.batch_size, normalize=normalize, tap=tap,
                           device=args.device)
    return backbone, FeatureExtractor(backbone, config)


def _report_skipped(emb) -> None:
    for item, reason in emb.skipped:
        _warn(f"skipped {item!r}: {reason}")


def cmd_embed(args: argparse.Namespace) -> int:
    _, fe = _extractor(args, normalize=not args.no_normalize, tap=args.tap)
    emb = fe.embed(args.images, ids=args.images, skip_bad=args.skip_bad,
                   progress=args.progress)
    _report_skipped(emb)
    if len(emb) == 0:
        _err("no image could be embedded")
        return EXIT_ERROR
    if args.out:
        path = emb.save(args.out)
        print(f"wrote {len(emb)} x {emb.dim} float32 vectors to {path} "
              f"(ids and provenance in {path}.json)")
    else:
        import numpy as np

        for id_, vec in zip(emb.ids, emb.vectors):
            head = " ".join(f"{v:+.4f}" for v in vec[:4])
            print(f"{id_}\tdim={vec.shape[0]}\tnorm={np.linalg.norm(vec):.4f}\t[{head} ...]")
    print(f"backbone={emb.provenance['backbone']} tap={emb.provenance['tap']} "
          f"device={fe.plan.describe()} weights_sha256={emb.provenance['weights_sha256'][:12]}",
          file=sys.stderr)
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from classifiers.heads.imagenet import ImageNetHead

    backbone, fe = _extractor(args, normalize=False, tap="pre_logits")
    head = ImageNetHead.from_backbone(backbone)
    emb = fe.embed(args.images, ids=args.images, skip_bad=args.skip_bad)
    _report_skipped(emb)
    if len(emb) == 0:
        _err("no image could be classified")
        return EXIT_ERROR
    preds = head.predict(emb, top=args.top)
    if args.json:
        print(json.dumps([{"id": p.id, "top": [{"label": l, "probability": round(q, 6)}
                                               for l, q in p.top]} for p in preds], indent=2))
        return EXIT_OK
    for p in preds:
        print(p.id)
        for rank, (label, prob) in enumerate(p.top, 1):
            print(f"  {rank}. {prob:6.2%}  {label}")
    return EXIT_OK


# -- datasets / stores / indexes / search -------------------------------------------------------
def cmd_datasets_fetch(args: argparse.Namespace) -> int:
    from .datasets.fetch import fetch_dataset

    counts = fetch_dataset(args.name, args.out, progress=not args.quiet, limit=args.limit)
    print(f"wrote {args.name} to {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return EXIT_OK


def cmd_embed_dataset(args: argparse.Namespace) -> int:
    from .store import EmbedDatasetConfig, embed_dataset

    config = EmbedDatasetConfig(
        backbone=args.backbone, weights=args.weights, batch_size=args.batch_size,
        workers=args.workers, shard_size=args.shard_size,
        dtype="float16" if args.float16 else "float32", dedup=args.dedup, device=args.device,
        tap=args.tap)
    r = embed_dataset(args.src, args.out, config, progress=not args.quiet,
                      stop_after_shards=args.max_shards)
    print(f"{r.store}: added {r.added} vectors in {r.seconds:.1f} s ({r.images_per_s:.1f} img/s); "
          f"{r.already_done} of {r.total_records} inputs were already done; "
          f"skipped {len(r.skipped)} (listed in {r.store}/errors.jsonl)")
    for row in r.skipped[:10]:
        _warn(f"skipped {row['path']!r}: {row['reason']}")
    if len(r.skipped) > 10:
        _warn(f"... and {len(r.skipped) - 10} more")
    return EXIT_OK


def _parse_bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().rstrip("B")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 512M or 4G, got {text!r}") from None


def cmd_index_build(args: argparse.Namespace) -> int:
    from .index.store_index import build_store_index
    from .store import EmbeddingStore

    vi = build_store_index(EmbeddingStore.open(args.store), args.name, args.kind, args.recall,
                           args.memory_budget)
    i = vi.infos
    tuned = (f", {i['search_param']}={i['search_param_value']}" if i.get("search_param") else "")
    print(f"built {i['kind']} index '{args.name}' ({i['factory']}) over {i['count']} vectors "
          f"in {i['build_seconds']:.1f} s{tuned}, recall@{i['k']}={i['recall_at_k']:.3f}")
    return EXIT_OK


def cmd_index_update(args: argparse.Namespace) -> int:
    from .index.store_index import update_store_index
    from .store import EmbeddingStore

    vi, added = update_store_index(EmbeddingStore.open(args.store), args.name)
    print(f"index '{args.name}': added {added} new rows; {vi.ntotal} vectors")
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    from .search import StoreSearcher

    searcher = StoreSearcher(args.store, args.index)
    where = {"label": args.label, "split": args.split, "domain": args.domain}
    if args.image:
        hits = searcher.search_images([args.image], args.k, where)[0]
    else:
        hits = searcher.search_ids([args.id], args.k, where)[0]
    if args.json:
        print(json.dumps([{"id": h.id, "score": round(h.score, 6), **h.metadata} for h in hits], indent=2))
        return EXIT_OK
    print(f"{'RANK':>4}  {'ID':>7}  {'SCORE':>6}  {'LABEL':<14}  PATH")
    for rank, h in enumerate(hits, 1):
        print(f"{rank:>4}  {h.id:>7}  {h.score:6.3f}  {str(h.label):<14}  {h.path}")
    return EXIT_OK


# -- heads --------------------------------------------------------------------------------------
def cmd_train_head(args: argparse.Namespace) -> int:
    from classifiers.heads.train import TrainHeadConfig, train_head

    config = TrainHeadConfig(kind=args.kind, eval_split=args.eval_split, shots=args.shots,
                             seed=args.seed, class_weight=args.class_weight,
                             learning_curve=args.learning_curve)
    head = train_head(args.store, args.out, config, progress=not args.quiet)
    m = head.metrics
    print(f"{head.kind} head: {head.training['train_examples']} training examples, "
          f"{len(head.classes)} classes, fitted in {m['fit_seconds']:.1f} s")
    print(f"  evaluated on {m['n']} ({head.training['split']})")
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy"):
        if key in m:
            print(f"  {key:<18} {m[key]:.4f}")
    print(f"wrote {args.out} (head.json, params.npz) and {args.out}/report/report.md")
    if args.register:
        _register_head(args.out, args.register, Path(args.out).resolve().name)
    return EXIT_OK


def _register_head(head_dir: str | Path, data_dir: str, name: str) -> None:
    """Install a head folder into a server's data dir as heads/NAME."""
    from .service.datadir import DataDir

    target = DataDir(Path(data_dir)).register_head(head_dir, name)
    print(f"registered as head {target.name!r} in {data_dir} (a running server picks it up)")


def _register_run(run_dir: str | Path, data_dir: str, name: str) -> None:
    """Install a fine-tuning run into a server's data dir: backbone finetuned:NAME, head NAME."""
    from .service.datadir import DataDir

    DataDir(Path(data_dir)).register_run(run_dir, name)
    print(f"registered as backbone 'finetuned:{name}' and head {name!r} in {data_dir} "
          f"(a running server picks them up)")


# -- fine-tuning ----------------------------------------------------------------------------------
def cmd_finetune(args: argparse.Namespace) -> int:
    from classifiers.finetune import FinetuneConfig, finetune

    if args.resume:
        result = finetune("", args.resume, resume=True, progress=not args.quiet)
    else:
        if not args.data or not args.out:
            _err("finetune needs DATA and --out RUN_DIR (or --resume RUN_DIR)")
            return EXIT_USAGE
        config = FinetuneConfig(
            backbone=args.backbone, strategy=args.strategy, epochs=args.epochs,
            batch_size=args.batch_size, image_size=args.image_size, lr=args.lr,
            backbone_lr_ratio=args.backbone_lr_ratio, layer_decay=args.layer_decay, partial_stages=args.partial_stages,
            unfreeze_every=args.unfreeze_every, probe_epochs=args.probe_epochs,
            label_smoothing=args.label_smoothing, val_split=args.val_split, patience=args.patience,
            augment=not args.no_augment, update_frozen_bn=args.update_frozen_bn, seed=args.seed,
            device=args.device)
        result = finetune(args.data, args.out, config, progress=not args.quiet)
    print(f"run {result.run_dir}: {result.strategy}, {result.epochs_run} epochs"
          + (" (stopped early)" if result.stopped_early else "")
          + (f", best validation accuracy {result.best_val_acc:.4f} at epoch {result.best_epoch}"
             if result.best_val_acc is not None else ""))
    print(f"  backbone name : {result.backbone_name}")
    print(f"  metrics       : {result.run_dir / 'metrics.csv'}, {result.run_dir / 'curves.png'}")
    if args.register:
        _register_run(result.run_dir, args.register, result.run_dir.resolve().name)
    return EXIT_OK


def cmd_interpolate(args: argparse.Namespace) -> int:
    from classifiers.finetune import interpolate_run

    out = interpolate_run(args.run_dir, args.alpha, args.out)
    print(f"wrote {out}: {1 - args.alpha:g} x pretrained + {args.alpha:g} x fine-tuned; "
          f"use it as --backbone finetuned:{out.resolve()}")
    if args.register:
        _register_run(out, args.register, out.resolve().name)
    return EXIT_OK


def cmd_advise(args: argparse.Namespace) -> int:
    from classifiers.finetune import advise

    rec = advise(args.data, args.target, args.backbone, progress=not args.quiet)
    counts = rec.per_class
    print(f"{sum(counts.values())} labelled images in {len(counts)} classes "
          f"({min(counts.values())}..{max(counts.values())} per class)")
    if rec.gap is not None:
        g = rec.gap
        print(f"domain gap to {args.target}: proxy A-distance {g.proxy_a_distance:.2f} ({g.level}), "
              f"mean-embedding cosine {g.centroid_cosine:.3f}, on {g.n_source} + {g.n_target} images")
    print(f"recommended strategy: {rec.strategy}")
    for reason in rec.reasons:
        print(f"  - {reason}")
    print("run it:")
    print(f"  {rec.command(args.data, args.backbone)}")
    if rec.strategy == "linear":
        print("  or, cheaper, a head on stored embeddings:")
        print(f"  embedsvc embed-dataset {args.data} --backbone {args.backbone} --out store && "
              f"embedsvc train-head store --out head")
    return EXIT_OK


def cmd_classify(args: argparse.Namespace) -> int:
    from classifiers.heads.classify import HeadClassifier

    clf = HeadClassifier(args.head, device=args.device)
    results, emb = clf.classify(args.images, ids=args.images, top=args.top,
                                abstain_below=args.abstain_below, skip_bad=args.skip_bad)
    _report_skipped(emb)
    if not results:
        _err("no image could be classified")
        return EXIT_ERROR
    if args.json:
        print(json.dumps([{"id": r.id, "label": r.label, "probability": round(r.probability, 6),
                           "ood_score": round(r.ood_score, 6), "abstained": r.abstained,
                           "top": [{"label": l, "probability": round(p, 6)} for l, p in r.top]}
                          for r in results], indent=2))
        return EXIT_OK
    for r in results:
        tops = ", ".join(f"{l} {p:.1%}" for l, p in r.top)
        print(f"{r.id}\t{r.label}\t{r.probability:.3f}\tood={r.ood_score:.3f}\t[{tops}]")
    return EXIT_OK


# -- service ------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from .service.config import ServeConfig
    from .service.grpc_server import Server
    from .service.logs import setup_json_logging

    setup_json_logging()
    config = ServeConfig.load(args.config, port=args.port, host=args.host, data_dir=args.data_dir,
                              default_backbone=args.backbone, metrics_port=args.metrics_port,
                              auth_token=os.environ.get("EMBEDSVC_TOKEN") or None)
    server = Server(config).start()
    metrics = f", metrics on :{server.metrics_port}/metrics" if server.metrics_port else ""
    print(f"embedsvc serving on {config.host}:{server.port} (data dir {config.data_dir}{metrics})",
          flush=True)
    server.serve_until_signal()
    return EXIT_OK


def cmd_client(args: argparse.Namespace) -> int:
    """Call a running server: the same answers as the local commands, over gRPC."""
    import grpc

    from .client import Client

    with Client(args.server, token=os.environ.get("EMBEDSVC_TOKEN") or None) as c:
        try:
            if args.client_command == "embed":
                vecs, resp = c.embed(args.images, backbone=args.backbone or "", timeout=args.timeout)
                out = [{"id": v.id, "dim": len(v.values), "vector": [round(x, 6) for x in v.values]}
                       for v in resp.vectors]
            elif args.client_command == "classify":
                out = c.classify(args.images, head=args.head, top_k=args.top,
                                 abstain_below=args.abstain_below or 0.0, timeout=args.timeout)
            elif args.client_command == "search":
                out = c.search(args.index, image=args.image, k=args.k, timeout=args.timeout)
            else:  # upsert
                items = [{"id": args.first_id + n, "image": p, "metadata": {"path": str(p), **(
                    {"label": args.label} if args.label else {})}} for n, p in enumerate(args.images)]
                r = c.upsert(args.index, items, timeout=args.timeout)
                out = {"upserted": r.upserted, "total": r.total}
        except grpc.RpcError as exc:
            _err(f"{exc.code().name}: {exc.details()}")
            return EXIT_ERROR
    print(json.dumps(out, indent=2))
    return EXIT_OK


# -- parser -----------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _model_options(p: argparse.ArgumentParser) -> None:
    from .backbones.registry import DEFAULT_BACKBONE

    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--backbone", "-b", default=DEFAULT_BACKBONE,
                   help=f"backbone name (default {DEFAULT_BACKBONE}; see 'embedsvc models')")
    p.add_argument("--weights", metavar="PATH", help="weight file for the backbone (local only)")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--skip-bad", action="store_true",
                   help="report unreadable images and go on with the others")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="embedsvc", description="Transfer learning as a service: embed, classify, search.")
    parser.add_argument("--version", action="version", version=f"embedsvc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list backbones and whether their weights are present")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("embed", help="embed images into vectors")
    _model_options(p)
    p.add_argument("--out", "-o", metavar="FILE.npy", help="write vectors (+ FILE.npy.json)")
    p.add_argument("--tap", default="pre_logits",
                   help="which features: pre_logits (default), early, middle, late")
    p.add_argument("--no-normalize", action="store_true", help="keep raw (un-normalised) vectors")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("predict", help="ImageNet labels with the backbone's own classifier")
    _model_options(p)
    p.add_argument("--top", type=_positive_int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    from .datasets.fetch import DATASETS

    p = sub.add_parser("datasets", help="write real labelled datasets from local packages")
    dsub = p.add_subparsers(dest="datasets_command", required=True, metavar="ACTION")
    f = dsub.add_parser("fetch", help="write NAME as PNG class folders (train/ and test/)")
    f.add_argument("name", choices=sorted(DATASETS))
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--limit", type=_positive_int, help="only the first N images of each split")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_datasets_fetch)

    from .backbones.registry import DEFAULT_BACKBONE

    p = sub.add_parser("embed-dataset", help="embed a dataset into a resumable embedding store")
    p.add_argument("src", help="class-folder tree, flat folder, or .csv/.jsonl manifest")
    p.add_argument("--out", "-o", required=True, help="store folder (created, or resumed/appended)")
    p.add_argument("--backbone", "-b", default=DEFAULT_BACKBONE)
    p.add_argument("--weights", metavar="PATH")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--workers", type=int, default=None,
                   help="decode threads ahead of the model (default: auto, 0 on a 2-core CPU)")
    p.add_argument("--shard-size", type=_positive_int, default=4096)
    p.add_argument("--float16", action="store_true", help="store vectors as float16")
    p.add_argument("--dedup", action="store_true", help="skip files whose bytes are already stored")
    p.add_argument("--device", default="auto")
    p.add_argument("--tap", default="pre_logits")
    p.add_argument("--max-shards", type=_positive_int, help="stop after N shards (resume later)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_embed_dataset)

    from .index.planner import KINDS

    p = sub.add_parser("index", help="build or update a store's FAISS index")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    b = isub.add_parser("build", help="(re)build an index over every row of STORE")
    b.add_argument("store")
    b.add_argument("--kind", choices=KINDS, default="auto")
    b.add_argument("--name", default="default")
    b.add_argument("--recall", type=float, default=0.95, help="recall@10 target for tuning")
    b.add_argument("--memory-budget", type=_parse_bytes, default=4 << 30, help="e.g. 4G")
    b.set_defaults(func=cmd_index_build)
    u = isub.add_parser("update", help="add rows appended to STORE since the index was built")
    u.add_argument("store")
    u.add_argument("--name", default="default")
    u.set_defaults(func=cmd_index_update)

    from classifiers.heads.kinds import HEAD_KINDS

    p = sub.add_parser("train-head", help="train a classifier head on a store's embeddings")
    p.add_argument("store")
    p.add_argument("--kind", choices=list(HEAD_KINDS), default="logreg")
    p.add_argument("--out", "-o", required=True, help="head folder to write")
    p.add_argument("--eval-split", default="test",
                   help="split to evaluate on (default test; a stratified hold-out if absent)")
    p.add_argument("--shots", type=_positive_int, help="labelled examples per class (few-shot)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class-weight", choices=["balanced"], help="reweight imbalanced classes")
    p.add_argument("--learning-curve", action="store_true",
                   help="also accuracy vs labels per class (1, 2, 5, ... all), table and PNG")
    p.add_argument("--register", metavar="DATA_DIR",
                   help="also install the head into a server's data dir (heads/<name of --out>)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train_head)

    from classifiers.finetune.config import STRATEGIES, FinetuneConfig

    d = FinetuneConfig()
    p = sub.add_parser("finetune", help="fine-tune a backbone on labelled images (a resumable run)")
    p.add_argument("data", nargs="?", help="class folders or a manifest with labels")
    p.add_argument("--out", "-o", help="run directory to write")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly")
    p.add_argument("--backbone", "-b", default=d.backbone)
    p.add_argument("--strategy", choices=STRATEGIES, default=d.strategy)
    p.add_argument("--epochs", type=_positive_int, default=d.epochs)
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size)
    p.add_argument("--image-size", type=_positive_int, help="train at this input size (px)")
    p.add_argument("--lr", type=float, default=d.lr, help="the classifier's peak learning rate")
    p.add_argument("--backbone-lr-ratio", type=float, default=d.backbone_lr_ratio,
                   help="the last backbone stage's rate relative to --lr")
    p.add_argument("--layer-decay", type=float, default=d.layer_decay,
                   help="learning-rate factor per stage group towards the input (1 = one rate)")
    p.add_argument("--partial-stages", type=_positive_int, default=d.partial_stages)
    p.add_argument("--unfreeze-every", type=_positive_int, default=d.unfreeze_every,
                   help="gradual: epochs between unfreezing the next stage group")
    p.add_argument("--probe-epochs", type=int, default=d.probe_epochs, help="lp-ft: linear-probe epochs")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--val-split", type=float, default=d.val_split)
    p.add_argument("--patience", type=int, default=d.patience, help="early stopping; 0 = off")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--update-frozen-bn", action="store_true",
                   help="let frozen stages' BatchNorm statistics follow the new data")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--register", metavar="DATA_DIR", help="also install the run's head into a server's data dir")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("interpolate", help="WiSE-FT: mix a run's weights with the pretrained ones")
    p.add_argument("run_dir")
    p.add_argument("--alpha", type=float, required=True, help="0 = pretrained, 1 = fine-tuned")
    p.add_argument("--out", "-o", help="new run directory (default RUN_DIR-wiseALPHA)")
    p.add_argument("--register", metavar="DATA_DIR")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("advise", help="which fine-tuning strategy for this data (and target)")
    p.add_argument("data")
    p.add_argument("--target", help="target-domain images: measures the domain gap on embeddings")
    p.add_argument("--backbone", "-b", default=d.backbone)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_advise)

    p = sub.add_parser("classify", help="classify images with a trained head")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--head", required=True, help="head folder (from train-head)")
    p.add_argument("--top", type=_positive_int, default=5)
    p.add_argument("--abstain-below", type=float, metavar="P",
                   help="answer 'unknown' when the top probability is below P")
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-bad", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("serve", help="run the gRPC service")
    p.add_argument("--config", help="serve.toml with ServeConfig fields")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    p.add_argument("--data-dir", help="folder with heads/ and indexes/")
    p.add_argument("--backbone", help="default backbone, loaded at start")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this HTTP port")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("client", help="call a running embedsvc server")
    csub = p.add_subparsers(dest="client_command", required=True, metavar="ACTION")
    for name, help_ in (("embed", "embed images"), ("classify", "classify images with a head"),
                        ("search", "nearest neighbours of an image in an index"),
                        ("upsert", "add images to an index")):
        c = csub.add_parser(name, help=help_)
        c.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT")
        c.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
        if name in ("embed", "classify", "upsert"):
            c.add_argument("images", nargs="+", metavar="IMAGE")
        if name == "embed":
            c.add_argument("--backbone")
        if name == "classify":
            c.add_argument("--head", default="imagenet")
            c.add_argument("--top", type=_positive_int, default=5)
            c.add_argument("--abstain-below", type=float)
        if name in ("search", "upsert"):
            c.add_argument("--index", required=True)
        if name == "search":
            c.add_argument("--image", required=True)
            c.add_argument("-k", type=_positive_int, default=10)
        if name == "upsert":
            c.add_argument("--first-id", type=int, default=0, help="id of the first image")
            c.add_argument("--label", help="label metadata for every image")
        c.set_defaults(func=cmd_client)

    p = sub.add_parser("search", help="nearest neighbours in a store")
    p.add_argument("store")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--image", help="query image file")
    q.add_argument("--id", type=int, help="query with the vector of store row N")
    p.add_argument("-k", type=_positive_int, default=10)
    p.add_argument("--index", default="default", help="index name (default: 'default')")
    p.add_argument("--label"), p.add_argument("--split"), p.add_argument("--domain")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    tune_malloc()  # before torch allocates its first activation buffer
    args = build_parser().parse_args(argv)
    from .errors import EmbedsvcError

    try:
        return args.func(args)
    except EmbedsvcError as exc:
        _err(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except OSError as exc:  # e.g. --out in a read-only place
        _err(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
