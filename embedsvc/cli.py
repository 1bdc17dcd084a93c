"""``embedsvc`` command line. Each subcommand is a thin shell over the public Python API.

Exit codes: 0 success, 1 an error in the input or the environment (one line on stderr),
2 bad usage (argparse), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys
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
