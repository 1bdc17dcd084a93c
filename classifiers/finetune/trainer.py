"""A fine-tuning job: strategy → per-epoch freeze state and learning rates → AdamW steps with
warm-up + cosine, label smoothing, early stopping on a validation split, a checkpoint per epoch,
and at the end a self-describing run directory that loads as ``finetuned:RUN_DIR``.

Run directory while training and after:

    RUN_DIR/run_config.json           the settings (a resumed run reads these, not new flags)
    RUN_DIR/checkpoints/epoch_NNN.pt  model, optimizer, scaler, history, early-stopping state
    RUN_DIR/checkpoints/best_NNN.safetensors   weights of the best validation epoch so far
    RUN_DIR/metrics.csv, curves.png   one row / point per epoch
    RUN_DIR/model.safetensors, head/, finetuned.json   written when the run ends (json last)

Exact resume: everything random in epoch E (batch order, augmentation, dropout) is seeded from
(seed, E); the freeze state and learning rate are recomputed from (epoch, step); the optimizer
state and the best-so-far weights come from the checkpoint. So a run killed after epoch E and
resumed ends with the weights an uninterrupted run would have (bitwise on CPU).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from classifiers.adapt.choices import parse_presets
from classifiers.adapt.losses import DomainLoss
from classifiers.adapt.mixstyle import MixStyle, attach_mixstyle
from embedsvc.atomic import atomic_write_bytes
from embedsvc.runs import HEAD_DIR, canonical_name, save_weights, write_run
from embedsvc.provenance import check_weights, read_artifact, write_artifact
from embedsvc.wording import count
from embedsvc.errors import InvalidInputError
from embedsvc.runtime import plan_device

from .config import FinetuneConfig
from .data import VAL_SPLITS, epoch_batches, labelled_records, steps_per_epoch, train_val_split
from .freezing import stage_report, train_mode
from .inputs import inputs_for
from .model import FinetuneNet, no_weight_decay, predict_outputs, set_trainable_depth
from .report import curves_png, write_metrics_csv
from .schedule import lr_factor, lr_multiplier, trainable_depth
from .target import (adapted_loss, bound_terms, load_target, selection_sample, target_batches,
                     target_count)

CONFIG_JSON = "run_config.json"
CHECKPOINTS = "checkpoints"


@dataclass
class RunResult:
    run_dir: Path
    backbone_name: str  # finetuned:/abs/RUN_DIR
    strategy: str
    best_epoch: int
    best_val_acc: float | None
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


# -- pieces ---------------------------------------------------------------------------------------
def make_optimizer(groups, cfg: FinetuneConfig) -> torch.optim.AdamW:
    """Two AdamW groups per depth (decayed weights, undecayed biases/norms), each remembering
    its depth so the schedule can scale its rate."""
    param_groups = []
    for depth, (_name, ps) in enumerate(groups):
        for decay in (True, False):
            sel = [p for p in ps if no_weight_decay(p) != decay]
            if sel:
                param_groups.append({"params": sel, "depth": depth,
                                     "weight_decay": cfg.weight_decay if decay else 0.0,
                                     "lr": cfg.lr * lr_multiplier(cfg, depth)})
    return torch.optim.AdamW(param_groups, lr=cfg.lr)


def set_lrs(opt: torch.optim.Optimizer, cfg: FinetuneConfig, factor: float) -> float:
    for g in opt.param_groups:
        g["lr"] = cfg.lr * lr_multiplier(cfg, g["depth"]) * factor
    return cfg.lr * factor


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _resolved(path: str) -> str:
    return str(Path(path).resolve()) if Path(path).exists() else path


def _latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / CHECKPOINTS).glob("epoch_*.pt"))
    return found[-1] if found else None


# -- the job --------------------------------------------------------------------------------------
class FinetuneJob:
    def __init__(self, data: str, run_dir: str | os.PathLike, config: FinetuneConfig | None = None,
                 resume: bool = False, progress: bool = True, target: str | None = None,
                 target_labelled: bool = False):
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.resume = resume
        if resume:
            path = self.run_dir / CONFIG_JSON
            if not path.is_file():
                raise InvalidInputError(f"nothing to resume in {str(self.run_dir)!r} ({CONFIG_JSON} missing)")
            saved = read_artifact(path, "fine-tuning run's settings")
            self.config = FinetuneConfig.from_dict(saved["config"])
            self.data_source = saved["data"]
            self.saved_strategy = saved["strategy"]
            self.saved_parent = saved["parent"]
            self.target = saved.get("target") or {}
        else:
            if (self.run_dir / CONFIG_JSON).exists():
                raise InvalidInputError(f"{str(self.run_dir)!r} already holds a run; pass --resume to "
                                        f"continue it or choose another --out")
            self.config = config or FinetuneConfig()
            self.data_source = _resolved(data)
            self.target = {"path": _resolved(target), "labelled": target_labelled} if target else {}
        if self.config.da and not self.target:
            raise InvalidInputError(f"--da {self.config.da} needs target data (--target-data DIR)")

    def _say(self, msg: str) -> None:
        if self.progress:
            print(msg, flush=True)

    def _load_data(self, inputs, records):
        cfg = self.config
        train_recs = [r for r in records if r.split in (None, "train")]
        val_recs = [r for r in records if r.split in VAL_SPLITS]
        if not train_recs:
            raise InvalidInputError(f"{self.data_source}: no training images (split train or none)")
        classes = sorted({r.label for r in train_recs})
        if len(classes) < 2:
            raise InvalidInputError(f"{self.data_source}: fine-tuning needs at least 2 classes, found {classes}")
        unknown = sorted({r.label for r in val_recs} - set(classes))
        if unknown:
            raise InvalidInputError(f"validation labels {unknown} do not occur in the training split")
        train = inputs.load(train_recs, classes, self.progress, cfg.max_images_in_memory)
        if val_recs:
            return train, inputs.load(val_recs, classes, self.progress,
                                      cfg.max_images_in_memory - len(train_recs))
        tr, va = train_val_split(train.labels.numpy(), cfg.val_split, cfg.seed)
        return train.subset(tr), (train.subset(va) if len(va) else None)

    def _resolve_strategy(self, n_train: int, n_classes: int, modality: str) -> str:
        if self.resume:
            return self.saved_strategy
        if self.config.strategy != "auto":
            return self.config.strategy
        from .advisor import recommend

        rec = recommend(n_train, n_classes, modality=modality)
        self._say(f"strategy auto → {rec.strategy}: {rec.reasons[0]}")
        return rec.strategy

    def run(self) -> RunResult:
        from embedsvc.encoders import check_source, default_encoder, modality_of_records

        records = labelled_records(self.data_source)
        if self.config.backbone is None:  # the default encoder of what the data holds
            self.config = self.config.replace(backbone=default_encoder(modality_of_records(records)))
        check_source(self.config.backbone, records, self.data_source)  # one of its modality
        torch.manual_seed(self.config.seed)
        inputs = inputs_for(self.config.backbone, self.config)
        if self.config.backbone_lr_ratio is None:
            self.config = self.config.replace(backbone_lr_ratio=inputs.backbone_lr_ratio)
        cfg, backbone = self.config, inputs.backbone
        parent = {"backbone": backbone.name, "weights_sha256": backbone.cfg.weights_sha256}
        if self.resume:  # a resumed run is the same run only on the same parent weights
            check_weights(backbone.cfg, self.saved_parent, f"the run {self.run_dir}")
        train, val = self._load_data(inputs, records)
        target = (load_target(self.target["path"], self.target["labelled"], inputs, train.classes,
                              self.progress, cfg.max_images_in_memory - len(train))
                  if self.target else None)
        strategy = self._resolve_strategy(len(train), len(train.classes), inputs.modality)
        if not self.resume:
            write_artifact(self.run_dir / CONFIG_JSON, {
                "config": cfg.to_dict(), "data": self.data_source, "strategy": strategy,
                "classes": train.classes, "parent": parent, "target": self.target})

        plan = plan_device(cfg.device, cfg.amp)
        torch.manual_seed(cfg.seed)  # the new classifier's initial weights
        net = FinetuneNet(backbone, len(train.classes), cfg.dropout)
        if cfg.da:
            net.adapter = DomainLoss(cfg.da, backbone.cfg.dim)
        if "style" in parse_presets(cfg.presets):
            net.mixstyle = MixStyle()  # a submodule, so net.train() / net.eval() switch it
            attach_mixstyle(backbone, net.mixstyle)
        groups = net.groups_from_top()
        inputs.place(net, plan)
        opt = make_optimizer(groups, cfg)
        scaler = torch.amp.GradScaler(plan.device.type, enabled=plan.amp_dtype == torch.float16)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        n_target = target_count(cfg.batch_size, cfg.target_ratio) if target is not None else 0
        spe = steps_per_epoch(len(train), cfg.batch_size - n_target)
        if spe == 0:
            raise InvalidInputError(f"{count(len(train), 'training ' + inputs.unit)} is too few "
                                    f"for one batch")

        state = {"epoch": -1, "history": [], "best_score": None, "best_epoch": -1, "best_file": None,
                 "bad_epochs": 0, "stopped_early": False}
        if self.resume:
            ckpt_path = _latest_checkpoint(self.run_dir)
            if ckpt_path is not None:
                ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
                net.load_state_dict(ckpt["model"])
                opt.load_state_dict(ckpt["optimizer"])
                scaler.load_state_dict(ckpt["scaler"])
                state = ckpt["state"]
                self._say(f"resuming {self.run_dir} after epoch {state['epoch'] + 1} of {cfg.epochs}")

        self._say(f"fine-tuning {backbone.name} ({strategy}) on {count(len(train), inputs.unit)}, "
                  f"{len(val) if val is not None else 0} for validation, {count(len(train.classes), 'class')}, "
                  f"{inputs.describe()}, {plan.describe()}" + (
                      f"; {len(target)} {'labelled' if target.labelled else 'unlabelled'} target {inputs.unit}s, "
                      f"{n_target} per step" + (f", {cfg.da} loss" if cfg.da else "") if target else ""))
        selection = selection_sample(target, cfg.seed) if target is not None and val is not None else None
        if state["epoch"] + 1 < cfg.epochs:  # what trains first, stage by stage
            set_trainable_depth(groups, trainable_depth(cfg, strategy, state["epoch"] + 1, len(groups) - 1))
            self._say(stage_report(backbone).table() + f"\nclassifier {net.classifier.weight.numel() + net.classifier.bias.numel():>12,} trainable")
        for epoch in range(state["epoch"] + 1, cfg.epochs):
            if state["stopped_early"]:
                break
            row = self._train_epoch(net, groups, opt, scaler, loss_fn, inputs, train, plan, strategy,
                                    epoch, spe, target, n_target)
            if val is not None:
                feats, logits = predict_outputs(net, inputs, val, plan)
                row["val_loss"] = float(nn.functional.cross_entropy(logits, val.labels))
                row["val_acc"] = float((logits.argmax(1) == val.labels).float().mean())
            if selection is not None:  # no target labels to select with: target.py's bound
                row.update(bound_terms(feats, 1 - row["val_acc"],
                                       predict_outputs(net, inputs, selection, plan)[0], cfg.seed))
            # accuracy first, then loss: on a small validation set accuracy often ties, and the
            # later epoch with the lower loss is the better pick
            score = ([-row["bound"], row["val_acc"]] if selection is not None else
                     [row["val_acc"], -row["val_loss"]] if val is not None else [-row["train_loss"]])
            if state["best_score"] is None or score > state["best_score"]:
                state["best_score"], state["best_epoch"], state["bad_epochs"] = score, epoch, 0
                best_file = f"best_{epoch + 1:03d}.safetensors"
                save_weights(net.state_dict(), self.run_dir / CHECKPOINTS / best_file)
                state["best_file"] = best_file
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            state["history"].append(row)
            if val is not None and cfg.patience and state["bad_epochs"] >= cfg.patience:
                state["stopped_early"] = True
            self._checkpoint(net, opt, scaler, state)
            write_metrics_csv(state["history"], self.run_dir / "metrics.csv")
            curves_png(state["history"], self.run_dir / "curves.png",
                       f"{backbone.name} · {strategy} · {count(len(train), inputs.unit)}")
            self._say(self._epoch_line(row, cfg.epochs))
            if state["stopped_early"]:
                self._say(f"early stop: no better validation accuracy for {count(cfg.patience, 'epoch')}")
        return self._finish(net, inputs, state, strategy, parent, train.classes)

    def _train_epoch(self, net, groups, opt, scaler, loss_fn, inputs, train, plan, strategy, epoch,
                     spe, target, n_target):
        cfg = self.config
        depth = trainable_depth(cfg, strategy, epoch, len(groups) - 1)
        set_trainable_depth(groups, depth)
        net.train()
        train_mode(net.backbone, cfg.update_frozen_bn)
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout / drop-path of this epoch
        total_loss, domain_total, correct, seen, t0 = 0.0, 0.0, 0, 0, time.perf_counter()
        lr = 0.0
        stream = (target_batches(target, n_target, cfg.seed, epoch, inputs, cfg.augment)
                  if target is not None else None)
        adapter = net.adapter
        bar = tqdm(total=len(train), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit=inputs.unit,
                   disable=not self.progress, leave=False)
        batches = epoch_batches(train, cfg.batch_size - n_target, cfg.seed, epoch, inputs,
                                cfg.augment, parse_presets(cfg.presets))
        for i, (x, y) in enumerate(batches):
            lr = set_lrs(opt, cfg, lr_factor(cfg, epoch * spe + i, spe))
            xt, yt = next(stream) if stream is not None else (None, None)
            # source and target in one forward pass
            x = inputs.to_input(x if xt is None else inputs.join(x, xt), plan)
            y = y.to(plan.device)
            with plan.autocast():
                if stream is None:
                    logits = net(x)
                    loss = loss_fn(logits.float(), y)
                else:
                    loss, logits, d = adapted_loss(
                        net, x, len(y), y, yt.to(plan.device), target.labelled,
                        loss_fn, adapter, cfg.domain_weight, cfg.entropy_weight,
                        (epoch * spe + i) / (cfg.epochs * spe))
                    domain_total += d * len(y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total_loss += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.update(len(y))
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        bar.close()
        seconds = time.perf_counter() - t0
        trainable = sum(p.numel() for _, ps in groups for p in ps if p.requires_grad)
        return {"epoch": epoch + 1, "trainable_groups": depth, "trainable_params": trainable, "lr": lr,
                "train_loss": total_loss / max(1, seen), "train_acc": correct / max(1, seen),
                "domain_loss": domain_total / max(1, seen) if adapter is not None else None,
                "val_loss": None, "val_acc": None, "seconds": seconds,
                "inputs_per_s": seen / max(seconds, 1e-9)}

    @staticmethod
    def _epoch_line(row: dict[str, Any], epochs: int) -> str:
        val = f" val loss {row['val_loss']:.3f} acc {row['val_acc']:.4f}" if row.get("val_acc") is not None else ""
        if row.get("domain_loss") is not None:
            val += f", domain loss {row['domain_loss']:.4f}"
        if row.get("bound") is not None:
            val += f", A-distance {row['a_distance']:.2f}, bound {row['bound']:.3f}"
        return (f"epoch {row['epoch']}/{epochs}: {row['trainable_groups']} groups training "
                f"({row['trainable_params']:,} params), train loss {row['train_loss']:.3f} "
                f"acc {row['train_acc']:.4f}{val}, {row['inputs_per_s']:.0f}/s")

    def _checkpoint(self, net, opt, scaler, state) -> None:
        ckpt_dir = self.run_dir / CHECKPOINTS
        path = ckpt_dir / f"epoch_{state['epoch'] + 1:03d}.pt"
        _atomic_torch_save({"model": net.state_dict(), "optimizer": opt.state_dict(),
                            "scaler": scaler.state_dict(), "state": state}, path)
        # older epochs and superseded bests go only once the new checkpoint is on disk
        for old in ckpt_dir.glob("epoch_*.pt"):
            if old != path:
                old.unlink(missing_ok=True)
        for old in ckpt_dir.glob("best_*.safetensors"):
            if old.name != state["best_file"]:
                old.unlink(missing_ok=True)

    def _finish(self, net, inputs, state, strategy, parent, classes) -> RunResult:
        from safetensors.torch import load_file

        from classifiers.heads import Head
        from classifiers.heads.kinds import LogRegHead

        if state["best_file"]:
            net.load_state_dict(load_file(str(self.run_dir / CHECKPOINTS / state["best_file"])))
        net.cpu()
        files, provenance = inputs.save(net, self.run_dir)
        name = canonical_name(self.run_dir)
        best = state["history"][state["best_epoch"]] if state["history"] else {}
        metrics = {"best_epoch": state["best_epoch"] + 1, "val_acc": best.get("val_acc"),
                   "val_loss": best.get("val_loss"), "train_acc": best.get("train_acc"),
                   "epochs_run": len(state["history"]), "stopped_early": state["stopped_early"]}
        head = Head(LogRegHead.from_linear(classes, net.classifier.weight.detach().numpy(),
                                           net.classifier.bias.detach().numpy()),
                    provenance, metrics={"accuracy": metrics["val_acc"]} if metrics["val_acc"] is not None else {},
                    training={"source": "finetune", "run_dir": str(self.run_dir.resolve()),
                              "strategy": strategy})
        head.save(self.run_dir / HEAD_DIR)
        meta = {"modality": inputs.modality, "parent": parent, **files,
                "classes": classes, "strategy": strategy, "config": self.config.to_dict(),
                "data": self.data_source, "metrics": metrics}
        write_run(self.run_dir, meta)  # commit
        self._say(f"best epoch {metrics['best_epoch']}"
                  + (f", validation accuracy {metrics['val_acc']:.4f}" if metrics["val_acc"] is not None else "")
                  + f"; use it as --backbone {name} (its classifier: --head {self.run_dir / HEAD_DIR})")
        return RunResult(self.run_dir, name, strategy, metrics["best_epoch"], metrics["val_acc"],
                         metrics["epochs_run"], state["stopped_early"], state["history"])


def finetune(data: str, run_dir: str | os.PathLike, config: FinetuneConfig | None = None,
             resume: bool = False, progress: bool = True, target: str | None = None,
             target_labelled: bool = False) -> RunResult:
    return FinetuneJob(data, run_dir, config, resume, progress, target, target_labelled).run()
