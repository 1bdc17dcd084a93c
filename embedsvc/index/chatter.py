"""FAISS's unconditional printf()s, kept off stdout."""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys


@contextlib.contextmanager
def faiss_chatter_silenced():
    """OnDiskInvertedLists printf()s a line when it grows its file and when it is read with
    IO_FLAG_ONDISK_SAME_DIR; on stdout that would break ``--json`` output. File descriptor 1
    goes to /dev/null meanwhile (process-wide: nothing else here writes to stdout then)."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        libc.fflush(None)  # C's buffered stdout, before fd 1 is itself again
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
