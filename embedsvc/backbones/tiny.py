"""``tiny-random``: timm's 0.36 M-parameter ``test_efficientnet`` with seeded random weights.

For tests and smoke checks of everything downstream of a backbone (stores, indexes, heads, the
service): it builds in milliseconds, needs no weight file, and gives the same vectors on every
machine with the same torch. Its vectors carry no meaning. The weights hash in its provenance is
that of the generated weights, so vectors from another torch version (other random numbers)
are refused like those of any other weights.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .timm_backbone import TimmBackbone, timm_config, weights_mismatch
from .weights import require_file

ARCH = "test_efficientnet"
SEED = 0
GENERATED = f"(generated: {ARCH}, seed {SEED})"


def build_tiny(name: str, weights: str | None = None) -> TimmBackbone:
    import timm
    from safetensors.torch import load_file, save

    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's RNG
        torch.manual_seed(SEED)
        model = timm.create_model(ARCH, pretrained=False, num_classes=0)  # no ImageNet classes
    if weights:
        path = require_file(weights, name)
        try:
            model.load_state_dict(load_file(str(path)), strict=True)
        except Exception as exc:
            raise weights_mismatch(name, Path(path), exc) from None
        cfg = timm_config(model, name, path)
    else:
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        cfg = timm_config(model, name, GENERATED, hashlib.sha256(save(state)).hexdigest())
    model.eval()
    return TimmBackbone(model, cfg)
