"""Server settings: one frozen dataclass, read from a TOML file and overridden by flags.

Every value is checked once, here, whether it came from the file or a flag: unknown keys (at any
level), wrong types and out-of-range numbers are one InvalidInputError naming the setting.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backbones.registry import DEFAULT_BACKBONE
from ..text.catalog import DEFAULT_TEXT_ENCODER, find as find_text, list_text_encoders
from ..collection.settings import CollectionSettings
from ..errors import InvalidInputError
from ..backbones.config import DEFAULT_DECODE, check_decode
from ..runtimes import DEFAULT_RUNTIME, TEXT_RUNTIMES, check_runtime

# Servers see bytes from anyone: a lower per-image limit than the library's (64 MP), so that the
# decode threads together stay within a known amount of memory (see ServeConfig.memory_bound).
SERVER_MAX_PIXELS = 40_000_000
REQUEST_COPIES = 4
# single: one server owns its data dir; writer: the same, and it publishes snapshots for reader
# replicas of the data dir, which serve them read-only (replicas.py)
ROLES = ("single", "writer", "reader")


# What each limit on a client's connections and requests does, for `serve --help` and the
# README; the values are ServeConfig's defaults. Beyond a limit the answer is at once.
LIMITS = {
    "max_connections": "open connections per listener (HTTP, gRPC). HTTP: a new one past it "
                       "closes the oldest connection with no request in progress, else it is "
                       "refused; gRPC: refused",
    "max_header_bytes": "HTTP request line + headers (431 beyond); gRPC metadata",
    "header_timeout_s": "HTTP: a request's headers must arrive within this of its first byte "
                        "(or of the connection); gRPC: the connection's HTTP/2 handshake",
    "body_timeout_s": "HTTP: a request body must arrive whole within this of its headers",
    "keepalive_timeout_s": "HTTP: an idle keep-alive connection is closed after this",
    "grpc_idle_timeout_s": "gRPC: a connection with no call for this long is closed",
    "max_concurrent_streams": "gRPC: calls at once on one connection (HTTP/2 setting)",
    "max_message_bytes": "one request's body or message (413 / RESOURCE_EXHAUSTED)",
    "max_concurrent_requests": "requests admitted at once, both transports",
    "max_inflight_bytes": "bytes of admitted requests, counted as they arrive (chunked too); "
                          "a body larger than this is refused with 413",
    "max_items_per_request": "items in one upsert or ids in one delete (413 beyond, before "
                             "the body is parsed)",
    "max_images_per_request": "images in one embed / classify / upsert",
    "max_texts_per_request": "texts in one embed / classify / upsert",
    "max_chars_per_text": "characters of one text (refused beyond, not cut)",
    "max_tokens_per_request": "tokens of one request's texts, each after truncation at its "
                              "encoder's limit",
    "max_streams": "open EmbedStream calls",
}


@dataclass(frozen=True)
class BatchingConfig:
    """The dynamic batcher's limits (``batcher.DynamicBatcher``): the ``[batching]`` table."""
    max_batch_size: int = 32
    max_queue_delay_ms: float = 5.0
    max_queue_size: int = 1024
    # a text batch also stops growing before its tokens pass this, as TEI's --max-batch-tokens
    # (its texts' own tokens when the encoder packs them; else padded to its longest text)
    max_batch_tokens: int = 16384

    def __post_init__(self) -> None:
        for name, low in (("max_batch_size", 1), ("max_queue_delay_ms", 0), ("max_queue_size", 1),
                          ("max_batch_tokens", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low \
                    or (name != "max_queue_delay_ms" and not isinstance(value, int)):
                kind = "a number" if name == "max_queue_delay_ms" else "an integer"
                raise InvalidInputError(f"batching.{name} must be {kind} >= {low}, got {value!r}")


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 50051  # 0: pick a free port (tests)
    data_dir: str = "embedsvc-data"  # heads/, indexes/ and backbones/ (fine-tuned runs) live here
    default_backbone: str = DEFAULT_BACKBONE
    default_text_encoder: str = DEFAULT_TEXT_ENCODER  # for texts when a request names no model
    device: str = "auto"
    max_loaded_backbones: int = 2  # LRU: others are loaded on demand and evicted
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    collections: CollectionSettings = field(default_factory=CollectionSettings)
    decode_workers: int = 8  # threads that decode images and wait on the model
    decode: str = DEFAULT_DECODE  # preprocess.DECODE_MODES
    runtime: str = DEFAULT_RUNTIME  # runtimes.RUNTIMES; per backbone in [runtimes]
    runtimes: dict = field(default_factory=dict)  # backbone name → runtime
    # projected stores (`embedsvc project`) whose projections answer `dimensions` in Embed and
    # /v1/embeddings: one per encoder and dimension count (service/projections.py)
    projections: list = field(default_factory=list)
    max_images_per_request: int = 64
    max_texts_per_request: int = 2048  # OpenAI's limit on inputs per embeddings request
    max_chars_per_text: int = 100_000
    max_tokens_per_request: int = 300_000  # OpenAI's limit on tokens per embeddings request
    max_bytes_per_image: int = 16 << 20
    max_pixels_per_image: int = SERVER_MAX_PIXELS
    max_pixels_per_request: int = 256_000_000  # decoded pixels, summed from the headers first
    max_message_bytes: int = 64 << 20
    # admission: beyond these, a request is refused at once (RESOURCE_EXHAUSTED) instead of queued
    max_concurrent_requests: int = 64  # Embed / Classify / Search / Upsert / Delete in progress
    max_inflight_bytes: int = 256 << 20  # request bytes held by admitted requests
    max_streams: int = 16  # open EmbedStream calls
    stream_idle_timeout_s: float = 30.0  # a stream that sends nothing for this long is ended
    request_timeout_s: float = 120.0  # the deadline of a request that brings none
    # connections (LIMITS below says what each does; http_connections.py and grpc_server.py)
    max_connections: int = 1000
    max_header_bytes: int = 64 << 10
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keepalive_timeout_s: float = 5.0
    grpc_idle_timeout_s: float = 300.0
    max_concurrent_streams: int = 100
    max_items_per_request: int = 10_000
    http2_bdp_probe: bool = False  # off: 64 KiB receive windows, unread bytes stay with clients
    auth_token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    metrics_port: int | None = None
    http_port: int | None = None  # the HTTP/JSON API and the web page (http_app.py)
    # longest side of the JPEG thumbnail kept per image upserted (the page's neighbours); 0: none
    thumbnail_size: int = 128
    # drift of live traffic per trained head (drift.py): the last N classified embeddings, tested
    # against the head's training sample every interval; 0 turns it off
    drift_window: int = 500
    drift_interval_s: float = 10.0
    role: str = "single"  # ROLES
    # writer: unpublished writes wait at most this long (a publication writes what changed)
    publish_interval_s: float = 0.5
    follow_interval_s: float = 0.25  # reader: how often it reads the manifests (small files)
    # reader: how long the writer keeps the snapshot a reader serves after the reader last
    # renewed its lease (a reader killed without notice pins it no longer than this)
    lease_s: float = 30.0

    def __post_init__(self) -> None:
        _check_types(self)
        for name in ("max_loaded_backbones", "decode_workers", "max_images_per_request",
                     "max_texts_per_request", "max_chars_per_text", "max_tokens_per_request",
                     "max_bytes_per_image", "max_pixels_per_image", "max_pixels_per_request",
                     "max_message_bytes", "max_concurrent_requests", "max_inflight_bytes",
                     "max_streams", "max_connections", "max_header_bytes",
                     "max_concurrent_streams", "max_items_per_request"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.thumbnail_size <= 1024:
            raise InvalidInputError(f"thumbnail_size must be in [0, 1024] (0: no thumbnails), "
                                    f"got {self.thumbnail_size}")
        if self.drift_window < 0:
            raise InvalidInputError(f"drift_window must be >= 0 (0: off), got {self.drift_window}")
        if self.role not in ROLES:
            raise InvalidInputError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")
        for name in ("stream_idle_timeout_s", "request_timeout_s", "drift_interval_s",
                     "publish_interval_s", "follow_interval_s", "lease_s", "header_timeout_s",
                     "body_timeout_s", "keepalive_timeout_s", "grpc_idle_timeout_s"):
            if not getattr(self, name) > 0:
                raise InvalidInputError(f"{name} must be > 0, got {getattr(self, name)}")
        check_port("port", self.port)
        entry = find_text(self.default_text_encoder)
        if entry is None or entry.family:
            raise InvalidInputError(
                f"default_text_encoder must name a text encoder ("
                f"{', '.join(e.name for e in list_text_encoders() if not e.family)}), got "
                f"{self.default_text_encoder!r}")
        check_decode(self.decode)
        check_runtime(self.runtime)
        if not all(isinstance(p, str) and p for p in self.projections):
            raise InvalidInputError(f"projections must be a list of store folders, got "
                                    f"{self.projections!r}")
        for name, runtime in self.runtimes.items():
            if not isinstance(runtime, str):
                raise InvalidInputError(f"runtimes.{name} must be a runtime name, got {runtime!r}")
            check_runtime(runtime, "text" if find_text(name) else "image")
        for name in ("metrics_port", "http_port"):
            if getattr(self, name) is not None:
                check_port(name, getattr(self, name))
        ports = [(n, getattr(self, n)) for n in ("port", "metrics_port", "http_port")
                 if getattr(self, n)]  # 0 and None: no fixed port
        for i, (name, value) in enumerate(ports):
            for other, same in ports[i + 1:]:
                if value == same:
                    raise InvalidInputError(f"{name} and {other} are both {value}; each "
                                            f"listener needs a port of its own")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidInputError("TLS needs both tls_cert and tls_key")

    def default_for(self, modality: str) -> str:
        """The model a request of ``modality`` gets when it names none."""
        return {"image": self.default_backbone, "text": self.default_text_encoder}[modality]

    def runtime_for(self, backbone: str, modality: str = "image") -> str:
        """The runtime ``backbone`` runs on: its own, else the server's where the modality has
        it (openvino-int8 has no text form: text encoders then run on torch)."""
        if backbone in self.runtimes:
            return self.runtimes[backbone]
        return self.runtime if modality == "image" or self.runtime in TEXT_RUNTIMES else "torch"

    @property
    def memory_bound(self) -> int:
        """Bytes of request data the server holds at most, beyond the loaded models.

        An admitted request's bytes live up to ``REQUEST_COPIES`` times while it is handled (the
        transport's buffer, the serialized message, the parsed message, the per-image bytes
        handed to decoding); the decode threads hold an image each (RGB plus a resize buffer,
        ~6 B/pixel). The load test in tests/test_server_hardening.py checks the bound."""
        return (REQUEST_COPIES * self.max_inflight_bytes
                + self.decode_workers * self.max_pixels_per_image * 6)

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> "ServeConfig":
        values: dict[str, Any] = {}
        if path:
            try:
                with open(path, "rb") as f:
                    values = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise InvalidInputError(f"{path} is not valid TOML: {exc}") from None
            except OSError as exc:
                raise InvalidInputError(f"cannot read config {path}: {exc.strerror or exc}") from None
        _check_keys(cls, values, str(path))
        for table, kind in (("batching", BatchingConfig), ("collections", CollectionSettings)):
            if table in values:
                if not isinstance(values[table], dict):
                    raise InvalidInputError(f"{path}: [{table}] must be a table")
                _check_keys(kind, values[table], f"{path} [{table}]")
                values[table] = kind(**values[table])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def check_port(name: str, port: Any) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidInputError(f"{name} must be a port number in 1..65535 (0: any free port), "
                                f"got {port!r}")
    return port


def _check_keys(cls, values: dict[str, Any], where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise InvalidInputError(f"unknown settings in {where}: {', '.join(sorted(unknown))}; "
                                f"known: {', '.join(sorted(known))}")


def _check_types(obj) -> None:
    """Each field's value against its annotation (int, float, str, bool, optional)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _UnionType) else (hint,)
        if value is None and type(None) in allowed:
            continue
        ok = False
        for t in allowed:
            if t is float:
                ok |= isinstance(value, (int, float)) and not isinstance(value, bool)
            elif t is int:
                ok |= isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(t, type) and t is not type(None):
                ok |= isinstance(value, t)
        if not ok:
            names = " or ".join("none" if t is type(None) else getattr(t, "__name__", str(t))
                                for t in allowed)
            raise InvalidInputError(f"setting {f.name} must be {names}, got {value!r}")


_UnionType = type(int | None)
