"""What a fine-tuning job is asked to do: one frozen dataclass, saved in every checkpoint so a
resumed run continues with exactly the settings it started with."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from classifiers.adapt.choices import check_da, parse_presets
from embedsvc.errors import InvalidInputError

STRATEGIES = ("linear", "partial", "full", "gradual", "lp-ft", "auto")
# default weight of each domain loss against the classification loss (measured in
# bench/domain_shift.py; Deep CORAL's /4d^2 makes its raw value small)
DA_WEIGHTS = {"dann": 1.0, "coral": 30.0, "mmd": 1.0}


@dataclass(frozen=True)
class FinetuneConfig:
    backbone: str | None = None  # None: the default encoder of what the data holds
    strategy: str = "partial"
    epochs: int = 10
    batch_size: int = 32
    image_size: int | None = None  # images: None = the backbone's own input size
    max_tokens: int | None = None  # texts: cut at this many tokens (None: the encoder's own)
    # optimisation: AdamW, linear warm-up then cosine decay, per step
    lr: float = 1e-3  # the new classifier's peak rate
    # the last backbone stage group gets lr * backbone_lr_ratio: pretrained weights need smaller
    # steps than a freshly initialised layer (None: the modality's, finetune/inputs.py: 0.7 for
    # an image backbone's last stage, 0.05 for a transformer's top block)
    backbone_lr_ratio: float | None = None
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    # discriminative learning rates: each stage group further down gets this factor once more
    # (1.0 = one rate for the whole backbone), keeping the early, general layers near pretrained
    layer_decay: float = 0.7
    # strategy knobs
    partial_stages: int = 2  # `partial`: how many stage groups from the top train
    unfreeze_every: int = 1  # `gradual`: epochs between unfreezing the next group down
    probe_epochs: int = 2  # `lp-ft`: epochs of linear probe before everything trains
    update_frozen_bn: bool = False  # frozen stages keep their BatchNorm statistics
    augment: bool = True  # random crop (padded) and horizontal flip while training
    dropout: float = 0.2  # before the classifier
    # validation and stopping
    val_split: float = 0.1
    patience: int = 5  # epochs without a better validation score before stopping; 0 = never
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None  # None: bf16/fp16 autocast on CUDA, float32 on CPU
    max_images_in_memory: int = 200_000  # decoded once and kept (uint8); beyond that, refuse
    # towards a target domain (adapt/augment.py, adapt/losses.py, finetune/target.py)
    presets: str = ""  # augmentation presets, comma-separated: "lighting,camera"
    da: str | None = None  # a domain loss on unlabelled target inputs: dann, coral or mmd
    da_weight: float | None = None  # None: DA_WEIGHTS[da]
    entropy_weight: float = 0.0  # entropy minimisation on unlabelled target predictions
    target_ratio: float = 0.5  # fraction of each step's batch taken from the target inputs

    def __post_init__(self) -> None:
        parse_presets(self.presets)
        if self.da is not None:
            check_da(self.da)
        if self.strategy not in STRATEGIES:
            raise InvalidInputError(f"unknown strategy {self.strategy!r}; available: {', '.join(STRATEGIES)}")
        checks = {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
                  "lr": self.lr > 0, "weight_decay": self.weight_decay >= 0,
                  "backbone_lr_ratio": self.backbone_lr_ratio is None
                  or 0 < self.backbone_lr_ratio <= 10,
                  "warmup_epochs": self.warmup_epochs >= 0,
                  "label_smoothing": 0 <= self.label_smoothing < 1,
                  "layer_decay": 0 < self.layer_decay <= 1, "partial_stages": self.partial_stages >= 1,
                  "unfreeze_every": self.unfreeze_every >= 1, "probe_epochs": self.probe_epochs >= 0,
                  "dropout": 0 <= self.dropout < 1, "val_split": 0 <= self.val_split < 1,
                  "patience": self.patience >= 0,
                  "image_size": self.image_size is None or self.image_size >= 32,
                  "max_tokens": self.max_tokens is None or self.max_tokens >= 4,
                  "da_weight": self.da_weight is None or self.da_weight >= 0,
                  "entropy_weight": self.entropy_weight >= 0,
                  "target_ratio": 0 < self.target_ratio < 1}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise InvalidInputError(f"bad fine-tuning setting {bad[0]}={getattr(self, bad[0])!r}")

    @property
    def domain_weight(self) -> float:
        return self.da_weight if self.da_weight is not None else DA_WEIGHTS.get(self.da or "", 0.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FinetuneConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes: Any) -> "FinetuneConfig":
        return dataclasses.replace(self, **changes)
