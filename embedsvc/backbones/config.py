"""Frozen configs that travel with every backbone and every embedding it makes."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInputError

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
# How images are decoded before the geometry (preprocess.Transform explains both); here, free of
# torch, so that configs and flags are checked before any model is imported.
DECODE_MODES = ("fast", "exact")
DEFAULT_DECODE = "fast"


def check_decode(decode: str) -> str:
    if decode not in DECODE_MODES:
        raise InvalidInputError(f"unknown decode mode {decode!r}; choose one of: "
                                f"{', '.join(DECODE_MODES)}")
    return decode


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything needed to turn a decoded RGB image into the model's input tensor.

    Follows timm's data config: resize the shorter side to ``size / crop_pct``, centre-crop
    ``size``, scale to [0, 1], then normalise with ``mean`` / ``std``.
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}"
            )
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")

    @property
    def image_size(self) -> int:
        return int(self.input_size[-1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_size": list(self.input_size),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessConfig":
        return cls(
            input_size=tuple(d["input_size"]),
            interpolation=d["interpolation"],
            crop_pct=float(d["crop_pct"]),
            crop_mode=d.get("crop_mode", "center"),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
        )


@dataclass(frozen=True)
class BackboneConfig:
    """What a loaded backbone is: its name, shape, preprocessing and the weights it came from."""

    name: str
    library: str  # "timm", "torchvision", "open_clip"
    architecture: str
    dim: int
    preprocess: PreprocessConfig
    weights_path: str
    weights_sha256: str
    num_params: int
    taps: tuple[str, ...] = ("pre_logits",)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def provenance(self) -> dict[str, Any]:
        """The fields that bind an embedding to the model that made it."""
        return {
            "backbone": self.name,
            "architecture": self.architecture,
            "library": self.library,
            "weights_sha256": self.weights_sha256,
            "preprocess": self.preprocess.to_dict(),
            "dim": self.dim,
        }

    def replace(self, **changes: Any) -> "BackboneConfig":
        return dataclasses.replace(self, **changes)
