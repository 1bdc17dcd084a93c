"""Pretrained backbones: a registry of short names, each carrying its own preprocessing."""
from .base import PRE_LOGITS, STAGE_TAPS, Backbone
from .config import BackboneConfig, PreprocessConfig
from .registry import (
    DEFAULT_BACKBONE,
    BackboneEntry,
    create_backbone,
    list_backbones,
    register_backbone,
    register_family,
    resolve,
)

__all__ = [
    "PRE_LOGITS", "STAGE_TAPS", "Backbone", "BackboneConfig", "PreprocessConfig",
    "DEFAULT_BACKBONE", "BackboneEntry", "create_backbone", "list_backbones",
    "register_backbone", "register_family", "resolve",
]
