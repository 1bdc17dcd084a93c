"""Backbone names → builders, timm-style.

Fixed names (``effnet-lite0``) are entries; open-ended families (``timm:<model>``) are prefixes
whose builder receives the full name. Nothing is built or loaded at import time; the built-in
names are registered by ``catalog``.
"""
from __future__ import annotations

import dataclasses
import re

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import NotFoundError

if TYPE_CHECKING:  # the registry itself never imports torch
    from .base import Backbone

Builder = Callable[[str, "str | None"], "Backbone"]


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
    generated_weights: bool = False  # made by the builder itself (seeded), no file involved
    family: bool = False  # a name pattern (timm:<model>), set by register_family

    def weights_status(self) -> str:
        if self.family:
            return "per model"
        if self.generated_weights:
            return "generated"
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
    _FAMILIES[prefix] = dataclasses.replace(entry, family=True)
    return _FAMILIES[prefix]


def list_backbones() -> list[BackboneEntry]:
    """Fixed names first, then one row per family."""
    return list(_ENTRIES.values()) + list(_FAMILIES.values())


_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@/-]{0,199}")


def resolve(name: str) -> BackboneEntry:
    if name in _ENTRIES:
        return _ENTRIES[name]
    prefix, sep, rest = name.partition(":")
    if sep and rest and prefix in _FAMILIES:
        # a family's model part is a model name, never echoed back when it looks like a path
        # (finetuned: takes a run's folder, which is a path by design)
        if prefix != "finetuned" and (".." in rest or not _MODEL_NAME.fullmatch(rest)):
            raise NotFoundError(f"{_FAMILIES[prefix].name} takes a model name (letters, digits "
                                f"and '_-.@/', at most 200), not a path or other text")
        return _FAMILIES[prefix]
    choices = list(_ENTRIES) + [e.name for e in _FAMILIES.values()]  # as listings spell them
    raise NotFoundError(f"unknown backbone {name!r}; available: {', '.join(choices)}")


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str | None = None) -> "Backbone":
    """Build a backbone by name, its weights read from local files only."""
    return resolve(name).builder(name, weights)
