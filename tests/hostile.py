"""Inputs an outside prober sends, built by hand (stdlib only, so bench/ can use them too)."""
from __future__ import annotations

import struct
import zlib


def strip_png(width: int, height: int) -> bytes:
    """A valid grayscale PNG of width x height, built a block of rows at a time: a 10000x1
    strip is ~100 bytes, 1 x 40,000,000 is 78 KB."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z, parts, row = zlib.compressobj(9), [], b"\0" + b"\x80" * width
    block = max(1, (1 << 20) // len(row))
    for start in range(0, height, block):
        parts.append(z.compress(row * min(block, height - start)))
    parts.append(z.flush())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
