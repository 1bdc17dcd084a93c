"""Inputs inside container files: webdataset tar shards, parquet files and the Arrow files of a
Hugging Face ``datasets`` folder. A record from one is named ``CONTAINER#MEMBER``:

- ``/data/00003.tar#cat/0042.jpg``        a tar member (a sample's image, or its ``.txt``)
- ``/data/part-0.parquet#jpg/17``         a parquet cell: column, then row in the file
- ``/ds/train/data-00000-of-00002.arrow#image/5``   an Arrow cell, the same way

The name is the record's identity (what a resumed run skips) and all that is needed to read it
again, by random access: ``read_input_bytes`` serves every reader of records (embedding, fine-
tuning, calibration), so a store made from shards can be fine-tuned on without unpacking them.
Tar members are found through an index of their offsets (headers only, read once per shard);
parquet is read a row group at a time and Arrow files are memory-mapped, both kept for the next
record, which in a run is almost always in the same place.
"""
from __future__ import annotations

import functools
import os
import tarfile
import threading
from pathlib import Path

from ..errors import InvalidInputError

SEP = "#"
TAR_SUFFIXES = (".tar",)
PARQUET_SUFFIXES = (".parquet",)
ARROW_SUFFIXES = (".arrow",)


def split_name(name: str) -> tuple[str, str] | None:
    """(container, member) when ``name`` names a member of a container file, else None. A file
    whose own name holds ``#`` is a file: the container must exist and carry its suffix."""
    container, sep, member = name.rpartition(SEP)
    if not sep or not container.lower().endswith(TAR_SUFFIXES + PARQUET_SUFFIXES + ARROW_SUFFIXES):
        return None
    if os.path.isfile(name) or not os.path.isfile(container):
        return None
    return container, member


def read_input_bytes(name: str) -> bytes:
    """The bytes of a record's input: a file, or a member of a container. Raises OSError (with
    ``strerror`` saying why) when it cannot be read, as reading a missing file does."""
    parts = split_name(name)
    if parts is None:
        return Path(name).read_bytes()
    container, member = parts
    try:
        if container.lower().endswith(TAR_SUFFIXES):
            return _tar_member(container, member)
        column, _, row = member.rpartition("/")
        if not row.isdigit() or not column:
            raise _missing(name, "names no column/row")
        if container.lower().endswith(PARQUET_SUFFIXES):
            return _cell_bytes(_parquet_cell(container, column, int(row)), name)
        return _cell_bytes(_arrow_cell(container, column, int(row)), name)
    except (tarfile.TarError, KeyError, IndexError, ValueError) as exc:
        raise _missing(name, f"unreadable ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors (ArrowInvalid, ...) mean the same
        if type(exc).__module__.startswith("pyarrow"):
            raise _missing(name, f"unreadable ({type(exc).__name__}: {exc})") from None
        raise


def _missing(name: str, why: str) -> OSError:
    err = OSError(why)
    err.strerror, err.filename = why, name
    return err


def _stamp(path: str) -> tuple[str, int, int]:
    """What the caches key on: a file rewritten in place is read again."""
    st = os.stat(path)
    return path, st.st_mtime_ns, st.st_size


# --- webdataset tar shards -------------------------------------------------------------------

def tar_members(path: str) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of every regular member, in the shard's order."""
    return list(_tar_index(_stamp(path)).items_in_order)


class _TarIndex:
    def __init__(self, members: list[tuple[str, int, int]]):
        self.items_in_order = members
        self.where = {name: (offset, size) for name, offset, size in members}


@functools.lru_cache(maxsize=64)
def _tar_index(stamp: tuple[str, int, int]) -> _TarIndex:
    with tarfile.open(stamp[0], "r:") as tar:  # uncompressed only: members must be seekable
        return _TarIndex([(m.name, m.offset_data, m.size) for m in tar if m.isfile()])


def _tar_member(path: str, member: str) -> bytes:
    offset, size = _tar_index(_stamp(path)).where[member]
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise ValueError(f"the shard ends inside {member}")
    return data


# --- parquet and Arrow -----------------------------------------------------------------------

_local = threading.local()  # the row group each thread read last: a run reads them in order


def _parquet_cell(path: str, column: str, row: int):
    import pyarrow.parquet as pq

    meta = _parquet_groups(_stamp(path))
    group = next((g for g, (start, n) in enumerate(meta) if start <= row < start + n), None)
    if group is None:
        raise IndexError(f"row {row} of {sum(n for _, n in meta)}")
    key = (_stamp(path), column, group)
    if getattr(_local, "key", None) != key:
        _local.values = pq.ParquetFile(path).read_row_group(group, columns=[column]).column(0)
        _local.key = key
    return _local.values[row - meta[group][0]].as_py()


@functools.lru_cache(maxsize=64)
def _parquet_groups(stamp: tuple[str, int, int]) -> list[tuple[int, int]]:
    """(first row, rows) of each row group."""
    import pyarrow.parquet as pq

    md = pq.ParquetFile(stamp[0]).metadata
    out, start = [], 0
    for g in range(md.num_row_groups):
        n = md.row_group(g).num_rows
        out.append((start, n))
        start += n
    return out


def arrow_table(path: str):
    """An Arrow file of ``datasets`` (the IPC stream format), memory-mapped."""
    return _arrow_table(_stamp(path))


@functools.lru_cache(maxsize=16)
def _arrow_table(stamp: tuple[str, int, int]):
    import pyarrow as pa

    source = pa.memory_map(stamp[0])
    try:
        return pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:  # the random-access file format, which other writers use
        return pa.ipc.open_file(source).read_all()


def _arrow_cell(path: str, column: str, row: int):
    return arrow_table(path).column(column)[row].as_py()


def _cell_bytes(value, name: str) -> bytes:
    """An image cell as bytes: binary, or a ``{"bytes", "path"}`` struct (``datasets``' Image
    feature, also in the parquet files it writes), whose path is read when bytes are absent."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            value = value["bytes"]
        elif value.get("path"):
            return Path(value["path"]).read_bytes()
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray)):
        raise _missing(name, f"holds {type(value).__name__}, not bytes")
    return bytes(value)


def check_uncompressed_tar(path: str) -> None:
    """Shards must be plain tar: a compressed one cannot be read from an offset."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head == b"\xfd7zX" or head == b"\x28\xb5\x2f\xfd":
        raise InvalidInputError(f"{path} is a compressed tar; embedsvc reads members by offset, "
                                f"so shards must be plain .tar (decompress it first)")
