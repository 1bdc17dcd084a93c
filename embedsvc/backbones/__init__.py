"""Pretrained backbones: a registry of short names, each carrying its own preprocessing.

Importing this package registers the built-in names (``catalog``) without importing torch; the
model classes load when a backbone is created.
"""
from ..lazy import lazy_exports
from . import catalog  # noqa: F401  (registers the built-in backbones)
from .registry import (DEFAULT_BACKBONE, BackboneEntry, create_backbone, list_backbones,
                       register_backbone, register_family, resolve)

__all__ = [
    "PRE_LOGITS", "STAGE_TAPS", "Backbone", "BackboneConfig", "PreprocessConfig",
    "DEFAULT_BACKBONE", "BackboneEntry", "create_backbone", "list_backbones",
    "register_backbone", "register_family", "resolve",
]
__getattr__, __dir__ = lazy_exports(__name__, {
    "PRE_LOGITS": "base", "STAGE_TAPS": "base", "Backbone": "base",
    "BackboneConfig": "config", "PreprocessConfig": "config"})
