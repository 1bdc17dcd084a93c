"""``gap``: how far apart two domains are, on embeddings; ``augment-preview``: what the
augmentation presets do to an image (classifiers/adapt)."""
from __future__ import annotations

import argparse
from . import output
from .common import EXIT_OK, command, non_negative_int, positive_int


def cmd_gap(args: argparse.Namespace) -> int:
    from classifiers.adapt import measure_gap
    from classifiers.adapt.picture import gap_png
    from classifiers.adapt.sides import load_sides

    a, b = load_sides(args.a, args.b, args.backbone, args.max_per_side, args.seed,
                      progress=not args.quiet)
    gap = measure_gap(a.vectors, b.vectors, a.labels, b.labels, seed=args.seed)
    png = gap_png(a, b, gap, args.png, (args.a, args.b))
    if args.json:
        output.print_json({**gap.to_dict(), "png": str(png)})
        return EXIT_OK
    print(f"{args.a} ({gap.n_a} vectors) vs {args.b} ({gap.n_b} vectors): {gap.verdict}")
    print(f"  why: {gap.decided_by}")
    print(f"  proxy A-distance {gap.proxy_a_distance:7.3f}   (0 same .. 2 separable; a linear "
          f"classifier tells them apart {100 * (1 - gap.domain_error):.0f}% of the time, "
          f"p = {gap.domain_p_value:.2g})")
    print(f"  MMD²             {gap.mmd2:7.4f}   (permutation p = {gap.mmd_p_value:.3f})")
    print(f"  Fréchet          {gap.frechet:7.3f}")
    print(f"  CORAL            {gap.coral:9.2e}")
    if gap.per_class:
        print("  per class: proxy A-distance, MMD², verdict")
        for c, g in sorted(gap.per_class.items(), key=lambda kv: -kv[1].mmd2):
            print(f"    {c:<20} {g.proxy_a_distance:6.3f} {g.mmd2:8.4f}  {g.verdict}")
    print(f"wrote {png}")
    return EXIT_OK


def cmd_augment_preview(args: argparse.Namespace) -> int:
    from PIL import Image

    from classifiers.adapt.augment import preview_grid
    from classifiers.adapt.choices import parse_presets

    from ..backbones.config import PreprocessConfig
    from ..extract import prepare_image
    from ..preprocess import build_transform

    presets = parse_presets(args.augment, "image")
    pre = PreprocessConfig(input_size=(3, args.size, args.size), crop_pct=1.0)
    image, _ = prepare_image(args.image, build_transform(pre))
    grid = preview_grid(image, presets, args.n, args.seed)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(args.out)
    print(f"wrote {args.out}: {args.image} (top left) and {args.n} samples of {', '.join(presets)} "
          f"at {args.size} px")
    return EXIT_OK


def register(sub) -> None:
    from classifiers.adapt.gap import ALPHA, GAP_LARGE

    from ..backbones.registry import DEFAULT_BACKBONE

    p = command(sub, "gap", "how far apart two domains are: proxy A-distance, MMD, Fréchet, CORAL",
                ["embedsvc gap data/clean data/phone-photos",
                 "embedsvc gap stores/train stores/live --png drift.png --json"],
                cmd_gap,
                description=f"Measure the gap between two domains on embeddings. A and B are "
                            f"embedding stores, or folders or manifests of images or texts "
                            f"(embedded the way a store beside them was made, else with "
                            f"--backbone). "
                            f"Verdict: the sides differ when the MMD permutation test or the "
                            f"domain classifier is significant at {ALPHA / 2:g} (two tests "
                            f"sharing {ALPHA:g}): 'very different' at a proxy A-distance >= "
                            f"{GAP_LARGE}, else 'shifted'; neither test significant: "
                            f"'similar'. The server's drift check decides the same way. Per "
                            f"class where both sides are labelled. Writes a PNG of both "
                            f"domains in their principal plane.")
    p.add_argument("a", help="source domain: store, image folder or manifest")
    p.add_argument("b", help="target domain: store, image folder or manifest")
    p.add_argument("--backbone", "-b",
                   help=f"encoder for folders and manifests when neither side is a store "
                        f"(default: {DEFAULT_BACKBONE} for images, minilm-l6 for text)")
    p.add_argument("--max-per-side", type=positive_int, default=500,
                   help="random sample of each side")
    p.add_argument("--png", default="gap.png", help="picture to write")
    p.add_argument("--seed", type=int, default=0, help="sampling and permutation seed")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    from classifiers.adapt.choices import PRESETS

    from .finetune import presets

    p = command(sub, "augment-preview", "a grid of an image through augmentation presets",
                ["embedsvc augment-preview photo.jpg --augment lighting",
                 "embedsvc augment-preview photo.jpg --augment camera,background --n 15 --out cam.png"],
                cmd_augment_preview)
    p.add_argument("image", help="an image file")
    p.add_argument("--augment", type=presets, required=True, metavar="PRESET[,PRESET]",
                   help=f"presets, as for finetune --augment: {', '.join(PRESETS)}")
    p.add_argument("--n", type=positive_int, default=11, help="augmented samples")
    p.add_argument("--size", type=positive_int, default=224, help="side of each sample in pixels")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the samples")
    p.add_argument("--out", "-o", default="augment-preview.png", help="PNG to write")
