"""The writes a collection's log holds, as bytes: an upsert (ids, vectors, metadata) or a
delete (ids). Ids are resolved before a write is logged (the server's choices included), so
replaying the log repeats exactly what was acknowledged."""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import IncompatibleError

_UPSERT, _DELETE = b"U", b"D"
_COUNTS = struct.Struct("<QI")  # rows, dim


@dataclass(frozen=True)
class Upsert:
    ids: np.ndarray  # (n,) int64
    vectors: np.ndarray  # (n, dim) float32, unit length
    metadata: list[dict[str, str]]


@dataclass(frozen=True)
class Delete:
    ids: np.ndarray  # (n,) int64


def encode(write: Upsert | Delete) -> bytes:
    ids = np.ascontiguousarray(write.ids, dtype="<i8")
    if isinstance(write, Delete):
        return _DELETE + _COUNTS.pack(len(ids), 0) + ids.tobytes()
    vectors = np.ascontiguousarray(write.vectors, dtype="<f4")
    return (_UPSERT + _COUNTS.pack(len(ids), vectors.shape[1]) + ids.tobytes() + vectors.tobytes()
            + json.dumps(write.metadata, separators=(",", ":")).encode())


def decode(payload: bytes) -> Upsert | Delete:
    kind, (n, dim) = payload[:1], _COUNTS.unpack_from(payload, 1)
    at = 1 + _COUNTS.size
    ids = np.frombuffer(payload, "<i8", n, at).astype(np.int64)
    at += 8 * n
    if kind == _DELETE:
        return Delete(ids)
    if kind != _UPSERT:
        raise IncompatibleError(f"unknown record kind {kind!r} in a collection's log")
    vectors = np.frombuffer(payload, "<f4", n * dim, at).astype(np.float32).reshape(n, dim)
    metadata = json.loads(payload[at + 4 * n * dim:])
    return Upsert(ids, vectors, metadata)
