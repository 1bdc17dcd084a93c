"""``finetune``, ``interpolate``, ``advise``: adapting a backbone when a head is not enough."""
from __future__ import annotations

import argparse
from pathlib import Path

from classifiers.adapt.choices import DA_METHODS, PRESETS, TEXT_PRESETS
from classifiers.finetune.config import STRATEGIES, FinetuneConfig

from ..wording import count
from .common import (EXIT_OK, UsageError, command, device, in_range, non_negative_int,
                     positive_float, positive_int, settings_from_flags, warn)


def register_run(run_dir: str | Path, data_dir: str, name: str) -> None:
    """Install a fine-tuning run into a server's data dir: backbone finetuned:NAME, head NAME."""
    from ..service.datadir import DataDir

    DataDir(Path(data_dir)).register_run(run_dir, name)
    print(f"registered as backbone 'finetuned:{name}' and head {name!r} in {data_dir} "
          f"(a running server picks them up)")


def cmd_finetune(args: argparse.Namespace) -> int:
    from classifiers.finetune import finetune

    args.on_interrupt = lambda: _resume_hint(args.resume or args.out)
    if args.resume:
        if args.data or args.out or args.target_data or args.target_labelled:
            raise UsageError("--resume RUN_DIR continues a run with its own data and settings; "
                             "give no DATA, --out or target with it")
        result = finetune("", args.resume, resume=True, progress=not args.quiet)
    else:
        if not args.data or not args.out:
            raise UsageError("finetune needs DATA and --out RUN_DIR (or --resume RUN_DIR)")
        if args.target_data and args.target_labelled:
            raise UsageError("give one target: --target-data DIR (unlabelled) or --target-labelled DIR")
        if args.da and not (args.target_data or args.target_labelled):
            raise UsageError(f"--da {args.da} needs target data: --target-data DIR")
        with settings_from_flags():
            config = FinetuneConfig(
                backbone=args.backbone, strategy=args.strategy, epochs=args.epochs,
                batch_size=args.batch_size, image_size=args.image_size,
                max_tokens=args.max_tokens, lr=args.lr,
                backbone_lr_ratio=args.backbone_lr_ratio, layer_decay=args.layer_decay,
                partial_stages=args.partial_stages, unfreeze_every=args.unfreeze_every,
                probe_epochs=args.probe_epochs, label_smoothing=args.label_smoothing,
                val_split=args.val_split, patience=args.patience, augment=not args.no_augment,
                update_frozen_bn=args.update_frozen_bn, seed=args.seed, device=args.device,
                presets=args.augment or "", da=args.da, da_weight=args.da_weight,
                entropy_weight=args.entropy_weight, target_ratio=args.target_ratio)
        result = finetune(args.data, args.out, config, progress=not args.quiet,
                          target=args.target_data or args.target_labelled,
                          target_labelled=bool(args.target_labelled))
    print(f"run {result.run_dir}: {result.strategy}, {count(result.epochs_run, 'epoch')}"
          + (" (stopped early)" if result.stopped_early else "")
          + (f", best validation accuracy {result.best_val_acc:.4f} at epoch {result.best_epoch}"
             if result.best_val_acc is not None else ""))
    print(f"  backbone name : {result.backbone_name}")
    print(f"  metrics       : {result.run_dir / 'metrics.csv'}, {result.run_dir / 'curves.png'}")
    if args.register:
        register_run(result.run_dir, args.register, result.run_dir.resolve().name)
    return EXIT_OK


def _resume_hint(run_dir: str | None) -> str:
    if run_dir and any((Path(run_dir) / "checkpoints").glob("epoch_*.pt")):
        return (f"the last finished epoch is checkpointed in {run_dir}; "
                f"'embedsvc finetune --resume {run_dir}' continues from it")
    return "no epoch had finished, so nothing is kept; rerun the same command to start again"


def cmd_interpolate(args: argparse.Namespace) -> int:
    from classifiers.finetune import interpolate_run

    out = interpolate_run(args.run_dir, args.alpha, args.out)
    print(f"wrote {out}: {1 - args.alpha:g} x pretrained + {args.alpha:g} x fine-tuned; "
          f"use it as --backbone finetuned:{out.resolve()}")
    if args.register:
        register_run(out, args.register, out.resolve().name)
    return EXIT_OK


def cmd_advise(args: argparse.Namespace) -> int:
    from classifiers.finetune import advise
    from classifiers.finetune.advisor import head_command

    from ..encoders import default_encoder

    rec, adaptation = advise(args.data, args.target, args.backbone, progress=not args.quiet,
                             difference=args.difference)
    counts = rec.per_class
    backbone = args.backbone or default_encoder(rec.modality)
    print(f"{count(sum(counts.values()), 'labelled ' + rec.unit)} in {count(len(counts), 'class')} "
          f"({min(counts.values())}..{max(counts.values())} per class)"
          + (f"; {len(rec.unreadable)} could not be read and are not counted"
             if rec.unreadable else ""))
    for path, reason in rec.unreadable[:10]:
        warn(f"skipped {path!r}: {reason}")
    if rec.gap is not None:
        g = rec.gap
        print(f"domain gap to {args.target}: {g.verdict}, proxy A-distance {g.proxy_a_distance:.2f}, "
              f"MMD² {g.mmd2:.4f} (p={g.mmd_p_value:.3f}), on {g.n_a} + {g.n_b} {rec.unit}s "
              f"(embedsvc gap draws it)")
    print(f"recommended strategy: {rec.strategy}")
    for reason in rec.reasons:
        print(f"  - {reason}")
    print("run it:")
    print(f"  {rec.command(args.data, backbone)}")
    if rec.strategy == "linear":
        print("  or, cheaper, a head on stored embeddings:")
        print(f"  {head_command(args.data, backbone)}")
    if adaptation is not None:
        print(f"recommended adaptation: {adaptation.method}"
              + (f" ({adaptation.da} loss)" if adaptation.da else "")
              + (f", {adaptation.preset} augmentation" if adaptation.preset else ""))
        for reason in adaptation.reasons:
            print(f"  - {reason}")
        commands = adaptation.commands(args.data, args.target or "TARGET_DIR", rec, backbone)
        if commands:
            print("run it" + (", in this order:" if len(commands) > 1 else ":"))
            for c in commands:
                print(f"  {c}")
    return EXIT_OK


def presets(text: str) -> str:
    """--augment's value, checked here so a typo is a usage error listing the presets."""
    from classifiers.adapt.choices import parse_presets

    try:
        return ",".join(parse_presets(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub) -> None:
    d = FinetuneConfig()
    p = command(sub, "finetune", "fine-tune an encoder on labelled images or texts (a resumable run)",
                ["embedsvc finetune data/fmnist --out runs/fmnist --strategy partial --epochs 5",
                 "embedsvc finetune data/movies --out runs/movies --strategy full --max-tokens 64",
                 "embedsvc finetune --resume runs/fmnist",
                 "embedsvc finetune data/fmnist --out runs/fm --strategy lp-ft --register /srv/embedsvc",
                 "embedsvc finetune data/fmnist --out runs/dark --augment lighting",
                 "embedsvc finetune data/fmnist --out runs/cam --target-data data/phone --da dann",
                 "embedsvc finetune data/fmnist --out runs/few --target-labelled data/phone-10"],
                cmd_finetune)
    p.add_argument("data", nargs="?", help="class folders or a manifest with labels (images or "
                                           "texts)")
    p.add_argument("--out", "-o", help="run directory to write")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly")
    p.add_argument("--backbone", "-b", default=None,
                   help="encoder to start from (default: the default encoder of what DATA holds, "
                        "see 'embedsvc models')")
    p.add_argument("--strategy", choices=STRATEGIES, default=d.strategy,
                   help="which layers train (see 'embedsvc advise')")
    p.add_argument("--epochs", type=positive_int, default=d.epochs, help="passes over the data")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="inputs per step")
    p.add_argument("--image-size", type=positive_int,
                   help="images: train at this input size in pixels, at least 32 (default: the "
                        "backbone's)")
    p.add_argument("--max-tokens", type=positive_int,
                   help="texts: cut at this many tokens, at least 4 (default: the encoder's)")
    p.add_argument("--lr", type=positive_float, default=d.lr, help="the classifier's peak learning rate")
    p.add_argument("--backbone-lr-ratio", type=in_range(0, 10, lo_open=True),
                   help="the last backbone stage's rate relative to --lr (default 0.7 for "
                        "images, 0.05 for a transformer's top block)")
    p.add_argument("--layer-decay", type=in_range(0, 1, lo_open=True), default=d.layer_decay,
                   help="learning-rate factor per stage group towards the input (1 = one rate)")
    p.add_argument("--partial-stages", type=positive_int, default=d.partial_stages,
                   help="partial: how many of the last stage groups train")
    p.add_argument("--unfreeze-every", type=positive_int, default=d.unfreeze_every,
                   help="gradual: epochs between unfreezing the next stage group")
    p.add_argument("--probe-epochs", type=non_negative_int, default=d.probe_epochs,
                   help="lp-ft: linear-probe epochs before the full fine-tune")
    p.add_argument("--label-smoothing", type=in_range(0, 1, hi_open=True), default=d.label_smoothing,
                   help="cross-entropy label smoothing, in [0, 1)")
    p.add_argument("--val-split", type=in_range(0, 1, hi_open=True), default=d.val_split,
                   help="fraction held out for validation and early stopping, in [0, 1)")
    p.add_argument("--patience", type=non_negative_int, default=d.patience,
                   help="early stopping after this many epochs without improvement; 0 = off")
    p.add_argument("--no-augment", action="store_true", help="no random crops and flips")
    p.add_argument("--augment", metavar="PRESET[,PRESET]", type=presets,
                   help=f"augment the source to look like the target: images "
                        f"{', '.join(PRESETS)}; texts {', '.join(TEXT_PRESETS)} "
                        f"(embedsvc augment-preview shows the image ones)")
    p.add_argument("--target-data", metavar="DIR",
                   help="unlabelled target-domain images or texts, for --da and --entropy-weight")
    p.add_argument("--target-labelled", metavar="DIR",
                   help="a few labelled target inputs (class folders or a manifest), mixed into "
                        "every batch")
    p.add_argument("--target-ratio", type=in_range(0, 1, lo_open=True, hi_open=True),
                   default=d.target_ratio, help="fraction of each batch from the target, in (0, 1)")
    p.add_argument("--da", choices=DA_METHODS,
                   help="domain-invariant loss on the features: dann (adversarial), coral, mmd")
    p.add_argument("--da-weight", type=in_range(0, 1000), help="weight of the --da loss (default per method)")
    p.add_argument("--entropy-weight", type=in_range(0, 10), default=d.entropy_weight,
                   help="entropy minimisation on unlabelled target predictions; 0 = off")
    p.add_argument("--update-frozen-bn", action="store_true",
                   help="let frozen stages' BatchNorm statistics follow the new data")
    p.add_argument("--seed", type=non_negative_int, default=d.seed, help="seed for everything random")
    p.add_argument("--device", type=device, default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--register", metavar="DATA_DIR",
                   help="also install the run (backbone finetuned:NAME and its head) into a "
                        "server's data dir")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = command(sub, "interpolate", "WiSE-FT: mix a run's weights with the pretrained ones",
                ["embedsvc interpolate runs/fmnist --alpha 0.5",
                 "embedsvc interpolate runs/fmnist --alpha 0.7 --out runs/fmnist-wise --register /srv/embedsvc"],
                cmd_interpolate)
    p.add_argument("run_dir", help="a finished fine-tuning run")
    p.add_argument("--alpha", type=in_range(0, 1), required=True,
                   help="0 = pretrained, 1 = fine-tuned, in [0, 1]")
    p.add_argument("--out", "-o", help="new run directory (default RUN_DIR-wiseALPHA)")
    p.add_argument("--register", metavar="DATA_DIR", help="also install it into a server's data dir")

    p = command(sub, "advise", "which fine-tuning strategy for this data (and target domain)",
                ["embedsvc advise data/fmnist", "embedsvc advise data/photos --target data/sketches",
                 "embedsvc advise data/movies/manifest.jsonl --target data/tweets/manifest.jsonl"],
                cmd_advise)
    p.add_argument("data", help="labelled images or texts: class folders or a manifest")
    p.add_argument("--target", help="target-domain images or texts (labelled or not): measures the domain gap "
                                    "on embeddings and recommends how to adapt")
    p.add_argument("--difference", choices=PRESETS + TEXT_PRESETS,
                   help="what differs in the target, if you know: for images lighting, camera, "
                        "background or style; for texts dropout, swap, mask or typos (picks the "
                        "matching augmentation preset)")
    p.add_argument("--backbone", "-b", default=None,
                   help="encoder the strategy is for (default: the default encoder of the data's "
                        "modality, see 'embedsvc models')")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
