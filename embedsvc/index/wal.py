"""A write-ahead log: the durable record of writes between two snapshots of a collection.

A write is appended and fsynced before it is acknowledged and before it touches memory, so its
cost is the size of the write, not of the collection, and a crash loses nothing acknowledged.
The log knows nothing of what it stores: records are opaque payloads, numbered from the log's
first sequence number (a snapshot names the last sequence number it contains, so recovery
replays only what came after).

    file    MAGIC (8 bytes), first sequence number (uint64)
    record  payload length (uint32), CRC-32 of the payload (uint32), payload

Opening a log keeps the valid prefix and cuts a torn or corrupt tail (a record cut short by a
crash, or one whose checksum does not match): what follows an invalid record was never
acknowledged, because appends are sequential and each one is fsynced before the next.
"""
from __future__ import annotations

import errno
import os
import struct
import zlib
from pathlib import Path

from ..atomic import fsync_dir
from ..errors import IncompatibleError, ResourceExhaustedError

MAGIC = b"ESVWAL1\n"
HEADER = struct.Struct("<8sQ")
RECORD = struct.Struct("<II")
MAX_RECORD_BYTES = 1 << 30  # a length beyond this is corruption, not a write
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class WriteAheadLog:
    """``log, records = WriteAheadLog.open(path)``; ``seq = log.append(payload)``."""

    def __init__(self, path: Path, fd: int, first_seq: int, next_seq: int, size: int):
        self.path, self._fd = path, fd
        self.first_seq, self.next_seq, self.size = first_seq, next_seq, size

    @classmethod
    def open(cls, path: str | os.PathLike, first_seq: int = 1) -> tuple["WriteAheadLog", list[tuple[int, bytes]]]:
        """Open (or create, numbering from ``first_seq``) and recover: returns the log, ready to
        append after its last valid record, and the (sequence number, payload) of each record."""
        path = Path(path)
        if not path.exists():
            _create(path, first_seq)
        fd = os.open(path, os.O_RDWR)
        try:
            data = _read_all(fd)
            if len(data) < HEADER.size or data[:len(MAGIC)] != MAGIC:
                raise IncompatibleError(f"{path.name} is not an embedsvc write-ahead log")
            first = HEADER.unpack_from(data)[1]
            records, valid = parse_records(data, HEADER.size, first)
            if valid < len(data):  # a torn tail: never acknowledged, so cut it
                os.ftruncate(fd, valid)
                os.fsync(fd)
            return cls(path, fd, first, first + len(records), valid), records
        except BaseException:
            os.close(fd)
            raise

    def append(self, payload: bytes) -> int:
        """Write and fsync one record; returns its sequence number. On failure the file is cut
        back to its previous length, so a refused write leaves no trace."""
        if len(payload) > MAX_RECORD_BYTES:
            raise ResourceExhaustedError(f"a write of {len(payload)} bytes is over the log's "
                                         f"{MAX_RECORD_BYTES}-byte record limit")
        record = RECORD.pack(len(payload), zlib.crc32(payload)) + payload
        try:
            written = 0
            while written < len(record):
                written += os.pwrite(self._fd, record[written:], self.size + written)
            os.fsync(self._fd)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self.size)
            except OSError:
                pass  # reopening cuts the torn record anyway
            if exc.errno in DISK_FULL:
                raise ResourceExhaustedError(f"the disk holding the data dir is full (or over "
                                             f"its size limit): {exc.strerror}") from None
            raise
        self.size += len(record)
        self.next_seq += 1
        return self.next_seq - 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "WriteAheadLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parse_records(data: bytes, offset: int, first_seq: int) -> tuple[list[tuple[int, bytes]], int]:
    """The valid records from ``offset`` on, and where the valid prefix ends."""
    records = []
    while offset + RECORD.size <= len(data):
        length, crc = RECORD.unpack_from(data, offset)
        end = offset + RECORD.size + length
        if length > MAX_RECORD_BYTES or end > len(data):
            break
        payload = data[offset + RECORD.size:end]
        if zlib.crc32(payload) != crc:
            break
        records.append((first_seq + len(records), payload))
        offset = end
    return records, offset


def _create(path: Path, first_seq: int) -> None:
    """A new empty log appears whole or not at all (written aside, then renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(HEADER.pack(MAGIC, first_seq))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _read_all(fd: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
