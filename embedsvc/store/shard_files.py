"""The files of one store shard, grown in place.

A shard is committed many times while it fills (every few seconds of embedding), so that an
interrupted run keeps what it embedded; rewriting a 20 MB shard file for each commit would write
it dozens of times over. Instead a commit appends: the new vectors go after the old ones in the
``.npy`` (whose header is then rewritten with the new shape: same length, so nothing moves), the
new rows after the old lines of the ``.jsonl`` files, all flushed to disk. The manifest, rewritten
atomically afterwards, holds each shard's committed row count and is the commit point: readers
take only that many rows and lines, and a writer that opens the store cuts a killed run's tails
(``truncate``) before it appends.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

HEADER_BYTES = 128  # what np.save writes for any 2-d shape below 10**40 rows


def _header(shape: tuple[int, int], dtype: np.dtype) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dtype),
                                              "fortran_order": False, "shape": shape})
    header = buf.getvalue()
    assert len(header) == HEADER_BYTES, len(header)
    return header


def _data_offset(f) -> tuple[int, tuple[int, ...], np.dtype]:
    f.seek(0)
    if np.lib.format.read_magic(f) != (1, 0):
        raise ValueError(f"{f.name}: not a version 1.0 .npy file")
    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    return f.tell(), shape, dtype


def read_vectors(path: Path, rows: int) -> np.ndarray:
    """The first ``rows`` (committed) vectors, memory-mapped."""
    return np.load(path, mmap_mode="r", allow_pickle=False)[:rows]


def append_vectors(path: Path, committed: int, vectors: np.ndarray, dtype: str) -> None:
    """Put ``vectors`` after the first ``committed`` rows of the shard at ``path`` (created when
    ``committed`` is 0), flushed to disk."""
    vectors = np.ascontiguousarray(vectors, dtype=dtype)
    if committed == 0:
        with open(path, "wb") as f:
            f.write(_header((len(vectors), vectors.shape[1]), vectors.dtype))
            f.write(vectors.tobytes())
            f.flush()
            os.fsync(f.fileno())
        return
    with open(path, "r+b") as f:
        offset, shape, stored = _data_offset(f)
        if offset != HEADER_BYTES or stored != vectors.dtype or shape[1:] != vectors.shape[1:]:
            raise ValueError(f"shard {path} cannot be extended: {shape} {stored} at {offset}")
        f.seek(offset + committed * vectors.shape[1] * vectors.itemsize)
        f.write(vectors.tobytes())
        f.truncate()
        f.flush()
        os.fsync(f.fileno())  # the rows are on disk before the header says they exist
        f.seek(0)
        f.write(_header((committed + len(vectors), vectors.shape[1]), vectors.dtype))
        f.flush()
        os.fsync(f.fileno())


def truncate_vectors(path: Path, rows: int) -> None:
    """Cut an uncommitted tail (a writer killed between appending and committing)."""
    if not path.is_file():
        return
    with open(path, "r+b") as f:
        offset, shape, dtype = _data_offset(f)
        if shape[0] == rows:
            return
        f.truncate(offset + rows * shape[1] * dtype.itemsize)
        f.seek(0)
        f.write(_header((rows, shape[1]), dtype))
        f.flush()
        os.fsync(f.fileno())


def read_lines(path: Path, count: int) -> list[str]:
    """The first ``count`` (committed) lines of a shard's .jsonl file."""
    if count == 0 or not path.is_file():
        return []
    out: list[str] = []
    with open(path) as f:
        for line in f:
            if len(out) == count:
                break
            out.append(line)
    return out


def append_lines(path: Path, committed: int, data: bytes) -> None:
    """Put ``data`` (whole lines) after the first ``committed`` lines, flushed to disk."""
    with open(path, "ab+") as f:
        f.seek(0)
        keep = 0
        for _ in range(committed):
            line = f.readline()
            if not line.endswith(b"\n"):
                raise ValueError(f"{path} has fewer than {committed} committed lines")
            keep += len(line)
        f.truncate(keep)
        f.write(data)  # "a" mode: at the (new) end
        f.flush()
        os.fsync(f.fileno())


def truncate_lines(path: Path, count: int) -> None:
    if path.is_file():
        append_lines(path, count, b"")
