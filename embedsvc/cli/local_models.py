"""``models``, ``embed``, ``predict``: a backbone on this machine."""
from __future__ import annotations

import argparse
import sys

from ..backbones.registry import DEFAULT_BACKBONE
from ..quantize import ENCODINGS
from ..text.catalog import DEFAULT_TEXT_ENCODER
from ..wording import count
from . import output
from .common import (EXIT_ERROR, EXIT_OK, InputError, command, decode_option, device, err, existing_images,
                     in_range, inputs_given, positive_int, read_texts_file, runtime_option,
                     text_options, UsageError, warn)


def cmd_models(args: argparse.Namespace) -> int:
    from ..encoders import DEFAULTS, listing

    rows = [output.model(e.name, e.library, e.dim, e.input_size, e.weights_status(), e.description,
                         e.name == DEFAULTS[modality], family=e.family, modality=modality)
            for modality, e in listing()]
    if args.json:
        output.print_json(rows)
        return EXIT_OK
    # models first; families are name patterns, listed apart under their own heading. INPUT is
    # an image's side in pixels, a text's longest input in tokens.
    ordered = [r for r in rows if not r["family"]] + [r for r in rows if r["family"]]
    table = [("NAME", "MODALITY", "LIBRARY", "DIM", "INPUT", "WEIGHTS", "DESCRIPTION")] + [
        (r["name"] + (" (default)" if r["default"] else ""), r["modality"], r["library"],
         str(r["dim"] or "-"), _input(r), r["weights"], r["description"]) for r in ordered]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for n, r in enumerate(table):
        if n and ordered[n - 1]["family"] and not ordered[n - 2]["family"]:
            print("families (a model name in place of <model>):")
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return EXIT_OK


def _input(row: dict) -> str:
    if not row["input_size"]:
        return "-"
    return f"{row['input_size']} tok" if row["modality"] == "text" else f"{row['input_size']} px"


def extractor(args: argparse.Namespace, normalize: bool, tap: str):
    """The backbone and extractor the model options ask for."""
    from ..backbones import create_backbone
    from ..extract import ExtractConfig, FeatureExtractor

    backbone = create_backbone(args.backbone, weights=args.weights)
    config = ExtractConfig(batch_size=args.batch_size, normalize=normalize, tap=tap,
                           device=args.device, decode=args.decode, runtime=args.runtime)
    return backbone, FeatureExtractor(backbone, config)


def report_skipped(emb) -> None:
    for item, reason in emb.skipped:
        warn(f"skipped {item!r}: {reason}")


def _projected_store(args: argparse.Namespace):
    """``--projection STORE``: the projected store whose projection the vectors get."""
    if not args.projection:
        return None
    from ..store import EmbeddingStore

    store = EmbeddingStore.open(args.projection)
    if not store.provenance.get("projection"):
        raise InputError(f"{args.projection!r} is not a projected store (make one with 'embedsvc "
                         f"project')")
    return store


def cmd_embed(args: argparse.Namespace) -> int:
    from ..encoders import DEFAULTS, EncodeOptions, modality_of_name, open_encoder
    from ..projection import project_embeddings

    inputs, ids, modality = inputs_given(args)
    if args.encoding != "float" and not args.json:
        raise InputError(f"--encoding {args.encoding} prints codes as JSON: add --json")
    projected = _projected_store(args)
    name = args.backbone or (projected.provenance["backbone"] if projected else DEFAULTS[modality])
    if (encodes := modality_of_name(name)) != modality:  # before the model loads
        raise InputError(f"{name} encodes {encodes}s, not {modality}s; name an encoder of "
                         f"{modality}s (default {DEFAULTS[modality]}, see 'embedsvc models')")
    fe = open_encoder(name, args.weights, EncodeOptions(
        tap=args.tap, normalize=not args.no_normalize, batch_size=args.batch_size,
        device=args.device, decode=args.decode, runtime=args.runtime))
    emb = fe.embed(inputs, ids=ids, skip_bad=args.skip_bad, progress=args.progress)
    if projected is not None and len(emb):
        emb = project_embeddings(emb, projected.projection(), projected.provenance)
    report_skipped(emb)
    if emb.truncated:
        n = len(emb.truncated)
        warn(f"{count(n, 'text')} longer than {name}'s token limit ({fe.cfg.max_length}) "
             f"{'was' if n == 1 else 'were'} cut to fit: "
             + ", ".join(repr(output.short(t, 40)) for t in emb.truncated[:3]))
    if len(emb) == 0:
        err("no image could be embedded")
        return EXIT_ERROR
    if args.out:
        path = emb.save(args.out)
        print(f"wrote {len(emb)} x {emb.dim} float32 vectors to {path} "
              f"(ids and provenance in {path}.json)")
    elif args.json:
        from ..quantize import encode

        rows = encode(emb.vectors, args.encoding, emb.ids)
        output.print_json([output.embedding(i, v, emb.dim) for i, v in zip(emb.ids, rows)])
    else:
        import numpy as np

        for id_, vec in zip(emb.ids, emb.vectors):
            head = " ".join(f"{v:+.4f}" for v in vec[:4])
            print(f"{output.short(id_)}\tdim={vec.shape[0]}\tnorm={np.linalg.norm(vec):.4f}\t[{head} ...]")
    p = emb.provenance
    how = (f"runtime={p['runtime']} decode={p['decode']}" if modality == "image" else
           f"runtime={p['runtime']} max_length={p['max_length']} pooling={p['pooling']}")
    print(f"backbone={p['backbone']} tap={p['tap']} {how} device={fe.plan.describe()} "
          f"weights_sha256={p['weights_sha256'][:12]}", file=sys.stderr)
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from classifiers.heads.imagenet import ImageNetHead

    images = existing_images(args.images, args.skip_bad)
    backbone, fe = extractor(args, normalize=False, tap="pre_logits")
    head = ImageNetHead.from_backbone(backbone)
    emb = fe.embed(images, ids=images, skip_bad=args.skip_bad)
    report_skipped(emb)
    if len(emb) == 0:
        err("no image could be classified")
        return EXIT_ERROR
    preds = head.predict(emb, top=args.top)
    if args.json:
        output.print_json([output.prediction(p.id, p.top) for p in preds])
        return EXIT_OK
    for p in preds:
        print(p.id)
        for rank, (label, prob) in enumerate(p.top, 1):
            print(f"  {rank}. {prob:6.2%}  {label}")
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ..encoders import EncodeOptions, modality_of_name, open_encoder

    modality = modality_of_name(args.backbone)
    given = "text" if args.texts else "image"
    if given != modality:
        raise UsageError(f"{args.backbone} encodes {modality}s: calibrate it with "
                         f"{'--texts FILE' if modality == 'text' else '--images DIR'}")
    if modality == "text":
        from ..runtimes.calibrate_text import calibrate_text

        if args.weights:
            raise UsageError("--weights is for image backbones")
        encoder = open_encoder(args.backbone, options=EncodeOptions(tap=args.tap, device="cpu"))
        report = calibrate_text(encoder, read_texts_file(args.texts)[0], store=args.store,
                                min_cosine=args.min_cosine)
        runtimes = "onnx-int8"
    else:
        from ..backbones import create_backbone
        from ..datasets import scan_source
        from ..runtimes.calibrate import calibrate

        images = [r.path for r in scan_source(args.images)]
        backbone = create_backbone(args.backbone, weights=args.weights)
        report = calibrate(backbone, images, tap=args.tap or "pre_logits", decode=args.decode,
                           store=args.store, min_cosine=args.min_cosine)
        runtimes = "onnx-int8 and openvino-int8"
    if args.json:
        output.print_json(report)
    elif "cosine_mean" in report:
        unit = f"{modality}s"
        chosen = f"{report['form']}, chosen on" if "form" in report else "calibrated on"
        print(f"int8 {report['provenance']['backbone']} ({report['provenance']['tap']}): {chosen} "
              f"{report['calibrated_on']} {unit}, measured on {report['held_out']} held out")
        print(f"  embedding cosine to fp32   mean {report['cosine_mean']:.4f}  "
              f"min {report['cosine_min']:.4f}  (threshold {report['min_cosine']})")
        if report.get("imagenet_top1_agreement") is not None:
            print(f"  ImageNet top-1 agreement   {report['imagenet_top1_agreement']:.4f}")
        if report["probe"]:
            p = report["probe"]
            print(f"  linear probe ({p['rows']} store rows)  fp32 {p['fp32_accuracy']:.4f}  "
                  f"int8 {p['int8_accuracy']:.4f}  ({p['delta_pt']:+.2f} pt)")
    if not report["passed"]:
        why = report.get("refusal") or (f"cosine mean {report['cosine_mean']:.4f} to fp32 is "
                                         f"below {report['min_cosine']}")
        err(f"int8 refused: {why}; {runtimes} cannot run this {modality} encoder until a "
            f"calibration passes")
        return EXIT_ERROR
    print(f"{runtimes}: ready for this {modality} encoder and tap (--runtime)", file=sys.stderr)
    return EXIT_OK


def model_options(p: argparse.ArgumentParser, texts: bool = False) -> None:
    if texts:
        p.add_argument("images", nargs="*", metavar="IMAGE", help="image files (PNG, JPEG, WebP, ...)")
        text_options(p, "embed")
        p.add_argument("--backbone", "-b", help=f"encoder name (see 'embedsvc models'; default "
                                                f"{DEFAULT_BACKBONE} for images, "
                                                f"{DEFAULT_TEXT_ENCODER} for text)")
    else:
        p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, WebP, ...)")
        p.add_argument("--backbone", "-b", default=DEFAULT_BACKBONE,
                       help="backbone name (see 'embedsvc models')")
    p.add_argument("--weights", metavar="PATH",
                   help="weight file for the backbone instead of its packaged weights")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass")
    p.add_argument("--device", type=device, default="auto",
                   help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--skip-bad", action="store_true",
                   help="report unreadable images and go on with the others")
    decode_option(p)
    runtime_option(p)


def register(sub) -> None:
    p = command(sub, "models", "list backbones and whether their weights are present",
                ["embedsvc models", "embedsvc models --json"], cmd_models)
    p.add_argument("--json", action="store_true", help="print JSON (numbers as numbers)")

    p = command(sub, "embed", "embed images or texts into L2-normalised vectors",
                ["embedsvc embed cat.jpg dog.jpg", "embedsvc embed *.jpg --out vectors.npy",
                 "embedsvc embed cat.jpg --tap middle --json",
                 "embedsvc embed --text 'a fine film' --text 'a dull one'",
                 "embedsvc embed --texts reviews.txt --out reviews.npy",
                 "embedsvc embed --text 'a fine film' --projection stores/movies-128 --json"], cmd_embed)
    model_options(p, texts=True)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--out", "-o", metavar="FILE.npy",
                     help="write the vectors (ids and provenance in FILE.npy.json)")
    out.add_argument("--json", action="store_true", help="print the vectors as JSON")
    p.add_argument("--tap", help="which features: pre_logits (images) or embedding (text), the "
                                 "default; early / middle / late stages, or blockN for text")
    p.add_argument("--no-normalize", action="store_true", help="keep raw (un-normalised) vectors")
    p.add_argument("--projection", metavar="STORE",
                   help="project the vectors as STORE's were (a store made by 'embedsvc "
                        "project'; its encoder is the default)")
    p.add_argument("--encoding", choices=ENCODINGS, default="float",
                   help="with --json: int8 codes (compare by cosine) or binary sign bits packed "
                        "8 to a byte (compare by Hamming), as the server's encoding_format")
    p.add_argument("--progress", action="store_true", help="show a progress bar")

    p = command(sub, "calibrate", "int8 runtimes: quantise an encoder on your images or texts, "
                                  "with a fidelity report and gate",
                ["embedsvc calibrate effnet-lite0 --images photos/",
                 "embedsvc calibrate effnet-lite0 --images photos/ --store my-store --json",
                 "embedsvc calibrate minilm-l6 --texts reviews.txt --store review-store"],
                cmd_calibrate)
    p.add_argument("backbone", help="encoder name (see 'embedsvc models')")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--images",
                       help="folder or manifest of images like the ones you will embed (64-256 is "
                            "plenty)")
    given.add_argument("--texts", metavar="FILE",
                       help="a UTF-8 file of texts like the ones you will embed, one per line "
                            "(200-2,000 is plenty)")
    p.add_argument("--weights", metavar="PATH", help="weight file instead of the packaged weights")
    p.add_argument("--tap", help="which features (as for embed; default pre_logits for images, "
                                 "embedding for text)")
    p.add_argument("--store", help="a labelled store of this encoder: adds a linear-probe check")
    p.add_argument("--min-cosine", type=in_range(0.0, 1.0, lo_open=True), default=0.97,
                   help="refuse the int8 model below this embedding cosine to fp32 (mean)")
    decode_option(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = command(sub, "predict", "ImageNet labels from the backbone's own classifier",
                ["embedsvc predict cat.jpg", "embedsvc predict *.jpg --top 3 --json"], cmd_predict)
    model_options(p)
    p.add_argument("--top", type=positive_int, default=5, help="labels per image")
    p.add_argument("--json", action="store_true", help="print JSON")
