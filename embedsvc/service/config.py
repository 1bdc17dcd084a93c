"""Server settings: one frozen dataclass, read from a TOML file and overridden by flags."""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backbones.registry import DEFAULT_BACKBONE
from ..errors import InvalidInputError
from ..images import DEFAULT_MAX_PIXELS
from .batcher import BatchingConfig


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    data_dir: str = "embedsvc-data"  # heads/ and indexes/ live here
    default_backbone: str = DEFAULT_BACKBONE
    device: str = "auto"
    max_loaded_backbones: int = 2  # LRU: others are loaded on demand and evicted
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    decode_workers: int = 8  # gRPC handler threads (decoding happens there, off the batcher)
    max_images_per_request: int = 64
    max_bytes_per_image: int = 16 << 20
    max_pixels_per_image: int = DEFAULT_MAX_PIXELS
    max_message_bytes: int = 64 << 20
    auth_token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_loaded_backbones", "decode_workers", "max_images_per_request",
                     "max_bytes_per_image", "max_pixels_per_image", "max_message_bytes"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidInputError("TLS needs both tls_cert and tls_key")

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> "ServeConfig":
        values: dict[str, Any] = {}
        if path:
            with open(path, "rb") as f:
                values = tomllib.load(f)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise InvalidInputError(f"unknown settings in {path}: {', '.join(sorted(unknown))}; "
                                    f"known: {', '.join(sorted(known))}")
        if "batching" in values:
            values["batching"] = BatchingConfig(**values["batching"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
