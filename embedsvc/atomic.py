"""Atomic file writes: a reader sees the old file or the new one, never half of either."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def fsync_file(path: Path) -> None:
    """Flush a file written in place (through a memory map, say) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    # the rename itself is durable only once the directory entry is flushed
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)



def remove_path(path: Path) -> None:
    """A file or a folder, gone (nothing when absent)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def written_beside(out: Path, overwrite: bool = False):
    """A path beside ``out`` to write a file or folder at; when the block ends without an error
    it takes ``out``'s place (an existing ``out`` only with ``overwrite``, and only then).
    Whatever happens, nothing of a failed write is left."""
    from .errors import InvalidInputError

    out = Path(out)
    if out.exists() and not overwrite:
        raise InvalidInputError(f"{str(out)!r} exists; pass --overwrite to replace it")
    tmp, old = out.with_name(f".{out.name}.partial"), out.with_name(f".{out.name}.replaced")
    for leftover in (tmp, old):
        remove_path(leftover)
    try:
        yield tmp
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        remove_path(tmp)
        remove_path(old)
